"""Predicted attribute values stored as item metadata, so that filters can use them.

An item's metadata gets, for every attribute, `"predicted.<attribute>": <value>` and
`"predicted.<attribute>.confidence": <calibrated probability>` (model/prototypes.py), written by
`asen index build` and `POST /items` when the checkpoint has value prototypes. Filters use them like
any field: `filters={"predicted.neckline": "v_neck"}`. Keys starting with `predicted.` are reserved:
metadata a user sends with such a key is refused, so predictions never overwrite user metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from asen_search.model.prototypes import Prototypes

PREDICTED = "predicted."
DECIMALS = 4


def reserved_keys(metadata: Mapping[str, Any]) -> list[str]:
    """The keys of `metadata` that only predictions may set."""
    return sorted(k for k in metadata if k.startswith(PREDICTED))


def tag_fields(prototypes: Prototypes, vectors: np.ndarray) -> dict[str, Any]:
    """The predicted value and confidence of every attribute for one item's vectors `[n_attributes, dim]`."""
    fields: dict[str, Any] = {}
    for attribute, (value, confidence) in prototypes.tag(vectors).items():
        fields[PREDICTED + attribute] = value
        fields[f"{PREDICTED}{attribute}.confidence"] = round(confidence, DECIMALS)
    return fields


def with_tags(
    metadata: Mapping[str, Any], prototypes: Prototypes | None, vectors: np.ndarray
) -> dict[str, Any]:
    """`metadata` plus the predicted tags (unchanged without prototypes); the user's keys stay."""
    if prototypes is None:
        return dict(metadata)
    return {**tag_fields(prototypes, vectors), **metadata}

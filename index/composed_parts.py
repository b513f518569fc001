"""The parts of a composed query (index/composed.py) and their checks, which the front
(`Catalogue.search_composed`, index/interface.py) makes before an engine answers. Apart from
index/composed.py so that the front and the ways to answer (which take a `Catalogue`) do not import
each other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInput

MAX_PARTS = 64


@dataclass(frozen=True)
class Part:
    """One part of a composed query: a unit query vector `[dim]` under `attribute`, and its weight
    in [-1, 1]."""

    attribute: str
    vector: np.ndarray
    weight: float


def check_parts(parts: Sequence[Part], attributes: Sequence[str], dim: int) -> list[Part]:
    """The parts with float32 vectors; ValueError naming the problem: none, too many, an unknown
    attribute, an attribute twice, a weight outside [-1, 1], all weights zero, a bad vector."""
    parts = list(parts)
    if not parts:
        raise InvalidInput("a composed query needs at least one part")
    if len(parts) > MAX_PARTS:
        raise InvalidInput(f"a composed query has at most {MAX_PARTS} parts, got {len(parts)}")
    seen: set[str] = set()
    checked = []
    for n, part in enumerate(parts):
        if part.attribute not in attributes:
            raise InvalidInput(
                f"part {n}: unknown attribute {part.attribute!r}; known attributes: {list(attributes)}"
            )
        if part.attribute in seen:
            raise InvalidInput(
                f"part {n}: attribute {part.attribute!r} appears in two parts; give each attribute one part"
            )
        seen.add(part.attribute)
        weight = part.weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not -1.0 <= float(weight) <= 1.0
        ):
            raise InvalidInput(f"part {n}: weight must be a number in [-1, 1], got {weight!r}")
        vector = np.asarray(part.vector, dtype=np.float32)
        if vector.shape != (dim,) or not np.isfinite(vector).all():
            raise InvalidInput(
                f"part {n}: the query vector must be {dim} finite numbers, got shape {vector.shape}"
            )
        checked.append(Part(part.attribute, vector, float(weight)))
    if all(p.weight == 0.0 for p in checked):
        raise InvalidInput("every part has weight 0: give at least one part a non-zero weight")
    return checked


def check_per_part(per_part: int | None) -> int | None:
    if per_part is not None and (isinstance(per_part, bool) or not isinstance(per_part, int) or per_part < 1):
        raise InvalidInput(f"per_part must be a positive integer, got {per_part!r}")
    return per_part

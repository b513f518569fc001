"""Composed queries on `POST /search` and `POST /rerank`: the `query` form field, a JSON list of parts,
each an attribute, one source and a weight:

    [{"attribute": "neckline", "image": "front"},                 # an uploaded file field's name
     {"attribute": "colour", "item_id": "sku-7", "weight": 0.5},  # a catalogue item's vector
     {"attribute": "pattern", "value": "striped", "weight": -1}]  # the value's prototype

The score of an item is the weighted sum of its per-attribute cosine similarities (index/composed.py).
Every problem is a 422 with its own code, checked before any image is encoded.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from starlette.datastructures import UploadFile

from asen_search.index import Part
from asen_search.model.prototypes import NoPrototype
from asen_search.model.thresholds import NoThreshold
from asen_search.service.api.errors import ApiError
from asen_search.service.api.params import check_item_id
from asen_search.service.api.prometheus import StageTimer
from asen_search.service.api.state import Runtime

MAX_QUERY_PARTS = 16
SOURCES = ("image", "item_id", "value")


@dataclass(frozen=True)
class PartSpec:
    """One parsed part: its attribute, which source (`image`, `item_id` or `value`) with what, and
    its weight."""

    attribute: str
    source: str
    ref: str
    weight: float

    def describe(self) -> dict[str, Any]:
        return {"attribute": self.attribute, self.source: self.ref, "weight": self.weight}


def _invalid(detail: str, code: str = "invalid_query") -> ApiError:
    return ApiError(422, code, detail)


def parse_query(text: str, attributes: list[str]) -> list[PartSpec]:
    """The parts of a `query` field; a 422 naming the part and the problem."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid(f"query must be a JSON list of parts: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise _invalid('query must be a non-empty JSON list of parts, e.g. [{"attribute": "neckline", '
                       '"image": "image"}, {"attribute": "colour", "item_id": "sku-7", "weight": 0.5}]')
    if len(raw) > MAX_QUERY_PARTS:
        raise _invalid(f"query has {len(raw)} parts; at most {MAX_QUERY_PARTS}")
    parts: list[PartSpec] = []
    for n, part in enumerate(raw):
        parts.append(_parse_part(n, part, attributes))
    seen: dict[str, int] = {}
    for n, part in enumerate(parts):
        if part.attribute in seen:
            raise _invalid(f"parts {seen[part.attribute]} and {n} are both about {part.attribute!r}: give each "
                           "attribute one part", "duplicate_attribute")
        seen[part.attribute] = n
    if all(p.weight == 0 for p in parts):
        raise _invalid("every part has weight 0: give at least one part a non-zero weight", "zero_weights")
    return parts


def _parse_part(n: int, part: object, attributes: list[str]) -> PartSpec:
    if not isinstance(part, dict):
        raise _invalid(f"part {n} must be a JSON object, got {json.dumps(part)[:80]}")
    unknown = sorted(set(part) - {"attribute", "weight", *SOURCES})
    if unknown:
        raise _invalid(f"part {n} has unknown keys {unknown}; a part has 'attribute', one of 'image', "
                       "'item_id' or 'value', and optionally 'weight'")
    attribute = part.get("attribute")
    if not isinstance(attribute, str):
        raise _invalid(f"part {n} needs 'attribute', an attribute name (see GET /attributes)")
    if attribute not in attributes:
        raise _invalid(f"part {n}: unknown attribute {attribute!r}; known attributes: {', '.join(attributes)}",
                       "unknown_attribute")
    sources = [s for s in SOURCES if s in part]
    if len(sources) != 1:
        raise _invalid(f"part {n} ({attribute}) needs exactly one of 'image' (an uploaded file field's name), "
                       f"'item_id' or 'value', got {sources or 'none'}")
    ref = part[sources[0]]
    if not isinstance(ref, str) or not ref:
        raise _invalid(f"part {n} ({attribute}): {sources[0]!r} must be a non-empty string")
    if sources[0] == "item_id":
        ref = check_item_id(ref)
    weight = part.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not -1.0 <= weight <= 1.0:
        raise _invalid(f"part {n} ({attribute}): weight must be a number in [-1, 1], got {json.dumps(weight)}",
                       "weight_out_of_range")
    return PartSpec(attribute, sources[0], ref, float(weight))


def check_uploads(parts: list[PartSpec], form: Mapping[str, Any]) -> None:
    """A 422 for a part naming a file field that was not uploaded (before anything is encoded)."""
    for n, part in enumerate(parts):
        if part.source == "image" and not isinstance(form.get(part.ref), UploadFile):
            files = sorted(k for k, v in form.items() if isinstance(v, UploadFile))
            raise _invalid(f"part {n} ({part.attribute}) names the image field {part.ref!r}, but no file was "
                           f"uploaded under that name (uploaded: {files or 'none'})", "image_not_uploaded")


async def resolve_parts(runtime: Runtime, parts: list[PartSpec], form: Mapping[str, Any],
                        timer: StageTimer) -> list[Part]:
    """The query vector of every part: value prototypes, catalogue items' vectors, and uploaded
    images (each image decoded once and encoded once for all the attributes that use it)."""
    check_uploads(parts, form)
    vectors: dict[int, np.ndarray] = {}
    for n, part in enumerate(parts):
        if part.source == "value":
            vectors[n] = _prototype(runtime, n, part)
    for n, part in enumerate(parts):
        if part.source == "item_id":   # UnknownItem: 404 `unknown_item`
            vectors[n] = await anyio.to_thread.run_sync(runtime.catalogue.vector, part.ref, part.attribute)
    fields = list(dict.fromkeys(p.ref for p in parts if p.source == "image"))
    for name in fields:
        users = [n for n, p in enumerate(parts) if p.source == "image" and p.ref == name]
        image = await runtime.decode(form[name], timer)
        encoded = await runtime.encode_attributes(image, [runtime.attribute_id(parts[n].attribute) for n in users],
                                                  timer)
        for row, n in enumerate(users):
            vectors[n] = encoded[row]
    return [Part(p.attribute, vectors[n], p.weight) for n, p in enumerate(parts)]


def _prototype(runtime: Runtime, n: int, part: PartSpec) -> np.ndarray:
    prototypes = runtime.encoder.prototypes
    if prototypes is None:
        raise _invalid(f"part {n} ({part.attribute}) asks for the value {part.ref!r}, but this model's checkpoint "
                       "has no value prototypes (trained before they existed, or imported): add them with "
                       "`asen prototypes --checkpoint CKPT --data DATASET`", "no_prototypes")
    try:
        return prototypes.vector(part.attribute, part.ref)
    except NoPrototype as exc:
        raise _invalid(f"part {n}: {exc}", "unknown_value") from None


def query_item_ids(parts: list[PartSpec]) -> list[str]:
    """Catalogue items the query is made of: never returned as results."""
    return list(dict.fromkeys(p.ref for p in parts if p.source == "item_id"))


@dataclass(frozen=True)
class Threshold:
    """A threshold search: every item scoring at least `min_score` (given, or translated from
    `min_precision` through the attribute's precision curve), at most `max_results`."""

    min_score: float
    min_precision: float | None
    max_results: int

    def describe(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "min_precision": self.min_precision, "max_results": self.max_results}


def read_threshold(runtime: Runtime, parts: list[Part], composed: bool, min_score: float | None,
                   min_precision: float | None, max_results: int | None, top_k: int | None,
                   group_by: str | None) -> Threshold | None:
    """The threshold of a request (None for a top-k one); a 422 naming the conflict or the range."""
    if min_score is None and min_precision is None:
        if max_results is not None:
            raise ApiError(422, "max_results_without_threshold", "max_results caps a threshold search: send "
                           "min_score or min_precision with it (top_k sizes a top-k search)")
        return None
    if min_score is not None and min_precision is not None:
        raise ApiError(422, "conflicting_threshold", "send min_score or min_precision, not both")
    if top_k is not None:
        raise ApiError(422, "threshold_with_top_k", "a threshold search returns every item above the threshold "
                       "(up to max_results): send top_k or min_score/min_precision, not both")
    if group_by is not None:
        raise ApiError(422, "threshold_with_group_by", "group_by works with top_k searches only")
    cap = runtime.settings.default_max_results if max_results is None else max_results
    if not 1 <= cap <= runtime.settings.max_results:
        raise ApiError(422, "max_results_out_of_range", f"max_results must be between 1 and "
                       f"{runtime.settings.max_results}, got {cap}")
    if min_precision is not None:
        return Threshold(_score_for(runtime, parts, composed, min_precision), min_precision, cap)
    assert min_score is not None
    bound = sum(abs(p.weight) for p in parts)   # 1 for a single attribute; a composed score lies in +-sum |w|
    if not -bound <= min_score <= bound:
        raise ApiError(422, "min_score_out_of_range", f"min_score must be in [{-bound:g}, {bound:g}] (scores are "
                       + ("cosine similarities" if not composed else "weighted sums of cosines, at most the sum of "
                          "|weight|") + f"), got {min_score:g}")
    return Threshold(float(min_score), None, cap)


def _score_for(runtime: Runtime, parts: list[Part], composed: bool, precision: float) -> float:
    if composed:
        raise ApiError(422, "precision_needs_one_attribute", "min_precision is calibrated per attribute: use it "
                       "with a single-attribute query, or send min_score with a composed one")
    if not 0.0 < precision <= 1.0:
        raise ApiError(422, "min_precision_out_of_range", f"min_precision must be in (0, 1], got {precision:g}")
    thresholds = runtime.encoder.thresholds
    if thresholds is None:
        raise ApiError(422, "no_thresholds", "this model has no precision curves, so min_precision cannot be "
                       "translated: run `asen eval --checkpoint CKPT --data DATASET` (writes them beside the "
                       "checkpoint) or send min_score")
    try:
        return thresholds.curve(parts[0].attribute).score_for(precision)
    except NoThreshold as exc:
        raise ApiError(422, "precision_unreachable", f"{parts[0].attribute}: {exc}") from None

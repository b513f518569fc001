"""Request parsing helpers and the JSON shapes the service answers with."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from asen_search.service.api.errors import ApiError
from asen_search.service.catalogue.item_images import IMAGE_KEY
from asen_search.service.catalogue.tags import PREDICTED, reserved_keys

Scalar = str | int | float | bool | None


class ErrorResponse(BaseModel):
    error: str = Field(description="stable machine-readable code, e.g. `unknown_attribute`")
    detail: str = Field(description="what was wrong, for a person")


class Hit(BaseModel):
    id: str
    score: float = Field(description="cosine similarity of the query and the item under the attribute (a composed "
                         "query: the weighted sum of its parts' similarities)")
    metadata: dict[str, Any]
    precision: float | None = Field(None, description="threshold searches under one attribute with precision "
                                    "curves: the estimated precision of everything scoring at least this")


class SearchResponse(BaseModel):
    attribute: str | None = Field(description="the query's attribute (null for a composed query)")
    query: list[dict[str, Any]] | None = Field(None, description="a composed query's parts as understood: attribute, "
                                               "source and weight (null for a single-attribute query)")
    results: list[Hit] = Field(description="best first")
    threshold: dict[str, Any] | None = Field(None, description="a threshold search's min_score (the one used, also "
                                             "when translated from min_precision), min_precision and max_results")
    truncated: bool | None = Field(None, description="threshold searches: true when max_results cut the list")


class RerankHit(Hit):
    score: float = Field(description="weight * similarity + (1 - weight) * prior; the sort key")
    similarity: float = Field(description="cosine similarity under the attribute")
    position: int = Field(description="0-based position of the id in the submitted candidates")


class RerankResponse(BaseModel):
    attribute: str | None = Field(description="the query's attribute (null for a composed query)")
    query: list[dict[str, Any]] | None = Field(None, description="a composed query's parts (null for a "
                                               "single-attribute query)")
    weight: float
    results: list[RerankHit] = Field(description="the known candidates, best first")
    unknown: list[str] = Field(description="candidate ids that are not in the catalogue (not ranked)")
    duplicates: list[str] = Field(description="ids sent more than once (ranked once, at their first position)")


class ExplainResponse(BaseModel):
    attribute: str
    attention: list[list[float]] = Field(description="the attribute's attention map, rows of the grid, each "
                                         "value in [0, 1] (min-max scaled)")
    grid: tuple[int, int] = Field(description="[h, w] of the attention map")
    image_box: tuple[float, float, float, float] = Field(
        description="[x0, y0, x1, y1] in image pixels: the square of the image the attention map covers "
                    "(the model's centre crop; it may overhang the image when the model letterboxes)")
    roi_box: tuple[float, float, float, float] | None = Field(
        description="[x0, y0, x1, y1] in image pixels: the region the local branch zooms into (null for a "
                    "model without a local branch)")
    width: int = Field(description="image width in pixels (after EXIF orientation)")
    height: int = Field(description="image height in pixels")


class AttributeInfo(BaseModel):
    name: str
    values: list[str]
    value_search: list[str] = Field(default_factory=list, description="values a query part can name (`\"value\"`): "
                                    "those with a prototype in the checkpoint (empty without prototypes)")
    precision_scores: dict[str, float | None] | None = Field(
        None, description="the min_score giving precision 0.9 / 0.95 / 0.99 on the validation split (null where never "
        "reached; the whole field null without precision curves)")


class Tag(BaseModel):
    attribute: str
    value: str = Field(description="the most likely value")
    confidence: float = Field(description="its calibrated probability")
    probabilities: dict[str, float] = Field(description="every value's calibrated probability")


class TagResponse(BaseModel):
    id: str | None = Field(description="the catalogue item tagged (null for an uploaded image)")
    tags: list[Tag]


class AttributesResponse(BaseModel):
    attributes: list[AttributeInfo]


class ItemResponse(BaseModel):
    id: str
    metadata: dict[str, Any]


class DeleteResponse(BaseModel):
    id: str
    deleted: bool


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    items: int
    attributes: list[str]
    dim: int
    fingerprint: str
    read_only: bool
    writes_refused: str | None = Field(None, description="why writes are refused (storage), else null")
    log_bytes: int = Field(0, description="bytes in the write-ahead log not yet compacted into the snapshot")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {400: "not an image", 401: "missing or wrong API key", 404: "unknown item id",
                       409: "conflict", 413: "too many bytes or pixels", 415: "unsupported image format",
                       422: "invalid field (unknown attribute, top_k out of range, ...)",
                       429: "rate limited (Retry-After)", 503: "not ready, overloaded (Retry-After), or storage "
                       "unavailable for a write", 504: "timed out", 507: "no space left for a write"}.items()
}


def refuse_private_key(fields: Mapping[str, Any] | None, what: str) -> None:
    """422 when a client tries to set (metadata) or probe (filters) the private image reference."""
    if fields and IMAGE_KEY in fields:
        raise ApiError(422, f"invalid_{what}", f"{what} may not use the key {IMAGE_KEY!r}: it is reserved for "
                       "the item's stored image")


def _json_object(text: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"invalid_{field}", f"{field} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(422, f"invalid_{field}", f"{field} must be a JSON object, got {type(value).__name__}")
    return value


def parse_filters(text: str | None) -> dict[str, Scalar | list[Scalar]] | None:
    """`{"category": "dress", "colour": ["red", "blue"]}`: every field must match; a list means any of."""
    if text is None or not text.strip():
        return None
    filters = _json_object(text, "filters")
    refuse_private_key(filters, "filters")
    for field, wanted in filters.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values or any(isinstance(v, (dict, list)) for v in values):
            raise ApiError(422, "invalid_filters", f"filter {field!r} must be a value or a non-empty list of "
                           f"values (str, number, bool or null), got {json.dumps(wanted)[:80]}")
    return filters


def parse_metadata(text: str | None) -> dict[str, Any]:
    """An item's metadata: a JSON object (default `{}`), without reserved keys."""
    if text is None or not text.strip():
        return {}
    metadata = _json_object(text, "metadata")
    refuse_private_key(metadata, "metadata")
    reserved = reserved_keys(metadata)
    if reserved:
        raise ApiError(422, "invalid_metadata", f"metadata keys starting with {PREDICTED!r} are reserved for the "
                       f"predicted tags the service adds: rename {reserved}")
    return metadata

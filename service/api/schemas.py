"""The JSON shapes the service answers with (requests: service/api/requests.py; errors:
service/api/errors.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Hit(BaseModel):
    id: str
    score: float = Field(
        description="the cosine similarity of the query and the item under the attribute, in [-1, 1] "
        "(a composed query: the weighted sum of its parts' similarities, in [-sum |weight|, "
        "sum |weight|])"
    )
    metadata: dict[str, Any] | None = Field(
        description="the item's metadata (only `fields`; null with include_metadata false)"
    )
    precision: float | None = Field(
        None,
        description="threshold searches under one attribute with precision "
        "curves: the estimated precision of everything scoring at least this",
    )


class SearchResponse(BaseModel):
    attribute: str | None = Field(description="the query's attribute (null for a composed query)")
    query: list[dict[str, Any]] | None = Field(
        None,
        description="a composed query's parts as understood: attribute, "
        "source and weight (null for a single-attribute query)",
    )
    results: list[Hit] = Field(description="best first")
    offset: int = Field(0, description="how many results this page skipped")
    next_cursor: str | None = Field(
        None,
        description="send it as `cursor` (with the same request) for the next "
        "page; null: no more results, or the deepest page (ASEN_MAX_SEARCH_DEPTH)",
    )
    threshold: dict[str, Any] | None = Field(
        None,
        description="a threshold search's min_score (the one used, also "
        "when translated from min_precision), min_precision and max_results; "
        "`unreachable` when no score reaches the precision asked",
    )
    truncated: bool | None = Field(
        None, description="threshold searches: true when more items pass than this page"
    )
    total: int | None = Field(
        None,
        description="threshold searches: how many items pass in all (null where the "
        "engine cannot count them without reading every one)",
    )


class RerankHit(Hit):
    score: float = Field(description="weight * similarity + (1 - weight) * prior; the sort key")
    similarity: float = Field(description="cosine similarity under the attribute")
    position: int = Field(description="0-based position of the id in the submitted candidates")


class RerankResponse(BaseModel):
    attribute: str | None = Field(description="the query's attribute (null for a composed query)")
    query: list[dict[str, Any]] | None = Field(
        None, description="a composed query's parts (null for a single-attribute query)"
    )
    weight: float
    results: list[RerankHit] = Field(description="the known candidates, best first")
    unknown: list[str] = Field(description="candidate ids that are not in the catalogue (not ranked)")
    duplicates: list[str] = Field(
        description="ids sent more than once (ranked once, at their first position)"
    )


class CopyHit(BaseModel):
    id: str
    score: float = Field(
        description="the copy score: the mean of the item's best (attributes - modified_allowed) "
        "attribute scores, in [-1, 1]; with `verify`, that plus 0.2 x the geometric verification (0 to 1)"
    )
    scores: dict[str, float] = Field(
        description="every attribute's cosine similarity of the design and the item"
    )
    modified: list[str] = Field(
        description="the attributes judged modified (scoring below their calibrated line), "
        "lowest first; always empty without a copy calibration (`calibrated` false)"
    )
    false_match_rate: float | None = Field(
        None,
        description="the calibration's estimated false-match rate of "
        "everything scoring at least this (null without a calibration for "
        "modified_allowed)",
    )
    metadata: dict[str, Any] | None = Field(
        description="the item's metadata (only `fields`; null with include_metadata false)"
    )
    copy_score: float | None = Field(
        None, description="with `verify`: the copy score before verification (null without `verify`)"
    )
    inliers: int | None = Field(
        None,
        description="with `verify`: how many of the design's local features one similarity transform maps "
        "onto the item's (null without `verify`, or when the item has no readable stored image)",
    )


class CopiesResponse(BaseModel):
    results: list[CopyHit] = Field(description="best copy first")
    modified_allowed: int = Field(description="how many attributes a copy may modify (`modified` as used)")
    verified: bool = Field(False, description="whether the copies were re-ranked by geometric verification")
    calibrated: bool = Field(
        description="whether the model's copy scores are calibrated (`asen calibrate-copies`): "
        "false means no attribute could be judged modified and no false-match rate is known"
    )
    offset: int = Field(0, description="how many copies this page skipped")
    next_cursor: str | None = Field(
        None,
        description="send it as `cursor` (with the same request) for the next "
        "page; null: no more copies, or the deepest page (ASEN_MAX_SEARCH_DEPTH)",
    )
    threshold: dict[str, Any] | None = Field(
        None,
        description="a threshold search's min_score (the one used, also "
        "when translated from max_false_match_rate), max_false_match_rate, "
        "the estimated false_match_rate at min_score, and max_results",
    )
    truncated: bool | None = Field(
        None, description="threshold searches: true when more items pass than this page"
    )
    total: int | None = Field(
        None,
        description="threshold searches: how many items pass in all (null where a "
        "search was cut before counting them)",
    )


class ExplainResponse(BaseModel):
    attribute: str
    attention: list[list[float]] = Field(
        description="the attribute's attention map, rows of the grid, each value in [0, 1] (min-max scaled)"
    )
    grid: list[int] = Field(min_length=2, max_length=2, description="[h, w] of the attention map")
    image_box: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[x0, y0, x1, y1] in image pixels: the square of the image the attention map covers "
        "(the model's centre crop; it may overhang the image when the model letterboxes)",
    )
    roi_box: list[float] | None = Field(
        min_length=4,
        max_length=4,
        description="[x0, y0, x1, y1] in image pixels: the region the local branch zooms into (null for a "
        "model without a local branch)",
    )
    width: int = Field(description="image width in pixels (after EXIF orientation)")
    height: int = Field(description="image height in pixels")


class AttributeInfo(BaseModel):
    name: str
    values: list[str]
    value_search: list[str] = Field(
        default_factory=list,
        description='values a query part can name (`"value"`): '
        "those with a prototype in the checkpoint (empty without prototypes)",
    )
    precision_scores: dict[str, float | None] | None = Field(
        None,
        description="the min_score giving precision 0.9 / 0.95 / 0.99 on the validation split (null where never "
        "reached; the whole field null without precision curves)",
    )


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
    metadata: dict[str, Any] | None = Field(description="the item's metadata (null when not asked for)")


class ItemsPage(BaseModel):
    items: list[ItemResponse] = Field(description="in id order")
    next_cursor: str | None = Field(description="send it as `cursor` for the next page; null: the last page")


class BatchItemResult(BaseModel):
    id: str
    status: str = Field(description="`created`, `replaced` or `error`")
    metadata: dict[str, Any] | None = Field(None, description="the metadata stored (created or replaced)")
    error: str | None = Field(None, description="the error code (status `error`)")
    detail: str | None = Field(None, description="what was wrong (status `error`)")


class BatchResponse(BaseModel):
    results: list[BatchItemResult] = Field(description="one per item sent, in order")


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

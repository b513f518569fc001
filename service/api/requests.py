"""The request models of the endpoints: the same fields whether a request is JSON or a form
(service/api/bodies.py reads either). Types here; the ranges that come from the settings (top_k,
max_results, depth) and the rules between fields are checked by the service layer, each with its
own code, and described in the OpenAPI schema (service/api/openapi.py). Unknown fields are refused."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from asen_search.service.api.bodies import BodySpec
from asen_search.service.operations.errors import ServiceError

# Fields whose shape the service layer checks itself, each with its own error code (invalid_query,
# invalid_filters, invalid_metadata); their schema is described in service/api/openapi.py.
QueryParts = Annotated[Any, WithJsonSchema({"type": "array", "items": {"type": "object"}})]
JsonObject = Annotated[Any, WithJsonSchema({"type": "object"})]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QueryFields(_Request):
    """A query: `attribute` with one of `image`, `item_id`, `value`; or a composed `query`."""

    attribute: str | None = Field(None, description="the attribute to compare under (GET /attributes)")
    image: str | None = Field(None, description="the query image: a file in a form, base64 in JSON")
    item_id: str | None = Field(None, description="a catalogue item as the query (never returned itself)")
    value: str | None = Field(
        None, description="an attribute value as the query (its prototype; GET /attributes value_search)"
    )
    query: QueryParts | None = Field(
        None,
        description="a composed query instead: parts, each "
        '{"attribute", one of "image" (JSON: the image, base64; a form: the name of '
        'a file field of the form), "item_id" or "value", "weight" in [-1, 1] '
        "(default 1)}",
    )
    include_metadata: bool = Field(True, description="false: hits carry no metadata (ids and scores only)")
    fields: list[str] | None = Field(None, description="only these metadata fields in each hit")


class SearchRequest(QueryFields):
    top_k: int | None = Field(None, description="results wanted (default ASEN_DEFAULT_TOP_K)")
    offset: int | None = Field(
        None,
        description="skip this many results: a page deeper (up to "
        "ASEN_MAX_SEARCH_DEPTH); or send the `cursor` of the previous page",
    )
    cursor: str | None = Field(None, description="the `next_cursor` of the previous page of the same search")
    filters: JsonObject | None = Field(
        None,
        description="metadata filters, every field must match: a value, a "
        'list of values, or operators {"gte", "gt", "lte", "lt", "not", "not_in", '
        '"in", "eq", "exists"} (docs/service.md, Filters)',
    )
    group_by: str | None = Field(
        None, description="a metadata field: one result per value of it, still top_k groups"
    )
    min_score: float | None = Field(
        None, description="threshold search: every item scoring at least this (instead of top_k)"
    )
    min_precision: float | None = Field(
        None,
        description="threshold search by the attribute's calibrated precision curve (instead of min_score)",
    )
    max_results: int | None = Field(
        None,
        description="threshold search: results a page (default "
        "ASEN_DEFAULT_MAX_RESULTS); `truncated` and `next_cursor` say when more pass",
    )


class RerankRequest(QueryFields):
    candidates: list[str] = Field(
        default_factory=list,
        description="catalogue ids to reorder, in their original "
        "order (a form repeats the field once per id)",
    )
    weight: float = Field(
        1.0, ge=0.0, le=1.0, description="1: attribute similarity only; 0: the original order"
    )


class CopiesRequest(_Request):
    """A design (an image or a catalogue item) and which of its copies to return."""

    image: str | None = Field(None, description="a picture of the design: a file in a form, base64 in JSON")
    item_id: str | None = Field(None, description="a catalogue item as the design (never returned itself)")
    modified: int | None = Field(
        None,
        description="how many attributes a copy may modify: its copy score is the "
        "mean of its best (attributes - modified) attribute scores (default the copy "
        "calibration's, else 2)",
    )
    top_k: int | None = Field(None, description="copies wanted, best first (default ASEN_DEFAULT_TOP_K)")
    offset: int | None = Field(
        None,
        description="skip this many copies: a page deeper (up to "
        "ASEN_MAX_SEARCH_DEPTH); or send the `cursor` of the previous page",
    )
    cursor: str | None = Field(None, description="the `next_cursor` of the previous page of the same request")
    min_score: float | None = Field(
        None,
        description="threshold search: every item whose copy score is at least "
        "this, in [-1, 1] (instead of top_k)",
    )
    max_false_match_rate: float | None = Field(
        None,
        description="threshold search by the copy calibration: the "
        "lowest copy score at which at most this share of look-alike "
        "pairs match (instead of min_score; needs `asen calibrate-copies`)",
    )
    max_results: int | None = Field(
        None,
        description="threshold search: results a page (default "
        "ASEN_DEFAULT_MAX_RESULTS); `truncated` and `next_cursor` say when more pass",
    )
    filters: JsonObject | None = Field(
        None, description="metadata filters, as in /search (docs/service.md, Filters)"
    )
    include_metadata: bool = Field(True, description="false: hits carry no metadata (ids and scores only)")
    fields: list[str] | None = Field(None, description="only these metadata fields in each hit")
    verify: bool = Field(
        False,
        description="re-rank the best 50 copies (of the top k, or of those passing the threshold, which "
        "still chooses on the copy score) by their stored pictures: local features matched under one "
        "similarity transform (docs/protection.md, Geometric verification); deeper copies follow "
        "unverified; slower (about 3 s a request on 2 cores, against 46 ms without)",
    )


class TagRequest(_Request):
    image: str | None = Field(None, description="a file in a form, base64 in JSON")
    item_id: str | None = Field(None, description="a catalogue item instead of an image")


class ExplainRequest(TagRequest):
    attribute: str = Field(description="the attribute (GET /attributes)")


class ItemFields(_Request):
    id: str = Field(description="the item's id (any text without control characters, at most 512 characters)")
    image: str | None = Field(
        None,
        description="the item's image: a file in a form, base64 in JSON (in a batch "
        "form: the name of a file field)",
    )
    vectors: list[list[float]] | None = Field(
        None,
        description="instead of an image: its vectors, one per attribute "
        "in GET /attributes' order (as `asen encode` writes them; each is "
        "scaled to length 1)",
    )
    fingerprint: str | None = Field(
        None, description="with vectors: the fingerprint of the model that made them (GET /readyz)"
    )
    metadata: JsonObject | None = Field(
        None,
        description="a JSON object (keys `_image` and `predicted.*` are "
        "the service's); with replace and without metadata the item keeps its "
        "own",
    )


class ItemRequest(ItemFields):
    replace: bool = Field(False, description="replace an item with this id (else 409 `item_exists`)")


class BatchRequest(_Request):
    items: list[ItemFields] = Field(description="the items, each with its own result")
    replace: bool = Field(False, description="replace items that exist (else each is reported `item_exists`)")


class PatchRequest(_Request):
    metadata: JsonObject = Field(
        description="keys to set; a key set to null is removed (a JSON merge patch of "
        "the top level); the item's vectors, image and tags stay"
    )


SEARCH = BodySpec(
    SearchRequest,
    lists=frozenset({"fields"}),
    json_fields=frozenset({"query", "filters"}),
    files=frozenset({"image"}),
    named_images=True,
)
RERANK = BodySpec(
    RerankRequest,
    lists=frozenset({"fields", "candidates"}),
    json_fields=frozenset({"query"}),
    files=frozenset({"image"}),
    named_images=True,
)
COPIES = BodySpec(
    CopiesRequest, lists=frozenset({"fields"}), json_fields=frozenset({"filters"}), files=frozenset({"image"})
)
TAG = BodySpec(TagRequest, files=frozenset({"image"}))
EXPLAIN = BodySpec(ExplainRequest, files=frozenset({"image"}))
ITEM = BodySpec(ItemRequest, json_fields=frozenset({"metadata", "vectors"}), files=frozenset({"image"}))
BATCH = BodySpec(BatchRequest, json_fields=frozenset({"items"}), named_images=True)
PATCH = BodySpec(PatchRequest, json_fields=frozenset({"metadata"}))


def encode_cursor(kind: str, position: int | str) -> str:
    """A cursor: where the next page starts (an offset of a search, the last id of a listing), as an
    opaque token. It holds no state of the server: sent with the same request, it pages on."""
    text = json.dumps({"k": kind, "p": position}, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


CURSOR_KINDS = {"search": "a search", "copies": "a copy search", "items": "a listing"}
OFFSET_CURSORS = ("search", "copies")  # cursors holding an offset (a listing's holds the last id)


CURSOR_PATTERN = "^[A-Za-z0-9_-]+$"  # a cursor's text: unpadded base64url, as `encode_cursor` writes it


def decode_cursor(cursor: str, kind: str) -> Any:
    """The position a cursor holds; 422 `invalid_cursor` for anything that is not a cursor of `kind`
    (a character outside base64url too: the decoder would skip it)."""
    try:
        if not re.fullmatch(CURSOR_PATTERN, cursor):
            raise ValueError("not base64url")
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        position = data["p"]
        if (
            data["k"] != kind
            or not isinstance(position, int if kind in OFFSET_CURSORS else str)
            or isinstance(position, bool)
        ):
            raise ValueError("another kind of cursor")
        return position
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ServiceError(
            "invalid_cursor",
            f"not a cursor of {CURSOR_KINDS.get(kind, 'a listing')}: "
            "send the `next_cursor` of the previous page",
        ) from None


def start_offset(offset: int | None, cursor: str | None, kind: str) -> int:
    """Where a page of a search of `kind` starts: its `offset` (default 0) or the position its
    `cursor` holds; 422 `invalid_request` for both at once."""
    if cursor is None:
        return offset or 0
    if offset is not None:
        raise ServiceError("invalid_request", "send `cursor` or `offset`, not both")
    return int(decode_cursor(cursor, kind))

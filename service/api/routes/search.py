"""`POST /search`, `POST /rerank` and `GET /attributes`: read the request (JSON or a form), call the
service layer (service/operations/queries.py, searching.py), answer."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from asen_search.index import parse_filters
from asen_search.service.api.bodies import Body
from asen_search.service.api.errors import responses_for
from asen_search.service.api.overload import MODEL, rate_limited
from asen_search.service.api.requests import (
    RERANK,
    SEARCH,
    QueryFields,
    RerankRequest,
    SearchRequest,
    encode_cursor,
    start_offset,
)
from asen_search.service.api.routes.common import body_doc, read, send_timing
from asen_search.service.api.schemas import (
    AttributeInfo,
    AttributesResponse,
    Hit,
    RerankHit,
    RerankResponse,
    SearchResponse,
)
from asen_search.service.api.state import ServiceState, ServiceStateDep
from asen_search.service.operations import queries, reranking, searching
from asen_search.service.operations.checks import check_field_name, check_fields
from asen_search.service.operations.errors import ServiceError
from asen_search.service.operations.items import check_user_filters, decode_base64

router = APIRouter(tags=["search"])

QUERY_CODES = (
    "invalid_form",
    "not_an_image",
    "empty_image",
    "invalid_base64",
    "unknown_item",
    "image_too_large",
    "too_many_pixels",
    "unsupported_format",
    "unsupported_media_type",
    "corrupt_image",
    "invalid_request",
    "invalid_json",
    "unknown_field",
    "unknown_attribute",
    "query_required",
    "attribute_required",
    "ambiguous_query",
    "invalid_query",
    "image_not_uploaded",
    "weight_out_of_range",
    "zero_weights",
    "duplicate_attribute",
    "unknown_value",
    "no_prototypes",
    "invalid_item_id",
    "rate_limited",
    "not_ready",
    "overloaded",
    "busy",
)
SEARCH_CODES = (
    *QUERY_CODES,
    "top_k_out_of_range",
    "offset_out_of_range",
    "invalid_cursor",
    "invalid_filters",
    "max_results_without_threshold",
    "conflicting_threshold",
    "threshold_with_top_k",
    "threshold_with_group_by",
    "max_results_out_of_range",
    "min_score_out_of_range",
    "min_precision_out_of_range",
    "precision_needs_one_attribute",
    "no_thresholds",
)
RERANK_CODES = (*QUERY_CODES, "empty_candidates", "too_many_candidates", "invalid_candidates")


def query_input(asked: QueryFields, body: Body) -> queries.QueryInput:
    """The query of a request, whichever way it came: images as files a part names (a form), or
    base64 in place (JSON: each part's image is named by its position for the service layer)."""
    sent = dict(body.files)
    if asked.image is not None:
        sent[queries.SINGLE_IMAGE] = decode_base64(asked.image, "image")
    parts = asked.query
    if not body.form and isinstance(parts, list):
        named = []
        for n, part in enumerate(parts):
            if isinstance(part, dict) and isinstance(part.get("image"), str) and part["image"]:
                name = f"query[{n}].image"
                sent[name] = decode_base64(part["image"], name)
                part = {**part, "image": name}
            named.append(part)
        parts = named
    return queries.QueryInput(asked.attribute, asked.item_id, asked.value, parts, sent)


def selection(asked: QueryFields) -> searching.Selection:
    return searching.Selection(asked.include_metadata, check_fields(asked.fields))


def _hit(hit: searching.Hit) -> Hit:
    return Hit(id=hit.id, score=hit.score, metadata=hit.metadata, precision=hit.precision)


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=responses_for(SEARCH_CODES),
    openapi_extra={**rate_limited(MODEL), **body_doc(SEARCH)},
)
async def search(state: ServiceStateDep, request: Request, response: Response) -> SearchResponse:
    """The catalogue items most similar to the query, best first: under one attribute (`attribute`
    with `image`, `item_id` or `value`), or by a composed `query` (the weighted sum of per-attribute
    similarities); the `top_k` best (a page: `offset` or `cursor`), or every item at or above a
    threshold (`min_score` or `min_precision`, `max_results` a page). A catalogue item used as the
    query is never returned. JSON or a form (files for images)."""
    timer = state.timer()
    asked, body = await read(state, request, SEARCH, SearchRequest)
    chosen = selection(asked)
    query = query_input(asked, body)
    offset = start_offset(asked.offset, asked.cursor, "search")
    check_user_filters(asked.filters)
    if asked.group_by is not None:
        check_field_name(asked.group_by, "`group_by`")
    options = searching.SearchOptions(
        asked.top_k,
        offset,
        parse_filters(asked.filters),
        asked.group_by,
        asked.min_score,
        asked.min_precision,
        asked.max_results,
    )
    plan = queries.plan_query(query, state.encoder.attribute_names)
    parts = await queries.resolve(state.service, plan, query.images, timer)
    outcome = await searching.search(state.service, plan, parts, options, chosen, timer)
    send_timing(response, timer)
    next_offset = outcome.next_offset
    return SearchResponse(
        attribute=plan.attribute,
        query=plan.described(),
        results=[_hit(h) for h in outcome.hits],
        threshold=None if outcome.threshold is None else outcome.threshold.describe(),
        truncated=outcome.truncated,
        total=outcome.total,
        offset=offset,
        next_cursor=None if next_offset is None else encode_cursor("search", next_offset),
    )


@router.post(
    "/rerank",
    response_model=RerankResponse,
    responses=responses_for(RERANK_CODES),
    openapi_extra={**rate_limited(MODEL), **body_doc(RERANK)},
)
async def rerank(state: ServiceStateDep, request: Request, response: Response) -> RerankResponse:
    """Reorder `candidates` (e.g. a text search's results) by similarity to the query under one
    attribute, or by a composed `query`. `score = weight * similarity + (1 - weight) * (1 - position
    / len(candidates))`. Ids not in the catalogue are returned in `unknown`."""
    timer = state.timer()
    asked, body = await read(state, request, RERANK, RerankRequest)
    if body.form:
        commas = [c for c in asked.candidates if "," in c]
        if commas:
            raise ServiceError(
                "invalid_candidates",
                f"the candidate {commas[0]!r} holds a comma: a form sends one id "
                "per `candidates` field (repeat the field: -F candidates=a -F candidates=b); an id "
                "that really holds a comma goes in a JSON body's list",
            )
    unique, duplicates = reranking.check_candidates(state.service, asked.candidates)
    chosen = selection(asked)
    query = query_input(asked, body)
    plan = queries.plan_query(query, state.encoder.attribute_names)
    parts = await queries.resolve(state.service, plan, query.images, timer)
    outcome = await reranking.rerank(state.service, parts, unique, duplicates, asked.weight, chosen, timer)
    send_timing(response, timer)
    return RerankResponse(
        attribute=plan.attribute,
        query=plan.described(),
        weight=asked.weight,
        results=[
            RerankHit(
                id=h.id, similarity=h.similarity, position=h.position, score=h.score, metadata=h.metadata
            )
            for h in outcome.hits
        ],
        unknown=outcome.unknown,
        duplicates=outcome.duplicates,
    )


@router.get("/attributes", response_model=AttributesResponse, responses=responses_for(("not_ready",)))
async def attributes(state: ServiceStateDep) -> AttributesResponse:
    """The attributes a query can be about, the value names the model was trained on, the values a
    query can search by (those with a prototype), and the scores of precision levels."""
    return AttributesResponse(attributes=attribute_infos(state))


def attribute_infos(state: ServiceState) -> list[AttributeInfo]:
    prototypes, thresholds = state.encoder.prototypes, state.encoder.thresholds

    def searchable(name: str, values: tuple[str, ...]) -> list[str]:
        if prototypes is None:
            return []
        known = np.isfinite(prototypes.vectors[name]).all(axis=1)
        return [v for v, ok in zip(values, known.tolist()) if ok]

    def levels(name: str) -> dict[str, Any] | None:
        return thresholds.levels(name) if thresholds is not None and name in thresholds.curves else None

    return [
        AttributeInfo(
            name=a.name,
            values=list(a.values),
            value_search=searchable(a.name, a.values),
            precision_scores=levels(a.name),
        )
        for a in state.encoder.attributes
    ]

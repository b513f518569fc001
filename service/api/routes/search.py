"""`POST /search`, `POST /rerank` and `GET /attributes`."""
from __future__ import annotations

from collections import Counter
from typing import Annotated, cast

import anyio
from fastapi import APIRouter, Form, Response

from asen_search.index import SearchResult
from asen_search.service import search as reranking
from asen_search.service.api.errors import ApiError
from asen_search.service.api.params import AttributeField, ImageField, ItemIdField, blank_to_none, check_top_k
from asen_search.service.api.prometheus import StageTimer
from asen_search.service.api.schemas import (
    ERROR_RESPONSES,
    AttributeInfo,
    AttributesResponse,
    Hit,
    RerankHit,
    RerankResponse,
    SearchResponse,
    parse_filters,
)
from asen_search.service.api.state import RuntimeDep
from asen_search.service.catalogue.item_images import public_metadata

router = APIRouter(tags=["search"])

@router.post("/search", response_model=SearchResponse, responses=ERROR_RESPONSES)
async def search(runtime: RuntimeDep, response: Response, attribute: AttributeField, image: ImageField = None,
                 item_id: ItemIdField = None,
                 top_k: Annotated[int | None, Form(description="results wanted (default 10)")] = None,
                 filters: Annotated[str | None, Form(description='JSON object, e.g. {"category": ["dress", '
                                                     '"skirt"]}: every field must match')] = None,
                 group_by: Annotated[str | None, Form(description="a metadata field: at most one result per "
                                                      "value of it (e.g. one per product), still top_k groups")] = None,
                 ) -> SearchResponse:
    """The catalogue items most similar to the query under one attribute, best first. A query by
    `item_id` never returns that item."""
    timer = StageTimer(runtime.metrics)
    item_id = blank_to_none(item_id)
    k = check_top_k(runtime.settings, top_k)
    wanted = parse_filters(filters)
    query = await runtime.query_vector(attribute, image, item_id, timer)
    exclude = [item_id] if item_id is not None else []
    group_by = blank_to_none(group_by)
    with timer.stage("search"):
        try:
            if group_by is not None:
                hits = await anyio.to_thread.run_sync(lambda: reranking.grouped_search(
                    runtime.catalogue, query, attribute, k, group_by, filters=wanted, exclude=exclude))
            else:  # one query vector [dim]: search returns a single list of results
                hits = cast(list[SearchResult], await anyio.to_thread.run_sync(
                    lambda: runtime.catalogue.search(query, attribute, k, filters=wanted, exclude=exclude)))
        except ValueError as exc:
            raise ApiError(422, "invalid_filters", str(exc)) from None
    response.headers["Server-Timing"] = timer.server_timing()
    return SearchResponse(attribute=attribute, results=[
        Hit(id=h.id, score=h.score, metadata=public_metadata(h.metadata)) for h in hits])


@router.post("/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES)
async def rerank(runtime: RuntimeDep, response: Response, attribute: AttributeField, image: ImageField = None,
                 item_id: ItemIdField = None,
                 candidates: Annotated[list[str] | None, Form(description="catalogue ids to reorder, in "
                                                              "their original order (repeat the field)")] = None,
                 weight: Annotated[float, Form(ge=0.0, le=1.0, description="1: attribute similarity only; "
                                               "0: keep the original order")] = 1.0,
                 ) -> RerankResponse:
    """Reorder `candidates` (e.g. a text search's results) by similarity to the query under one
    attribute. `score = weight * similarity + (1 - weight) * (1 - position / len(candidates))`
    (`service/search.py`).
    Ids not in the catalogue are returned in `unknown`."""
    timer = StageTimer(runtime.metrics)
    if not candidates:
        raise ApiError(422, "empty_candidates", "send at least one `candidates` id")
    if len(candidates) > runtime.settings.max_candidates:
        raise ApiError(422, "too_many_candidates", f"{len(candidates)} candidates; the limit is "
                       f"{runtime.settings.max_candidates}")
    unique = list(dict.fromkeys(candidates))
    duplicates = sorted(c for c, count in Counter(candidates).items() if count > 1)
    query = await runtime.query_vector(attribute, image, blank_to_none(item_id), timer)
    with timer.stage("search"):
        scores, metadata, unknown = await anyio.to_thread.run_sync(
            reranking.score_known, runtime.catalogue, query, attribute, unique)
    hits = [RerankHit(id=h.id, similarity=h.similarity, position=h.position, score=h.score, metadata=h.metadata)
            for h in reranking.rerank(unique, scores, metadata, weight)]
    response.headers["Server-Timing"] = timer.server_timing()
    return RerankResponse(attribute=attribute, weight=weight, results=hits, unknown=unknown, duplicates=duplicates)


@router.get("/attributes", response_model=AttributesResponse)
async def attributes(runtime: RuntimeDep) -> AttributesResponse:
    """The attributes a query can be about, and the value names the model was trained on."""
    return AttributesResponse(attributes=[AttributeInfo(name=a.name, values=list(a.values))
                                          for a in runtime.encoder.attributes])

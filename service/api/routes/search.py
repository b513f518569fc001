"""`POST /search`, `POST /rerank` (single-attribute and composed queries: service/api/query.py) and
`GET /attributes`."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, cast

import anyio
import numpy as np
from fastapi import APIRouter, Form, Request, Response, UploadFile

from asen_search.index import Part, SearchResult
from asen_search.index.threshold import grow_until_below
from asen_search.service import search as reranking
from asen_search.service.api.errors import ApiError
from asen_search.service.api.overload import MODEL, rate_limited
from asen_search.service.api.params import ImageField, ItemIdField, blank_to_none, check_top_k
from asen_search.service.api.prometheus import StageTimer
from asen_search.service.api.query import (
    PartSpec,
    Threshold,
    parse_query,
    query_item_ids,
    read_threshold,
    resolve_parts,
)
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
from asen_search.service.api.state import Runtime, RuntimeDep
from asen_search.service.catalogue.item_images import public_metadata

router = APIRouter(tags=["search"])

QueryField = Annotated[str | None, Form(description='a composed query instead of `attribute`: a JSON list of parts, '
                                        'each {"attribute": ..., one of "image" (the name of an uploaded file field), '
                                        '"item_id" or "value", "weight" in [-1, 1] (default 1)}; the score is the '
                                        'weighted sum of per-attribute similarities')]
OptionalAttribute = Annotated[str | None, Form(description="attribute name, see GET /attributes (or send `query`)")]


@dataclass
class Query:
    """A request's query: one attribute's vector, or a composed query's parts."""

    parts: list[Part]
    specs: list[PartSpec] | None     # None: the single-attribute form
    exclude: list[str]

    @property
    def attribute(self) -> str | None:
        return self.parts[0].attribute if self.specs is None else None

    def described(self) -> list[dict[str, Any]] | None:
        return None if self.specs is None else [p.describe() for p in self.specs]


async def read_query(runtime: Runtime, request: Request, attribute: str | None, image: UploadFile | None,
                     item_id: str | None, query: str | None, timer: StageTimer) -> Query:
    """The single-attribute form (`attribute` + `image` or `item_id`) or a composed `query`, never both."""
    item_id, query, attribute = blank_to_none(item_id), blank_to_none(query), blank_to_none(attribute)
    if query is None:
        if attribute is None:
            raise ApiError(422, "attribute_required", "send `attribute` (see GET /attributes) with `image` or "
                           "`item_id`, or a composed `query`")
        vector = await runtime.query_vector(attribute, image, item_id, timer)
        return Query([Part(attribute, vector, 1.0)], None, [item_id] if item_id is not None else [])
    if attribute is not None or item_id is not None:
        raise ApiError(422, "ambiguous_query", "send either a composed `query` or `attribute` with `image`/`item_id`, "
                       "not both (a composed query names each part's attribute and source)")
    specs = parse_query(query, runtime.encoder.attribute_names)
    parts = await resolve_parts(runtime, specs, await request.form(), timer)
    return Query(parts, specs, query_item_ids(specs))


@router.post("/search", response_model=SearchResponse, responses=ERROR_RESPONSES, openapi_extra=rate_limited(MODEL))
async def search(runtime: RuntimeDep, request: Request, response: Response, attribute: OptionalAttribute = None,
                 image: ImageField = None, item_id: ItemIdField = None, query: QueryField = None,
                 top_k: Annotated[int | None, Form(description="results wanted (default 10)")] = None,
                 filters: Annotated[str | None, Form(description='JSON object, e.g. {"category": ["dress", '
                                                     '"skirt"]}: every field must match')] = None,
                 group_by: Annotated[str | None, Form(description="a metadata field: at most one result per "
                                                      "value of it (e.g. one per product), still top_k groups")] = None,
                 min_score: Annotated[float | None, Form(description="threshold search: every item scoring at least "
                                                         "this (instead of top_k), best first")] = None,
                 min_precision: Annotated[float | None, Form(description="threshold search by the attribute's "
                                                             "calibrated precision curve (instead of min_score)")] = None,
                 max_results: Annotated[int | None, Form(description="threshold search: most results (default 100); "
                                                         "`truncated` says when it cut the list")] = None,
                 ) -> SearchResponse:
    """The catalogue items most similar to the query, best first: under one attribute (`attribute`
    with `image` or `item_id`), or by a composed `query` (the weighted sum of per-attribute
    similarities); the `top_k` best, or every item at or above a threshold (`min_score` or
    `min_precision`, up to `max_results`). A catalogue item used as the query is never returned."""
    timer = StageTimer(runtime.metrics)
    group_by = blank_to_none(group_by)
    wanted = parse_filters(filters)
    asked = await read_query(runtime, request, attribute, image, item_id, query, timer)
    threshold = read_threshold(runtime, asked.parts, asked.specs is not None, min_score, min_precision, max_results,
                               top_k, group_by)
    if threshold is not None:
        return await _threshold_search(runtime, response, asked, threshold, wanted, timer)
    k = check_top_k(runtime.settings, top_k)
    catalogue = runtime.catalogue

    def fetch(n: int) -> list[SearchResult]:
        if asked.specs is None:   # one query vector [dim]: search returns a single list of results
            part = asked.parts[0]
            return cast(list[SearchResult], catalogue.search(part.vector, part.attribute, n, filters=wanted,
                                                             exclude=asked.exclude))
        return catalogue.search_composed(asked.parts, n, filters=wanted, exclude=asked.exclude)

    with timer.stage("search"):
        try:
            if group_by is not None:
                hits = await anyio.to_thread.run_sync(
                    lambda: reranking.grouped_search(fetch, len(catalogue), k, group_by))
            else:
                hits = await anyio.to_thread.run_sync(fetch, k)
        except ValueError as exc:
            raise ApiError(422, "invalid_filters", str(exc)) from None
    response.headers["Server-Timing"] = timer.server_timing()
    return SearchResponse(attribute=asked.attribute, query=asked.described(), results=[
        Hit(id=h.id, score=h.score, metadata=public_metadata(h.metadata)) for h in hits])


async def _threshold_search(runtime: Runtime, response: Response, asked: Query, threshold: Threshold,
                            wanted: dict[str, Any] | None, timer: StageTimer) -> SearchResponse:
    catalogue = runtime.catalogue

    def run() -> tuple[list[SearchResult], bool]:
        if asked.specs is None:
            part = asked.parts[0]
            return catalogue.search_range(part.vector, part.attribute, threshold.min_score, threshold.max_results,
                                          filters=wanted, exclude=asked.exclude)
        return grow_until_below(lambda n: catalogue.search_composed(asked.parts, n, filters=wanted, exclude=asked.exclude),
                                threshold.min_score, threshold.max_results, len(catalogue))

    with timer.stage("search"):
        try:
            hits, truncated = await anyio.to_thread.run_sync(run)
        except ValueError as exc:
            raise ApiError(422, "invalid_filters", str(exc)) from None
    curve = None
    if asked.specs is None and runtime.encoder.thresholds is not None:
        curve = runtime.encoder.thresholds.curves.get(asked.parts[0].attribute)
    response.headers["Server-Timing"] = timer.server_timing()
    return SearchResponse(attribute=asked.attribute, query=asked.described(), threshold=threshold.describe(),
                          truncated=truncated, results=[
                              Hit(id=h.id, score=h.score, metadata=public_metadata(h.metadata),
                                  precision=None if curve is None else round(curve.precision_at(h.score), 4))
                              for h in hits])


@router.post("/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES, openapi_extra=rate_limited(MODEL))
async def rerank(runtime: RuntimeDep, request: Request, response: Response, attribute: OptionalAttribute = None,
                 image: ImageField = None, item_id: ItemIdField = None, query: QueryField = None,
                 candidates: Annotated[list[str] | None, Form(description="catalogue ids to reorder, in "
                                                              "their original order (repeat the field)")] = None,
                 weight: Annotated[float, Form(ge=0.0, le=1.0, description="1: attribute similarity only; "
                                               "0: keep the original order")] = 1.0,
                 ) -> RerankResponse:
    """Reorder `candidates` (e.g. a text search's results) by similarity to the query under one
    attribute, or by a composed `query`. `score = weight * similarity + (1 - weight) * (1 - position
    / len(candidates))` (`service/search.py`). Ids not in the catalogue are returned in `unknown`."""
    timer = StageTimer(runtime.metrics)
    if not candidates:
        raise ApiError(422, "empty_candidates", "send at least one `candidates` id")
    if len(candidates) > runtime.settings.max_candidates:
        raise ApiError(422, "too_many_candidates", f"{len(candidates)} candidates; the limit is "
                       f"{runtime.settings.max_candidates}")
    unique = list(dict.fromkeys(candidates))
    duplicates = sorted(c for c, count in Counter(candidates).items() if count > 1)
    asked = await read_query(runtime, request, attribute, image, item_id, query, timer)
    with timer.stage("search"):
        scores, metadata, unknown = await anyio.to_thread.run_sync(
            reranking.score_known, runtime.catalogue, asked.parts, unique)
    hits = [RerankHit(id=h.id, similarity=h.similarity, position=h.position, score=h.score, metadata=h.metadata)
            for h in reranking.rerank(unique, scores, metadata, weight)]
    response.headers["Server-Timing"] = timer.server_timing()
    return RerankResponse(attribute=asked.attribute, query=asked.described(), weight=weight, results=hits,
                          unknown=unknown, duplicates=duplicates)


@router.get("/attributes", response_model=AttributesResponse)
async def attributes(runtime: RuntimeDep) -> AttributesResponse:
    """The attributes a query can be about, the value names the model was trained on, and the values
    a composed query can search by (those with a prototype)."""
    prototypes = runtime.encoder.prototypes

    def searchable(name: str, values: tuple[str, ...]) -> list[str]:
        if prototypes is None:
            return []
        known = np.isfinite(prototypes.vectors[name]).all(axis=1)
        return [v for v, ok in zip(values, known.tolist()) if ok]

    thresholds = runtime.encoder.thresholds

    def levels(name: str) -> dict[str, float | None] | None:
        return thresholds.levels(name) if thresholds is not None and name in thresholds.curves else None

    return AttributesResponse(attributes=[AttributeInfo(name=a.name, values=list(a.values),
                                                        value_search=searchable(a.name, a.values),
                                                        precision_scores=levels(a.name))
                                          for a in runtime.encoder.attributes])

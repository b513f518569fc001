"""Searching the catalogue for a resolved query: the `top_k` best (one page at `offset`), one per
group, or every item at or above a threshold (a page of them, how many passed); and reranking a
given list. Plain functions over a `Service`; every refusal a ServiceError with its code.

Paging: `offset` skips that many results (the search is run for `offset + top_k` and the page cut
from it), up to `Limits.max_search_depth`: a page that would reach past it ends there (the deepest
page is shorter, and the last); an offset at or past it is refused. A page is answered with
`next_offset` when more may follow. Threshold searches page the same way over the items that pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import anyio

from asen_search.index import Catalogue, Filter, Part, SearchResult
from asen_search.index.threshold import grow_until_below
from asen_search.model.thresholds import NoThreshold
from asen_search.service.jobs.item_images import public_metadata
from asen_search.service.operations.context import Service, Stages
from asen_search.service.operations.errors import ServiceError
from asen_search.service.operations.queries import QueryPlan

ABOVE_EVERY_SCORE = 1.0 + 1e-6  # a cosine similarity never reaches it
SCORE_LIMIT = 16.0  # the most a score can be: 16 parts of weight 1 (queries.MAX_QUERY_PARTS)
GROUP_FETCH_MAX = 16_384  # most results one grouped search reads (Milvus's own top-k limit)


@dataclass(frozen=True)
class Selection:
    """Which metadata a hit carries: all of it (`fields` None), only `fields`, or none."""

    include_metadata: bool = True
    fields: tuple[str, ...] | None = None

    def apply(self, metadata: dict[str, Any]) -> dict[str, Any] | None:
        if not self.include_metadata:
            return None
        shown = public_metadata(metadata)
        return shown if self.fields is None else {k: shown[k] for k in self.fields if k in shown}


@dataclass(frozen=True)
class SearchOptions:
    top_k: int | None = None
    offset: int = 0
    filters: Filter = Filter()
    group_by: str | None = None
    min_score: float | None = None
    min_precision: float | None = None
    max_results: int | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: dict[str, Any] | None
    precision: float | None = None


@dataclass(frozen=True)
class Threshold:
    """A threshold search: every item scoring at least `min_score` (given, or translated from
    `min_precision` through the attribute's precision curve), at most `max_results` a page."""

    min_score: float
    min_precision: float | None
    max_results: int
    unreachable: str | None = None  # why no item can pass (a precision no score reaches)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "min_score": self.min_score,
            "min_precision": self.min_precision,
            "max_results": self.max_results,
        }
        return described if self.unreachable is None else {**described, "unreachable": self.unreachable}


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[Hit]
    threshold: Threshold | None = None
    truncated: bool | None = None  # threshold searches: more items pass than this page holds
    total: int | None = None  # threshold searches: how many items pass (None: the engine cannot count)
    next_offset: int | None = None  # where the next page starts (None: this is the last)


def check_top_k(service: Service, top_k: int | None) -> int:
    top_k = service.limits.default_top_k if top_k is None else top_k
    if not 1 <= top_k <= service.limits.max_top_k:
        raise ServiceError(
            "top_k_out_of_range", f"top_k must be between 1 and {service.limits.max_top_k}, got {top_k}"
        )
    return top_k


def page_within_depth(service: Service, offset: int, page: int) -> int:
    """How many results the page at `offset` holds: `page`, cut at the deepest a search pages to (the
    last page ends there); an offset at or past it is 422 `offset_out_of_range`."""
    depth = service.limits.max_search_depth
    if not 0 <= offset < depth:
        raise ServiceError(
            "offset_out_of_range",
            f"offset {offset} is at or beyond the deepest a search pages to "
            f"({depth} results, ASEN_MAX_SEARCH_DEPTH): offsets run from 0 to {depth - 1}; narrow "
            "the query with filters instead",
        )
    return min(page, depth - offset)


def next_page(service: Service, offset: int, page: int, more: bool) -> int | None:
    """Where the next page starts: when more results may follow and it lies within the depth."""
    following = offset + page
    return following if more and following < service.limits.max_search_depth else None


def read_threshold(
    service: Service, parts: list[Part], plan: QueryPlan, options: SearchOptions
) -> Threshold | None:
    """The threshold of a request (None for a top-k one); a ServiceError naming the conflict or range."""
    if options.min_score is None and options.min_precision is None:
        if options.max_results is not None:
            raise ServiceError(
                "max_results_without_threshold",
                "max_results caps a threshold search: send min_score "
                "or min_precision with it (top_k sizes a top-k search)",
            )
        return None
    if options.min_score is not None and options.min_precision is not None:
        raise ServiceError("conflicting_threshold", "send min_score or min_precision, not both")
    if options.top_k is not None:
        raise ServiceError(
            "threshold_with_top_k",
            "a threshold search returns every item above the threshold (up to "
            "max_results a page): send top_k or min_score/min_precision, not both",
        )
    if options.group_by is not None:
        raise ServiceError("threshold_with_group_by", "group_by works with top_k searches only")
    limits = service.limits
    cap = limits.default_max_results if options.max_results is None else options.max_results
    if not 1 <= cap <= limits.max_results:
        raise ServiceError(
            "max_results_out_of_range", f"max_results must be between 1 and {limits.max_results}, got {cap}"
        )
    if options.min_precision is not None:
        return _precision_threshold(service, parts, plan, options.min_precision, cap)
    assert options.min_score is not None
    if not -SCORE_LIMIT <= options.min_score <= SCORE_LIMIT:
        raise ServiceError(
            "min_score_out_of_range",
            f"min_score must be in [{-SCORE_LIMIT:g}, {SCORE_LIMIT:g}], got {options.min_score:g}",
        )
    bound = sum(abs(p.weight) for p in parts)  # 1 for a single attribute; a composed score lies in +-sum |w|
    if options.min_score > bound:  # a valid question whose answer is empty: no score reaches it
        return Threshold(
            ABOVE_EVERY_SCORE,
            None,
            cap,
            f"min_score {options.min_score:g} is above every score this "
            f"query can give ({bound:g}): nothing passes",
        )
    return Threshold(max(float(options.min_score), -bound), None, cap)


def _precision_threshold(
    service: Service, parts: list[Part], plan: QueryPlan, precision: float, cap: int
) -> Threshold:
    """The lowest score whose estimated precision is at least `precision`. A precision the curve never
    reaches is a valid question whose answer is empty: a threshold above every score, saying why."""
    if plan.composed:
        raise ServiceError(
            "precision_needs_one_attribute",
            "min_precision is calibrated per attribute: use it with a "
            "single-attribute query, or send min_score with a composed one",
        )
    if not 0.0 < precision <= 1.0:
        raise ServiceError(
            "min_precision_out_of_range", f"min_precision must be in (0, 1], got {precision:g}"
        )
    thresholds = service.encoder.thresholds
    if thresholds is None:
        raise ServiceError(
            "no_thresholds",
            "this model has no precision curves, so min_precision cannot be "
            "translated: run `asen eval --checkpoint CKPT --data DATASET` (writes them beside the "
            "checkpoint) or send min_score",
        )
    try:
        curve = thresholds.curve(parts[0].attribute)
    except NoThreshold as exc:
        raise ServiceError("no_thresholds", str(exc)) from None
    try:
        return Threshold(curve.score_for(precision), precision, cap)
    except NoThreshold as exc:
        return Threshold(ABOVE_EVERY_SCORE, precision, cap, f"{parts[0].attribute}: {exc}: nothing passes")


async def search(
    service: Service,
    plan: QueryPlan,
    parts: list[Part],
    options: SearchOptions,
    selection: Selection,
    timer: Stages,
) -> SearchOutcome:
    """A top-k search (a page of it), a grouped one, or a threshold search."""
    threshold = read_threshold(service, parts, plan, options)
    if threshold is not None:
        return await _threshold_search(service, plan, parts, threshold, options, selection, timer)
    k = page_within_depth(service, options.offset, check_top_k(service, options.top_k))
    catalogue = service.catalogue
    fetch = _fetcher(catalogue, plan, parts, options.filters)
    with timer.stage("search"):
        if options.group_by is not None:
            group_by = options.group_by
            found = await anyio.to_thread.run_sync(
                lambda: grouped_search(fetch, len(catalogue), options.offset + k, group_by)
            )
        else:
            found = await anyio.to_thread.run_sync(fetch, options.offset + k)
    page = found[options.offset : options.offset + k]
    return SearchOutcome(
        [Hit(h.id, h.score, selection.apply(h.metadata)) for h in page],
        next_offset=next_page(service, options.offset, k, len(found) == options.offset + k),
    )


def _fetcher(
    catalogue: Catalogue, plan: QueryPlan, parts: list[Part], filters: Filter
) -> Callable[[int], list[SearchResult]]:
    def fetch(n: int) -> list[SearchResult]:
        if not plan.composed:  # one query vector [dim]: search returns a single list of results
            part = parts[0]
            return cast(
                list[SearchResult],
                catalogue.search(part.vector, part.attribute, n, filters=filters, exclude=plan.exclude),
            )
        return catalogue.search_composed(parts, n, filters=filters, exclude=plan.exclude)

    return fetch


async def _threshold_search(
    service: Service,
    plan: QueryPlan,
    parts: list[Part],
    threshold: Threshold,
    options: SearchOptions,
    selection: Selection,
    timer: Stages,
) -> SearchOutcome:
    catalogue, offset = service.catalogue, options.offset
    page = page_within_depth(service, offset, threshold.max_results)
    if threshold.unreachable is not None:
        return SearchOutcome([], threshold, truncated=False, total=0)

    def run() -> tuple[list[SearchResult], bool, int | None]:
        if not plan.composed:
            part = parts[0]
            return catalogue.search_range_counted(
                part.vector,
                part.attribute,
                threshold.min_score,
                offset + page,
                filters=options.filters,
                exclude=plan.exclude,
            )
        hits, cut = grow_until_below(
            lambda n: catalogue.search_composed(parts, n, filters=options.filters, exclude=plan.exclude),
            threshold.min_score,
            offset + page,
            len(catalogue),
        )
        return hits, cut, None if cut else len(hits)

    with timer.stage("search"):
        found, cut, total = await anyio.to_thread.run_sync(run)
    curve = None
    if not plan.composed and service.encoder.thresholds is not None:
        curve = service.encoder.thresholds.curves.get(parts[0].attribute)
    hits = [
        Hit(
            h.id,
            h.score,
            selection.apply(h.metadata),
            None if curve is None else round(curve.precision_at(h.score), 4),
        )
        for h in found[offset : offset + page]
    ]
    return SearchOutcome(
        hits, threshold, truncated=cut, total=total, next_offset=next_page(service, offset, page, cut)
    )


def grouped_search(
    fetch: Callable[[int], list[SearchResult]], catalogue_size: int, top_k: int, group_by: str
) -> list[SearchResult]:
    """The best result of each of the `top_k` best groups (items sharing the value of metadata field
    `group_by`; an item without the field is a group of its own), best first.

    `fetch(n)` returns the best `n` results of the query (filters applied); it is asked for more until
    `top_k` groups are found or the catalogue has no more, so a product with many near-identical photos
    cannot crowd the others out. Reads at most GROUP_FETCH_MAX results."""
    fetch_n = min(max(4 * top_k, 32), GROUP_FETCH_MAX)
    while True:
        found = fetch(fetch_n)
        best: dict[object, SearchResult] = {}
        for hit in found:  # best first: the first hit of a group is its best
            value = hit.metadata.get(group_by, ("item", hit.id))
            key = json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value
            best.setdefault(key, hit)
        if len(best) >= top_k or len(found) < fetch_n or fetch_n >= min(catalogue_size, GROUP_FETCH_MAX):
            return list(best.values())[:top_k]
        fetch_n = min(4 * fetch_n, GROUP_FETCH_MAX)

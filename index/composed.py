"""Composed queries: one query made of weighted parts, each a query vector in one attribute's space.

    score(item) = sum over parts of weight * <query_part, item's vector under the part's attribute>

With unit vectors that is the weighted sum of per-attribute cosine similarities; a negative weight
pushes an attribute away ("the same cut, but not this colour").

Two ways to answer, both behind `Catalogue.search_composed`:
- exact: every item's weighted sum (`FaissCatalogue` over Flat indexes: one matrix-vector product
  per part over the stored vectors; any catalogue with no positive part: a scan of all items);
- candidates (`candidate_search`): the union of each positive part's top `per_part` items from its
  own attribute's index (filters applied there), rescored exactly with the weighted sum. An item
  can only be missed when it is in no positive part's top `per_part`; the default was chosen from
  recall@10 against the exact answer at 100k items (docs/composed.md, bench/composed_recall.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .composed_parts import Part
from .errors import CatalogueBusy
from .filters import Filter
from .results import SearchResult

if TYPE_CHECKING:
    from .attribute_index import AttributeIndex
    from .interface import Catalogue

COMPOSED_CANDIDATES = (
    1600  # per weighted part, before rescoring: recall@10 0.996-0.999 (lo95 >= 0.99) at 100k
)
# items, Flat and HNSW32, negative weights included (bench/composed_recall.py)


def top_results(
    ids: Sequence[str], scores: np.ndarray, metadata: Sequence[dict[str, Any]], k: int
) -> list[SearchResult]:
    """The `k` best of aligned ids/scores/metadata, best first; ties broken by position."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [SearchResult(ids[i], float(scores[i]), metadata[i]) for i in order.tolist()]


def weighted_scores(
    parts: Sequence[Part],
    indexes: Sequence[AttributeIndex],
    all_keys: Callable[[], np.ndarray],
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact way: keys ``[n]`` (live, and in ``allowed`` when given) and their weighted sums ``[n]``
    float64, under the catalogue's read lock. Flat indexes are read in place (one matrix-vector
    product per part); others are decoded (``all_keys()``: every live key)."""
    if all(index.exact for index in indexes) and (allowed is None or len(allowed) > len(indexes[0]) // 8):
        keys, total = None, None
        for part, index in zip(parts, indexes):
            index_keys, vectors = index.flat_view()
            scores = (vectors @ part.vector).astype(np.float64)
            if keys is None:
                keys, total = np.array(index_keys), part.weight * scores
                continue
            if not np.array_equal(index_keys, keys):  # stored in another order: align by key
                order = np.argsort(index_keys, kind="stable")
                scores = scores[order[np.searchsorted(index_keys[order], keys)]]
            total += part.weight * scores
        assert keys is not None and total is not None
        if allowed is not None:
            keep = np.isin(keys, allowed)
            keys, total = keys[keep], total[keep]
        return keys, total
    keys = all_keys() if allowed is None else allowed
    total = np.zeros(len(keys), dtype=np.float64)
    for part, index in zip(parts, indexes):
        total += part.weight * index.score_keys(part.vector, keys).astype(np.float64)
    return keys, total


def candidate_keys(
    parts: Sequence[Part],
    indexes: Sequence[AttributeIndex],
    per_part: int,
    allowed: np.ndarray | None,
    blocked: np.ndarray,
) -> np.ndarray:
    """The union of each weighted part's top `per_part` keys from its own index: the items most
    similar under a positive part, the least similar under a negative one (its vector negated), with
    HNSW's efSearch at least `per_part` so that the graph search returns as many as asked."""
    found = []
    for part, index in zip(parts, indexes):
        query = part.vector if part.weight > 0 else -part.vector
        _, keys = index.search(query[None], per_part, allowed, blocked, ef=per_part)
        found.append(keys[0][keys[0] >= 0])
    return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)


def candidate_search(
    catalogue: Catalogue,
    parts: Sequence[Part],
    k: int,
    filters: Filter,
    exclude: Sequence[str],
    per_part: int = COMPOSED_CANDIDATES,
    attempts: int = 5,
) -> list[SearchResult]:
    """Candidates from each weighted part's own search (a negative part's with its vector negated),
    rescored exactly, through the `Catalogue` interface (the Milvus backend). Retries when a
    concurrent delete removes a candidate before it is rescored; CatalogueBusy after `attempts`."""
    wanted = max(per_part, k)
    for _ in range(attempts):
        metadata: dict[str, dict[str, Any]] = {}
        for part in parts:
            if part.weight:
                query = part.vector if part.weight > 0 else -part.vector
                for hit in catalogue.search(query, part.attribute, wanted, filters=filters, exclude=exclude):
                    assert isinstance(hit, SearchResult)
                    metadata.setdefault(hit.id, hit.metadata)
        ids = list(metadata)
        if not ids:
            return []
        total = np.zeros(len(ids), dtype=np.float64)
        try:
            for part in parts:
                if part.weight:
                    scores = catalogue.score_ids(part.vector, part.attribute, ids)
                    total += part.weight * np.array([scores[i] for i in ids], dtype=np.float64)
        except KeyError:
            continue
        return top_results(ids, total, [metadata[i] for i in ids], k)
    raise CatalogueBusy(f"the catalogue changed during the request {attempts} times; retry")


def scan_search(
    catalogue: Catalogue,
    parts: Sequence[Part],
    k: int,
    filters: Filter,
    exclude: Sequence[str],
    batch_size: int = 4096,
) -> list[SearchResult]:
    """Exact over every item, read `batch_size` at a time through the `Catalogue` interface (the
    answer when no part has a positive weight, on an engine without a faster exact path); filters
    judged by their reference semantics (`Filter.matches`)."""
    columns = [(catalogue.attributes.index(p.attribute), p) for p in parts if p.weight]
    skip = set(exclude)
    best: list[tuple[float, int, str, dict[str, Any]]] = []  # a min-heap of the k best (score, -order)
    order = 0
    for ids, vectors, metas in catalogue.iter_items(batch_size):
        total = np.zeros(len(ids), dtype=np.float64)
        for a, part in columns:
            total += part.weight * (vectors[:, a] @ part.vector)
        for item_id, score, meta in zip(ids, total.tolist(), metas):
            order += 1
            if item_id in skip or not filters.matches(meta):
                continue
            entry = (score, -order, item_id, meta)
            if len(best) < k:
                heapq.heappush(best, entry)
            elif entry > best[0]:
                heapq.heapreplace(best, entry)
    best.sort(reverse=True)
    return [SearchResult(item_id, score, meta) for score, _, item_id, meta in best]

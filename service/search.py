"""Reranking a candidate list by attribute similarity: plain functions and types, no HTTP, so the
formula and the retry are testable on a catalogue alone (`POST /rerank` is a thin route over them).

    score = weight * similarity + (1 - weight) * (1 - position / n)

`weight` 1 ranks by similarity alone; 0 keeps the submitted order. Ties keep the submitted order.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asen_search.index import Catalogue, CatalogueBusy, Part, SearchResult
from asen_search.service.catalogue.item_images import public_metadata


@dataclass(frozen=True)
class Reranked:
    id: str
    similarity: float
    position: int
    score: float
    metadata: dict[str, Any]


def score_known(catalogue: Catalogue, parts: Sequence[Part], ids: Sequence[str],
                attempts: int = 5) -> tuple[dict[str, float], dict[str, dict[str, Any]], list[str]]:
    """Similarities (the weighted sum over `parts`, index/composed.py; one part of weight 1 for a
    single-attribute query) and (public) metadata of the ids present in the catalogue, and the ids
    that are not. Retries when a concurrent delete removes an id between the check and the lookup;
    CatalogueBusy after `attempts` such races."""
    for _ in range(attempts):
        known = [i for i in ids if i in catalogue]
        try:
            scores = dict.fromkeys(known, 0.0)
            for part in parts:
                if part.weight and known:
                    for item_id, score in catalogue.score_ids(part.vector, part.attribute, known).items():
                        scores[item_id] += part.weight * score
            metadata = {i: public_metadata(catalogue.get(i).metadata) for i in known}
        except KeyError:
            continue
        return scores, metadata, [i for i in ids if i not in scores]
    raise CatalogueBusy(f"the catalogue changed during the request {attempts} times; retry")


def rerank(candidates: Sequence[str], scores: dict[str, float], metadata: dict[str, dict[str, Any]],
           weight: float) -> list[Reranked]:
    """The `candidates` that have a score, best first (see the module's formula); `candidates`
    must be unique."""
    n = len(candidates)
    hits = [Reranked(c, scores[c], p, weight * scores[c] + (1.0 - weight) * (1.0 - p / n), metadata[c])
            for p, c in enumerate(candidates) if c in scores]
    hits.sort(key=lambda h: (-h.score, h.position))
    return hits


GROUP_FETCH_MAX = 16_384  # most results one grouped search reads (Milvus's own top-k limit)


def grouped_search(fetch: Callable[[int], list[SearchResult]], catalogue_size: int, top_k: int,
                   group_by: str) -> list[SearchResult]:
    """The best result of each of the `top_k` best groups (items sharing the value of metadata field
    `group_by`; an item without the field is a group of its own), best first.

    `fetch(n)` returns the best `n` results of the query (a single-attribute or a composed search,
    filters applied); it is asked for more until `top_k` groups are found or the catalogue has no
    more, so a product with many near-identical photos cannot crowd the others out. Reads at most
    GROUP_FETCH_MAX results: groups found only beyond them are not returned."""
    fetch_n = min(max(4 * top_k, 32), GROUP_FETCH_MAX)
    while True:
        found = fetch(fetch_n)
        best: dict[object, SearchResult] = {}
        for hit in found:   # best first: the first hit of a group is its best
            value = hit.metadata.get(group_by, ("item", hit.id))
            key = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value
            best.setdefault(key, hit)
        if len(best) >= top_k or len(found) < fetch_n or fetch_n >= min(catalogue_size, GROUP_FETCH_MAX):
            return list(best.values())[:top_k]
        fetch_n = min(4 * fetch_n, GROUP_FETCH_MAX)

"""Composed queries: one query made of weighted parts, each a query vector in one attribute's space.

    score(item) = sum over parts of weight * <query_part, item's vector under the part's attribute>

With unit vectors that is the weighted sum of per-attribute cosine similarities; a negative weight
pushes an attribute away ("the same cut, but not this colour").

Two ways to answer, both behind `Catalogue.search_composed`:
- exact: every item's weighted sum (`CatalogueIndex` over Flat indexes: one matrix-vector product
  per part over the stored vectors; any catalogue with no positive part: a scan of all items);
- candidates (`candidate_search`): the union of each positive part's top `per_part` items from its
  own attribute's index (filters applied there), rescored exactly with the weighted sum. An item
  can only be missed when it is in no positive part's top `per_part`; the default was chosen from
  recall@10 against the exact answer at 100k items (docs/composed.md, bench/composed_recall.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .metadata import FilterValue
from .results import SearchResult

if TYPE_CHECKING:
    from .interface import Catalogue

COMPOSED_CANDIDATES = 400   # per positive part, before rescoring (docs/composed.md: recall@10 at 100k items)
MAX_PARTS = 64


@dataclass(frozen=True)
class Part:
    """One part of a composed query: a unit query vector `[dim]` under `attribute`, and its weight
    in [-1, 1]."""

    attribute: str
    vector: np.ndarray
    weight: float


def check_parts(parts: Sequence[Part], attributes: Sequence[str], dim: int) -> list[Part]:
    """The parts with float32 vectors; ValueError naming the problem: none, too many, an unknown
    attribute, an attribute twice, a weight outside [-1, 1], all weights zero, a bad vector."""
    parts = list(parts)
    if not parts:
        raise ValueError("a composed query needs at least one part")
    if len(parts) > MAX_PARTS:
        raise ValueError(f"a composed query has at most {MAX_PARTS} parts, got {len(parts)}")
    seen: set[str] = set()
    checked = []
    for n, part in enumerate(parts):
        if part.attribute not in attributes:
            raise ValueError(f"part {n}: unknown attribute {part.attribute!r}; known attributes: {list(attributes)}")
        if part.attribute in seen:
            raise ValueError(f"part {n}: attribute {part.attribute!r} appears in two parts; give each attribute "
                             "one part")
        seen.add(part.attribute)
        weight = part.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not -1.0 <= float(weight) <= 1.0:
            raise ValueError(f"part {n}: weight must be a number in [-1, 1], got {weight!r}")
        vector = np.asarray(part.vector, dtype=np.float32)
        if vector.shape != (dim,) or not np.isfinite(vector).all():
            raise ValueError(f"part {n}: the query vector must be {dim} finite numbers, got shape {vector.shape}")
        checked.append(Part(part.attribute, vector, float(weight)))
    if all(p.weight == 0.0 for p in checked):
        raise ValueError("every part has weight 0: give at least one part a non-zero weight")
    return checked


def top_results(ids: Sequence[str], scores: np.ndarray, metadata: Sequence[dict[str, Any]], k: int) -> list[SearchResult]:
    """The `k` best of aligned ids/scores/metadata, best first; ties broken by position."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [SearchResult(ids[i], float(scores[i]), metadata[i]) for i in order.tolist()]


def candidate_search(catalogue: Catalogue, parts: Sequence[Part], k: int, filters: Mapping[str, FilterValue] | None,
                     exclude: Sequence[str], per_part: int = COMPOSED_CANDIDATES) -> list[SearchResult]:
    """Candidates from each positive part's own index, rescored exactly (see the module docstring);
    through the `Catalogue` interface, so it serves either backend. Needs a positive part."""
    positive = [p for p in parts if p.weight > 0]
    assert positive, "candidate_search needs a part with a positive weight"
    wanted = max(per_part, k)
    metadata: dict[str, dict[str, Any]] = {}
    for part in positive:
        hits = catalogue.search(part.vector, part.attribute, wanted, filters=filters, exclude=exclude)
        for hit in hits:
            assert isinstance(hit, SearchResult)
            metadata.setdefault(hit.id, hit.metadata)
    ids = list(metadata)
    if not ids:
        return []
    total = np.zeros(len(ids), dtype=np.float64)
    for part in parts:
        if part.weight:
            scores = catalogue.score_ids(part.vector, part.attribute, ids)
            total += part.weight * np.array([scores[i] for i in ids], dtype=np.float64)
    return top_results(ids, total, [metadata[i] for i in ids], k)


def scan_search(catalogue: Catalogue, parts: Sequence[Part], k: int, filters: Mapping[str, FilterValue] | None,
                exclude: Sequence[str], batch_size: int = 4096) -> list[SearchResult]:
    """Exact over every item, read `batch_size` at a time through the `Catalogue` interface (the
    answer when no part has a positive weight, on a backend without a faster exact path)."""
    columns = [(catalogue.attributes.index(p.attribute), p) for p in parts if p.weight]
    skip = set(exclude)
    best: list[tuple[float, int, str, dict[str, Any]]] = []   # a min-heap of the k best (score, -order)
    order = 0
    for ids, vectors, metas in catalogue.iter_items(batch_size):
        total = np.zeros(len(ids), dtype=np.float64)
        for a, part in columns:
            total += part.weight * (vectors[:, a] @ part.vector)
        for item_id, score, meta in zip(ids, total.tolist(), metas):
            order += 1
            if item_id in skip or not _matches(meta, filters):
                continue
            entry = (score, -order, item_id, meta)
            if len(best) < k:
                heapq.heappush(best, entry)
            elif entry > best[0]:
                heapq.heapreplace(best, entry)
    best.sort(reverse=True)
    return [SearchResult(item_id, score, meta) for score, _, item_id, meta in best]


def _matches(metadata: Mapping[str, Any], filters: Mapping[str, FilterValue] | None) -> bool:
    """The catalogue's filter semantics on one item (index/metadata.py): every field matches; a
    list of wanted values means any of them; a list-valued field matches on any element."""
    for field, wanted in (filters or {}).items():
        values = list(wanted) if isinstance(wanted, list | tuple | set | frozenset) else [wanted]
        have = metadata.get(field, _MISSING)
        held = have if isinstance(have, list) else [have]
        if not any(_same(h, v) for h in held for v in values):
            return False
    return True


_MISSING = object()


def _same(have: Any, wanted: Any) -> bool:
    return have is not _MISSING and isinstance(have, bool) == isinstance(wanted, bool) and have == wanted

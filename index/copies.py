"""Copy search: how much of a protected design an item copies, over every attribute at once.

A plagiarised garment copies a design as a whole and modifies at most a few of its parts
(docs/protection.md). Its *copy score* against the design is the mean of its best `A - m` attribute
scores (`A` attributes, up to `m` of them modified: a changed collar cannot hide the rest), reported
with every attribute's score and the attributes judged *modified*: those scoring below the
attribute's own line (`changed_below`, calibrated on the validation split by `asen calibrate-copies`;
model/copy_calibration.py).

`search_copies` answers a copy query on any `Catalogue` (FAISS directory or Milvus) with the engine's
own searches, exactly:
- a threshold (`min_score`): an item whose copy score reaches it scores at least that under one
  attribute at least (a mean is at most its largest term), so the union of one range search per
  attribute holds every answer; where one of those range searches is cut at its cap, the items past
  the cap may still be the best copies, so the best `offset + max_results + 1` are found as a top k
  (below) and those passing kept;
- a top k: the best `n` items of each attribute are scored under every attribute; an item in none of
  those lists scores at most the `n`-th score of each attribute, so at most the copy score of those
  scores; while that bound beats the k-th copy score, `n` grows (x4) and the search runs again.
numpy only: the service and `asen scan --copies` share it. The copy score itself (`copy_scores`,
`kept_count`, `DEFAULT_MODIFIED`) is asen_search/copy_score.py's, shared with model/copy_calibration.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from asen_search.copy_score import DEFAULT_MODIFIED, copy_scores, kept_count

from .interface import Catalogue, Filters
from .results import SearchResult

FIRST_POOL = 64  # items per attribute the first top-k round scores
POOL_GROWTH = 4


@dataclass(frozen=True)
class CopyRule:
    """How copies are scored: the attributes (catalogue order), how many may be modified, and per
    attribute the score below which it counts as modified (none: no attribute is judged)."""

    attributes: tuple[str, ...]
    modified: int = DEFAULT_MODIFIED
    changed_below: Mapping[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return kept_count(len(self.attributes), self.modified)

    def judge(self, scores: Mapping[str, float]) -> list[str]:
        """The attributes judged modified, lowest score first."""
        low = [a for a in self.attributes if a in self.changed_below and scores[a] < self.changed_below[a]]
        return sorted(low, key=lambda a: scores[a])


@dataclass(frozen=True)
class CopyHit:
    id: str
    score: float
    scores: dict[str, float]  # every attribute's score against the design
    modified: list[str]  # the attributes judged modified


@dataclass(frozen=True)
class CopyAnswer:
    hits: list[CopyHit]
    truncated: bool  # a threshold search cut at max_results (more items pass)
    scored: int  # items scored under every attribute (the work done)
    total: int | None = None  # a threshold search: how many items pass (None: not counted, when cut)


def _score_all(
    catalogue: Catalogue, queries: Mapping[str, np.ndarray], rule: CopyRule, ids: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Every attribute's score of each of `ids` (present items) against the design's vectors."""
    try:
        by_attribute = {a: catalogue.score_ids(queries[a], a, ids) for a in rule.attributes}
    except KeyError:  # an item was removed meanwhile: score the ones still there
        present = [i for i in ids if _present(catalogue, i)]
        by_attribute = {a: catalogue.score_ids(queries[a], a, present) for a in rule.attributes}
    return {
        i: {a: float(by_attribute[a][i]) for a in rule.attributes}
        for i in ids
        if all(i in by_attribute[a] for a in rule.attributes)
    }


def _present(catalogue: Catalogue, item_id: str) -> bool:
    try:
        catalogue.get(item_id)
    except KeyError:
        return False
    return True


def _hits(scored: dict[str, dict[str, float]], rule: CopyRule) -> list[CopyHit]:
    if not scored:
        return []
    ids = list(scored)
    matrix = np.array([[scored[i][a] for a in rule.attributes] for i in ids], dtype=np.float64)
    totals = copy_scores(matrix, rule.kept)
    order = sorted(range(len(ids)), key=lambda j: (-totals[j], ids[j]))
    return [CopyHit(ids[j], float(totals[j]), scored[ids[j]], rule.judge(scored[ids[j]])) for j in order]


def search_copies(
    catalogue: Catalogue,
    queries: Mapping[str, np.ndarray],
    rule: CopyRule,
    *,
    top_k: int | None = None,
    min_score: float | None = None,
    max_results: int = 100,
    offset: int = 0,
    filters: Filters = None,
    exclude: Sequence[str] = (),
) -> CopyAnswer:
    """The items that copy the design whose vectors (one per attribute) are `queries`, best first:
    the `offset + top_k` best, or every item scoring at least `min_score` (at most `offset +
    max_results`); `hits` starts at `offset`."""
    missing = [a for a in rule.attributes if a not in queries]
    if missing:
        raise ValueError(f"no query vector for {', '.join(missing)}")
    if (top_k is None) == (min_score is None):
        raise ValueError("search_copies: give top_k or min_score")
    if min_score is not None:
        limit = offset + max_results
        ids: dict[str, None] = {}
        cut = False
        for a in rule.attributes:
            found, truncated, _ = catalogue.search_range_counted(
                queries[a], a, min_score, limit * POOL_GROWTH, filters=filters, exclude=exclude
            )
            cut = cut or truncated
            ids.update(dict.fromkeys(r.id for r in found))
        if not cut:
            passing = [
                h
                for h in _hits(_score_all(catalogue, queries, rule, list(ids)), rule)
                if h.score >= min_score
            ]
            return CopyAnswer(passing[offset:limit], len(passing) > limit, len(ids), len(passing))
        # an attribute's list was cut at its cap: an item past it may still copy better than every
        # item found, so take the best `limit + 1` exactly and keep those that pass
        best, scored = _top(catalogue, queries, rule, limit + 1, filters, exclude)
        passing = [h for h in best if h.score >= min_score]
        return CopyAnswer(passing[offset:limit], len(passing) > limit, len(ids) + scored)
    assert top_k is not None
    best, scored = _top(catalogue, queries, rule, offset + top_k, filters, exclude)
    return CopyAnswer(best[offset:], False, scored)


def _top(
    catalogue: Catalogue,
    queries: Mapping[str, np.ndarray],
    rule: CopyRule,
    want: int,
    filters: Filters,
    exclude: Sequence[str],
) -> tuple[list[CopyHit], int]:
    """The `want` best copies, best first, and how many items were scored (an empty catalogue: none)."""
    size = min(len(catalogue), catalogue.max_k or len(catalogue))
    if size == 0:
        return [], 0
    pool = min(max(FIRST_POOL, want), size)
    while True:
        ids: dict[str, None] = {}
        bounds = []
        for a in rule.attributes:
            found = cast(
                list[SearchResult], catalogue.search(queries[a], a, pool, filters=filters, exclude=exclude)
            )
            ids.update(dict.fromkeys(r.id for r in found))
            # an attribute that returned fewer than asked returned every item the filters let through
            bounds.append(found[-1].score if len(found) == pool else -np.inf)
        hits = _hits(_score_all(catalogue, queries, rule, list(ids)), rule)
        bound = (
            float(copy_scores(np.array(bounds, dtype=np.float64), rule.kept))
            if all(np.isfinite(bounds))
            else -np.inf
        )
        if pool >= size or bound == -np.inf or (len(hits) >= want and hits[want - 1].score >= bound):
            return hits[:want], len(ids)
        pool = min(pool * POOL_GROWTH, size)

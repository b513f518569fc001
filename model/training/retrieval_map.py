"""Retrieval MAP per the evaluation protocol of asen-spec.md; numpy only.

For each attribute, every query is ranked against all candidates of that attribute by dot product
of L2-normalised vectors (descending, ties in candidate order); a candidate is relevant iff its
value equals the query's. ``AP = (1/R) sum_{k relevant} precision@k`` (0 when R = 0). Per-attribute
MAP is the mean AP of its queries; the overall MAP is the mean over ALL queries (query-weighted).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_CHUNK_ELEMENTS = 1 << 22  # score-matrix elements per query chunk (~4M: tens of MB of temporaries)


def average_precision(relevant_sorted: np.ndarray) -> float:
    """AP of one ranking given as a bool array of relevance in ranked order.

    Relevant at ranks 1 and 3 of 4: AP = (1/1 + 2/3) / 2.

    >>> round(average_precision(np.array([True, False, True, False])), 4)
    0.8333
    >>> average_precision(np.array([False, True, True]))  # (1/2 + 2/3) / 2
    0.5833333333333333
    >>> average_precision(np.array([True, True]))
    1.0
    >>> average_precision(np.array([False, False]))  # no relevant item: 0 by definition
    0.0
    """
    relevant = np.asarray(relevant_sorted, dtype=bool).reshape(-1)
    return float(_ap_rows(relevant[None, :])[0])


def attribute_map(query_vecs: np.ndarray, query_values: np.ndarray,
                  cand_vecs: np.ndarray, cand_values: np.ndarray) -> np.ndarray:
    """AP of every query ``[nq]`` (float64) against all candidates of one attribute.

    ``query_vecs`` ``[nq, d]`` and ``cand_vecs`` ``[nc, d]`` are L2-normalised; ``*_values`` are the
    value ids ``[nq]`` / ``[nc]``. Ranking is by dot product, descending, ties broken stably by
    candidate order.

    The query ranks c2 (relevant), c1, c0 (relevant): AP = (1/1 + 2/3) / 2. With tied scores the
    earlier candidate ranks first, so in the second call the relevant c1 is at rank 2: AP = 1/2.

    >>> q = np.array([[0.6, 0.8]], dtype=np.float32)
    >>> c = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)
    >>> attribute_map(q, np.array([1]), c, np.array([1, 0, 1])).round(4).tolist()
    [0.8333]
    >>> tied = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    >>> attribute_map(np.array([[1.0, 0.0]]), np.array([1]), tied, np.array([0, 1])).tolist()
    [0.5]
    """
    query_vecs, cand_vecs = np.asarray(query_vecs), np.asarray(cand_vecs)
    query_values, cand_values = np.asarray(query_values).reshape(-1), np.asarray(cand_values).reshape(-1)
    if query_vecs.ndim != 2 or cand_vecs.ndim != 2 or query_vecs.shape[1] != cand_vecs.shape[1]:
        raise ValueError(f"expected [nq, d] and [nc, d] vectors, got {query_vecs.shape} and {cand_vecs.shape}")
    if len(query_values) != len(query_vecs) or len(cand_values) != len(cand_vecs):
        raise ValueError("one value id per query and per candidate vector is required")
    nq, nc = len(query_vecs), len(cand_vecs)
    aps = np.zeros(nq, dtype=np.float64)
    if nc == 0:
        return aps
    chunk = max(1, _CHUNK_ELEMENTS // nc)
    for start in range(0, nq, chunk):
        stop = min(start + chunk, nq)
        scores = query_vecs[start:stop] @ cand_vecs.T
        order = np.argsort(-scores, axis=1, kind="stable")
        relevant = cand_values[order] == query_values[start:stop, None]
        aps[start:stop] = _ap_rows(relevant)
    return aps


def _ap_rows(relevant: np.ndarray) -> np.ndarray:
    """AP of each row of a bool relevance matrix ``[n, k]`` in ranked order -> ``[n]``."""
    hits = np.cumsum(relevant, axis=1, dtype=np.float64)
    ranks = np.arange(1, relevant.shape[1] + 1, dtype=np.float64)
    total = hits[:, -1] if relevant.shape[1] else np.zeros(len(relevant))
    precision_sum = np.where(relevant, hits / ranks, 0.0).sum(axis=1)
    return np.divide(precision_sum, total, out=np.zeros(len(relevant)), where=total > 0)


@dataclass
class MapReport:
    """MAP as fractions in [0, 1]: overall (query-weighted), per attribute, and query counts."""

    overall: float
    per_attribute: dict[str, float]
    queries: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {"overall_map": self.overall, "per_attribute": dict(self.per_attribute),
                "queries": dict(self.queries)}

    def table(self) -> str:
        """Human-readable table, MAP x100 with 2 decimals, one row per attribute plus overall.

        >>> print(MapReport(0.7, {"collar": 0.75, "sleeve": 0.65}, {"collar": 10, "sleeve": 10}).table())
        attribute  queries    MAP
        collar          10  75.00
        sleeve          10  65.00
        overall         20  70.00
        """
        width = max([len("attribute"), len("overall"), *map(len, self.per_attribute)])
        lines = [f"{'attribute':<{width}}  {'queries':>7}  {'MAP':>5}"]
        for name, value in self.per_attribute.items():
            lines.append(f"{name:<{width}}  {self.queries[name]:>7d}  {100 * value:>5.2f}")
        total = sum(self.queries.values())
        lines.append(f"{'overall':<{width}}  {total:>7d}  {100 * self.overall:>5.2f}")
        return "\n".join(lines)


def map_report(per_attr_ap: dict[str, np.ndarray]) -> MapReport:
    """Per-attribute MAP and query-weighted overall MAP from each attribute's per-query APs.

    >>> r = map_report({"a": np.array([1.0, 0.5, 0.0]), "b": np.array([1.0])})
    >>> r.per_attribute, r.overall, r.queries
    ({'a': 0.5, 'b': 1.0}, 0.625, {'a': 3, 'b': 1})
    """
    if not per_attr_ap:
        raise ValueError("no attributes to report")
    empty = [name for name, aps in per_attr_ap.items() if np.asarray(aps).size == 0]
    if empty:
        raise ValueError(f"attributes without queries: {', '.join(empty)}")
    per_attribute = {name: float(np.mean(aps)) for name, aps in per_attr_ap.items()}
    queries = {name: int(np.asarray(aps).size) for name, aps in per_attr_ap.items()}
    overall = float(np.mean(np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1)
                                            for a in per_attr_ap.values()])))
    return MapReport(overall=overall, per_attribute=per_attribute, queries=queries)


def weighted_overall(maps: Sequence[float], counts: Sequence[int]) -> float:
    """Query-weighted mean of per-attribute MAPs (in whatever unit ``maps`` uses).

    The spec's FashionAI checksum: query-weighted 70.11, where the unweighted mean is 70.73.

    >>> counts = [422, 623, 535, 422, 341, 289, 703, 265]
    >>> maps = [66.75, 67.86, 59.65, 73.23, 75.72, 73.18, 74.40, 75.01]
    >>> round(weighted_overall(maps, counts), 2), round(sum(maps) / len(maps), 2)
    (70.11, 70.73)
    """
    if len(maps) != len(counts):
        raise ValueError(f"{len(maps)} MAPs but {len(counts)} counts")
    weights = np.asarray(counts, dtype=np.float64)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("counts must be non-negative with a positive total")
    return float(np.dot(np.asarray(maps, dtype=np.float64), weights) / weights.sum())

"""Retrieval MAP per the evaluation protocol of asen-spec.md; numpy only.

For each attribute, every query is ranked against all candidates of that attribute by dot product
of L2-normalised vectors (descending, ties in candidate order); a candidate is relevant iff its
value equals the query's. ``AP = (1/R) sum_{k relevant} precision@k`` (0 when R = 0). Per-attribute
MAP is the mean AP of its queries; the overall MAP is the mean over ALL queries (query-weighted).

Beside MAP, on the same rankings: Recall@K as metric learning reports it (the fraction of queries
with at least one relevant candidate in the top K: torchmetrics' `RetrievalHitRate`) for K = 1 and
10, and nDCG@10 with binary relevance (torchmetrics' `RetrievalNormalizedDCG(top_k=10)`); a query
without relevant candidates scores 0 on all of them. tests/model/test_retrieval_metrics.py checks
them against torchmetrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_CHUNK_ELEMENTS = 1 << 22  # score-matrix elements per query chunk (~4M: tens of MB of temporaries)
RANKING_METRICS = ("recall@1", "recall@10", "ndcg@10")


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


def attribute_map(
    query_vecs: np.ndarray, query_values: np.ndarray, cand_vecs: np.ndarray, cand_values: np.ndarray
) -> np.ndarray:
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
    return attribute_rankings(query_vecs, query_values, cand_vecs, cand_values)["ap"]


def attribute_rankings(
    query_vecs: np.ndarray, query_values: np.ndarray, cand_vecs: np.ndarray, cand_values: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-query AP and `RANKING_METRICS` (`{"ap": [nq], "recall@1": [nq], ...}`, float64) of
    `attribute_map`'s rankings.

    >>> q = np.array([[0.6, 0.8]], dtype=np.float32)
    >>> c = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)   # ranked c2, c1, c0
    >>> r = attribute_rankings(q, np.array([0]), c, np.array([1, 0, 1]))       # relevant: c1 only
    >>> r["recall@1"].tolist(), r["recall@10"].tolist(), round(float(r["ndcg@10"][0]), 4)   # 1 / log2(3)
    ([0.0], [1.0], 0.6309)
    """
    query_vecs, cand_vecs = np.asarray(query_vecs), np.asarray(cand_vecs)
    query_values, cand_values = np.asarray(query_values).reshape(-1), np.asarray(cand_values).reshape(-1)
    if query_vecs.ndim != 2 or cand_vecs.ndim != 2 or query_vecs.shape[1] != cand_vecs.shape[1]:
        raise ValueError(
            f"expected [nq, d] and [nc, d] vectors, got {query_vecs.shape} and {cand_vecs.shape}"
        )
    if len(query_values) != len(query_vecs) or len(cand_values) != len(cand_vecs):
        raise ValueError("one value id per query and per candidate vector is required")
    nq, nc = len(query_vecs), len(cand_vecs)
    out = {name: np.zeros(nq, dtype=np.float64) for name in ("ap", *RANKING_METRICS)}
    if nc == 0:
        return out
    chunk = max(1, _CHUNK_ELEMENTS // nc)
    for start in range(0, nq, chunk):
        stop = min(start + chunk, nq)
        scores = query_vecs[start:stop] @ cand_vecs.T
        order = np.argsort(-scores, axis=1, kind="stable")
        relevant = cand_values[order] == query_values[start:stop, None]
        out["ap"][start:stop] = _ap_rows(relevant)
        out["recall@1"][start:stop] = relevant[:, :1].any(axis=1)
        out["recall@10"][start:stop] = relevant[:, :10].any(axis=1)
        out["ndcg@10"][start:stop] = _ndcg_rows(relevant, 10)
    return out


def _ndcg_rows(relevant: np.ndarray, k: int) -> np.ndarray:
    """nDCG@k of each row of a bool relevance matrix in ranked order (binary gains) -> `[n]`."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))  # ranks 1..k
    top = relevant[:, :k]
    dcg = (top * discounts[: top.shape[1]]).sum(axis=1)
    ideal_hits = np.minimum(relevant.sum(axis=1), k)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_hits]
    return np.divide(dcg, ideal, out=np.zeros(len(relevant)), where=ideal > 0)


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
    # RANKING_METRICS per attribute and overall (query-weighted), when the rankings were kept
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics_overall: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "overall_map": self.overall,
            "per_attribute": dict(self.per_attribute),
            "queries": dict(self.queries),
        }
        if self.metrics:
            data.update(metrics=self.metrics, metrics_overall=self.metrics_overall)
        return data

    def table(self) -> str:
        """Human-readable table, MAP x100 with 2 decimals, one row per attribute plus overall.

        >>> print(MapReport(0.7, {"collar": 0.75, "sleeve": 0.65}, {"collar": 10, "sleeve": 10}).table())
        attribute  queries    MAP
        collar          10  75.00
        sleeve          10  65.00
        overall         20  70.00
        """
        width = max([len("attribute"), len("overall"), *map(len, self.per_attribute)])
        extra = [m for m in RANKING_METRICS if self.metrics_overall]
        heads = {"recall@1": "R@1", "recall@10": "R@10", "ndcg@10": "nDCG@10"}
        lines = [
            f"{'attribute':<{width}}  {'queries':>7}  {'MAP':>5}" + "".join(f"  {heads[m]:>7}" for m in extra)
        ]
        for name, value in self.per_attribute.items():
            lines.append(
                f"{name:<{width}}  {self.queries[name]:>7d}  {100 * value:>5.2f}"
                + "".join(f"  {100 * self.metrics[name][m]:>7.2f}" for m in extra)
            )
        total = sum(self.queries.values())
        lines.append(
            f"{'overall':<{width}}  {total:>7d}  {100 * self.overall:>5.2f}"
            + "".join(f"  {100 * self.metrics_overall[m]:>7.2f}" for m in extra)
        )
        return "\n".join(lines)


def ranking_report(per_attr: dict[str, dict[str, np.ndarray]]) -> MapReport:
    """`map_report` of each attribute's `attribute_rankings`, with the ranking metrics (x1, means
    of per-query values; overall query-weighted like MAP)."""
    report = map_report({name: r["ap"] for name, r in per_attr.items()})
    report.metrics = {
        name: {m: float(np.mean(r[m])) for m in RANKING_METRICS} for name, r in per_attr.items()
    }
    report.metrics_overall = {
        m: float(np.mean(np.concatenate([r[m] for r in per_attr.values()]))) for m in RANKING_METRICS
    }
    return report


def compare_table(reports: dict[str, MapReport]) -> str:
    """Several reports on the same split side by side: one column per report (numbered, with a
    legend), MAP per attribute, then overall MAP and ranking metrics (x100).

    >>> a = MapReport(0.7, {"collar": 0.75, "sleeve": 0.65}, {"collar": 10, "sleeve": 10})
    >>> b = MapReport(0.8, {"collar": 0.9, "sleeve": 0.7}, {"collar": 10, "sleeve": 10})
    >>> print(compare_table({"runs/a/best.pt": a, "runs/b/best.pt": b}))
    [1] runs/a/best.pt
    [2] runs/b/best.pt
    <BLANKLINE>
    MAP per attribute  queries    [1]    [2]
    collar                  10  75.00  90.00
    sleeve                  10  65.00  70.00
    overall MAP             20  70.00  80.00
    """
    if not reports:
        raise ValueError("nothing to compare")
    first = next(iter(reports.values()))
    names = list(first.per_attribute)
    if any(list(r.per_attribute) != names or r.queries != first.queries for r in reports.values()):
        raise ValueError("the reports are not of the same split: their attributes or query counts differ")
    heads = [f"[{i}]" for i in range(1, len(reports) + 1)]
    rows: list[tuple[str, str, list[float]]] = [
        (name, str(first.queries[name]), [r.per_attribute[name] for r in reports.values()]) for name in names
    ]
    rows.append(("overall MAP", str(sum(first.queries.values())), [r.overall for r in reports.values()]))
    labels = {"recall@1": "overall Recall@1", "recall@10": "overall Recall@10", "ndcg@10": "overall nDCG@10"}
    if all(r.metrics_overall for r in reports.values()):
        rows += [(labels[m], "", [r.metrics_overall[m] for r in reports.values()]) for m in RANKING_METRICS]
    width = max(len("MAP per attribute"), *(len(label) for label, _, _ in rows))
    lines = [f"[{i}] {path}" for i, path in enumerate(reports, 1)] + [""]
    lines.append(f"{'MAP per attribute':<{width}}  {'queries':>7}" + "".join(f"  {h:>5}" for h in heads))
    for label, count, values in rows:
        lines.append(f"{label:<{width}}  {count:>7}" + "".join(f"  {100 * v:>5.2f}" for v in values))
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
    overall = float(
        np.mean(np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in per_attr_ap.values()]))
    )
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

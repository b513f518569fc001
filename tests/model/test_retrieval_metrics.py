"""Recall@1, Recall@10 and nDCG@10 of `asen eval` against torchmetrics' retrieval metrics."""

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMAP, RetrievalNormalizedDCG

from asen_search.model.training.retrieval_map import attribute_rankings, ranking_report


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _torchmetrics(scores: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    nq, nc = scores.shape
    # torchmetrics counts a candidate as retrieved only at a positive score: cosines + 2 rank the same
    scores = scores + 2.0
    preds, target = torch.from_numpy(scores.ravel().astype(np.float64)), torch.from_numpy(relevant.ravel())
    indexes = torch.arange(nq).repeat_interleave(nc)
    metrics = {
        "ap": RetrievalMAP(),
        "recall@1": RetrievalHitRate(top_k=1),
        "recall@10": RetrievalHitRate(top_k=10),
        "ndcg@10": RetrievalNormalizedDCG(top_k=10),
    }
    return {name: float(metric(preds, target, indexes=indexes)) for name, metric in metrics.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_metrics_match_torchmetrics(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nq, nc, dim, n_values = 60, 300, 16, 4
    centres = rng.normal(size=(n_values + 1, dim))
    cand_values = rng.integers(0, n_values, nc)
    query_values = rng.integers(0, n_values + 1, nq)  # value n_values has no candidate: no relevant item
    cands = _unit(centres[cand_values] + rng.normal(scale=1.5, size=(nc, dim)))
    queries = _unit(centres[query_values] + rng.normal(scale=1.5, size=(nq, dim)))
    ours = attribute_rankings(queries, query_values, cands, cand_values)
    expected = _torchmetrics(
        queries.astype(np.float64) @ cands.T.astype(np.float64), query_values[:, None] == cand_values[None, :]
    )
    assert (query_values == n_values).any()
    for name, value in expected.items():
        assert ours[name].mean() == pytest.approx(value, abs=1e-6), name
    # the metrics are not trivially 0 or 1 here, so the comparison means something
    assert 0.05 < ours["recall@1"].mean() < 0.95 and 0.05 < ours["ndcg@10"].mean() < 0.95


def test_report_is_query_weighted_like_map() -> None:
    a = {
        "ap": np.array([1.0, 0.0]),
        "recall@1": np.array([1.0, 0.0]),
        "recall@10": np.array([1.0, 1.0]),
        "ndcg@10": np.array([1.0, 0.5]),
    }
    b = {
        "ap": np.array([0.5]),
        "recall@1": np.array([0.0]),
        "recall@10": np.array([1.0]),
        "ndcg@10": np.array([0.2]),
    }
    report = ranking_report({"a": a, "b": b})
    assert report.metrics["a"] == {"recall@1": 0.5, "recall@10": 1.0, "ndcg@10": 0.75}
    assert report.metrics_overall["recall@1"] == pytest.approx(1 / 3)
    assert report.metrics_overall["ndcg@10"] == pytest.approx(1.7 / 3)
    assert report.overall == pytest.approx(0.5) and "R@10" in report.table()

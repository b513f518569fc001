"""MAP per the spec's protocol, checked against a slow, obvious reference loop and the checksum."""

from __future__ import annotations

import numpy as np
import pytest

from asen_search.model.training.retrieval_map import (
    MapReport,
    attribute_map,
    average_precision,
    map_report,
    weighted_overall,
)

COUNTS = [422, 623, 535, 422, 341, 289, 703, 265]
MAPS = [66.75, 67.86, 59.65, 73.23, 75.72, 73.18, 74.40, 75.01]


def reference_ap(query: np.ndarray, value: int, cands: np.ndarray, cand_values: np.ndarray) -> float:
    """AP by the definition: walk the ranking, add precision@k at every relevant rank."""
    scores = [float(np.dot(query, c)) for c in cands]
    ranking = sorted(range(len(cands)), key=lambda i: (-scores[i], i))
    n_relevant = sum(1 for v in cand_values if v == value)
    if n_relevant == 0:
        return 0.0
    hits, total = 0, 0.0
    for k, i in enumerate(ranking, start=1):
        if cand_values[i] == value:
            hits += 1
            total += hits / k
    return total / n_relevant


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_average_precision_hand_worked() -> None:
    assert average_precision(np.array([True, False, True, False])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([False, False, False, True])) == pytest.approx(1 / 4)
    assert average_precision(np.array([], dtype=bool)) == 0.0
    assert average_precision(np.zeros(5, dtype=bool)) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attribute_map_matches_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q, c = _unit(rng, 23, 16), _unit(rng, 157, 16)
    qv, cv = rng.integers(0, 4, size=23), rng.integers(0, 4, size=157)
    qv[0] = 7  # a query with no relevant candidate: AP 0
    expected = [reference_ap(q[i], qv[i], c, cv) for i in range(len(q))]
    np.testing.assert_allclose(attribute_map(q, qv, c, cv), expected, rtol=1e-12)
    assert attribute_map(q, qv, c, cv)[0] == 0.0


def test_chunking_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    q, c = _unit(rng, 50, 8), _unit(rng, 40, 8)
    qv, cv = rng.integers(0, 3, size=50), rng.integers(0, 3, size=40)
    whole = attribute_map(q, qv, c, cv)
    monkeypatch.setattr("asen_search.model.training.retrieval_map._CHUNK_ELEMENTS", 7 * 40)
    np.testing.assert_array_equal(attribute_map(q, qv, c, cv), whole)


def test_ties_break_by_candidate_order() -> None:
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    c = np.zeros((4, 2), dtype=np.float32)  # all scores tie
    assert attribute_map(q, np.array([1]), c, np.array([0, 1, 0, 1])).tolist() == [(1 / 2 + 2 / 4) / 2]
    assert attribute_map(q, np.array([1]), c, np.array([1, 1, 0, 0])).tolist() == [1.0]


def test_attribute_map_edge_shapes() -> None:
    q = np.eye(2, dtype=np.float32)
    assert attribute_map(q, np.array([0, 1]), np.zeros((0, 2), np.float32), np.array([])).tolist() == [0, 0]
    with pytest.raises(ValueError, match="vectors"):
        attribute_map(q, np.array([0, 1]), np.zeros((3, 5), np.float32), np.zeros(3))
    with pytest.raises(ValueError, match="one value id"):
        attribute_map(q, np.array([0]), q, np.array([0, 1]))


def test_spec_checksum_query_weighted() -> None:
    assert round(weighted_overall(MAPS, COUNTS), 2) == 70.11
    assert round(float(np.mean(MAPS)), 2) == 70.73
    # The same through map_report: per-query APs whose attribute means are the spec's MAPs.
    report = map_report({f"a{i}": np.full(n, m / 100) for i, (n, m) in enumerate(zip(COUNTS, MAPS))})
    assert round(100 * report.overall, 2) == 70.11
    assert report.queries["a6"] == 703 and sum(report.queries.values()) == 3600
    assert report.per_attribute["a2"] == pytest.approx(0.5965)


def test_weighted_overall_validates() -> None:
    with pytest.raises(ValueError):
        weighted_overall([1.0, 2.0], [1])
    with pytest.raises(ValueError):
        weighted_overall([1.0], [0])


def test_map_report_json_and_table() -> None:
    report = map_report({"collar": np.array([1.0, 0.5]), "sleeve_length": np.array([0.25])})
    assert report.to_json() == {
        "overall_map": pytest.approx(1.75 / 3),
        "per_attribute": {"collar": 0.75, "sleeve_length": 0.25},
        "queries": {"collar": 2, "sleeve_length": 1},
    }
    rows = report.table().splitlines()
    assert rows[1].split() == ["collar", "2", "75.00"]
    assert rows[2].split() == ["sleeve_length", "1", "25.00"]
    assert rows[3].split() == ["overall", "3", "58.33"]
    assert isinstance(report, MapReport)


def test_map_report_rejects_attribute_without_queries() -> None:
    with pytest.raises(ValueError, match="without queries: b"):
        map_report({"a": np.array([1.0]), "b": np.array([])})

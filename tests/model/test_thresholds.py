"""Score thresholds' precision curves (model/thresholds.py) against direct counts on hand-made scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asen_search.model.data.dataset import Attribute, Tagged
from asen_search.model.thresholds import (
    MIN_SUPPORT,
    NoThreshold,
    Thresholds,
    compute_thresholds,
    load_thresholds,
    pair_scores,
    plot_curves,
    pr_curve,
    sidecar_path,
)


def test_precision_and_recall_at_every_threshold_against_a_direct_count() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.5, 0.4, 0.1])
    same = np.array([1, 1, 0, 1, 0, 1, 0], dtype=bool)
    curve = pr_curve(scores, same, points=100)
    assert curve.thresholds.tolist() == [0.9, 0.8, 0.7, 0.5, 0.4, 0.1]  # tied scores are one threshold
    for t, p, r, n in zip(curve.thresholds, curve.precision, curve.recall, curve.support):
        kept = scores >= t
        assert n == kept.sum()
        assert p == pytest.approx(same[kept].mean())
        assert r == pytest.approx(same[kept].sum() / same.sum())
    assert (curve.pairs, curve.positives) == (7, 4)


def test_a_long_curve_keeps_points_evenly_by_rank_and_exact_values() -> None:
    rng = np.random.default_rng(1)
    scores = rng.uniform(-1, 1, 10_000)
    same = rng.uniform(size=10_000) < (scores + 1) / 2
    curve = pr_curve(scores, same, points=64)
    assert len(curve.thresholds) == 64 and np.all(np.diff(curve.thresholds) < 0)
    for t, p in zip(curve.thresholds[::9], curve.precision[::9]):
        assert p == pytest.approx(same[scores >= t].mean())


def test_score_for_a_precision_is_the_lowest_threshold_that_keeps_it_above() -> None:
    # 200 same-value pairs scoring 0.9..0.8, then 100 others at 0.75, then 100 same-value at 0.7
    scores = np.r_[np.linspace(0.9, 0.8, 200), np.full(100, 0.75), np.full(100, 0.7)]
    same = np.r_[np.ones(200, bool), np.zeros(100, bool), np.ones(100, bool)]
    curve = pr_curve(scores, same, points=1000)
    assert curve.score_for(0.99) == pytest.approx(0.8)  # precision drops to 2/3 at 0.75 ...
    assert curve.score_for(0.6) == pytest.approx(0.7)  # ... and every threshold down to 0.7 keeps >= 0.6
    assert curve.precision_at(0.85) == 1.0 and curve.precision_at(0.75) == pytest.approx(200 / 300)
    assert curve.precision_at(2.0) == 1.0 and curve.precision_at(-2.0) == pytest.approx(300 / 400)
    with pytest.raises(NoThreshold, match="no score reaches precision"):
        pr_curve(scores, ~same, points=1000).score_for(0.9)


def test_a_precision_seen_only_on_a_few_top_pairs_is_not_trusted() -> None:
    scores = np.r_[np.linspace(1.0, 0.95, MIN_SUPPORT - 10), np.linspace(0.9, 0.0, 500)]
    same = np.r_[np.ones(MIN_SUPPORT - 10, bool), np.zeros(500, bool)]
    with pytest.raises(NoThreshold):
        pr_curve(scores, same).score_for(0.9)


def test_pairs_are_every_pair_of_rows_once() -> None:
    vectors = np.eye(3, dtype=np.float32)
    scores, same = pair_scores(vectors, np.array([0, 0, 1]))
    assert len(scores) == 3 and same.tolist() == [True, False, False]


def test_thresholds_round_trip_and_the_file_beside_the_checkpoint_wins_only_for_its_model(
    tmp_path: Path,
) -> None:
    attrs = (Attribute("colour", ("red", "blue")),)
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(60, 4)).astype(np.float32)
    rows = Tagged(np.arange(60), np.zeros(60, int), (vectors[:, 0] > 0).astype(int))
    inside = compute_thresholds(attrs, rows, vectors)
    beside = Thresholds(dict(inside.curves), fingerprint="abc")
    beside.curves["colour"].thresholds[0] = 42.0  # tell them apart
    checkpoint = tmp_path / "best.pt"
    assert sidecar_path(checkpoint) == tmp_path / "best.thresholds.json"
    sidecar_path(checkpoint).write_text(json.dumps(beside.to_json()))
    stored = compute_thresholds(attrs, rows, vectors).to_json()
    assert load_thresholds(checkpoint, "abc", stored).curves["colour"].thresholds[0] == 42.0
    assert load_thresholds(checkpoint, "other", stored).curves["colour"].thresholds[0] != 42.0
    assert load_thresholds(tmp_path / "none.pt", "abc", None) is None
    plot_curves(tmp_path / "pr.png", inside, "t")
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"

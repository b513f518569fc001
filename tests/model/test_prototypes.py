"""Value prototypes and tag calibration (model/prototypes.py) and their evaluation
(model/training/tagging.py): each against a direct computation on hand-made numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asen_search.model.data.dataset import Attribute, Tagged
from asen_search.model.prototypes import (
    NoPrototype,
    Prototypes,
    fit_temperature,
    prototypes_from_vectors,
    reliability,
    sample_rows,
)
from asen_search.model.training.tagging import plot_confusion, plot_reliability, tagging_report

ATTRS = (Attribute("neckline", ("round", "v_neck", "square")), Attribute("colour", ("red", "blue")))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at() -> None:
    rng = np.random.default_rng(0)
    sims = rng.uniform(-1, 1, size=(20_000, 4))
    for true in (0.05, 0.2):
        logits = sims / true
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        labels = np.array([rng.choice(4, p=p) for p in probs])
        assert fit_temperature(sims, labels) == pytest.approx(true, rel=0.1)


def test_fit_temperature_skips_rows_whose_value_has_no_prototype() -> None:
    sims = np.array([[0.9, -np.inf], [0.1, -np.inf], [0.8, -np.inf]])
    assert np.isfinite(fit_temperature(sims, np.array([0, 1, 0])))


def test_reliability_bins_against_a_direct_count() -> None:
    confidence = np.array([0.05, 0.15, 0.15, 0.55, 0.95, 0.95, 0.95, 1.0])
    correct = np.array([0, 0, 1, 1, 1, 1, 0, 1], dtype=float)
    stats = reliability(confidence, correct, bins=10)
    assert stats["count"] == [1, 2, 0, 0, 0, 1, 0, 0, 0, 4]
    assert stats["accuracy"][1] == 0.5 and stats["accuracy"][9] == 0.75 and stats["accuracy"][2] is None
    expected_ece = (1 * 0.05 + 2 * abs(0.5 - 0.15) + 1 * abs(1 - 0.55) + 4 * abs(0.75 - 0.9625)) / 8
    assert stats["ece"] == pytest.approx(expected_ece)


def test_prototypes_are_normalised_means_and_tag_by_nearest() -> None:
    rows = Tagged(np.arange(6), np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 0, 1, 1]))
    vectors = _unit(np.array([[1, 0], [1, 0.2], [0, 1], [1, 1], [-1, 0], [-1, 0.1]], dtype=np.float64))
    protos, counts = prototypes_from_vectors(ATTRS, rows, vectors, 2)
    mean = vectors[:2].mean(axis=0)
    assert protos["neckline"][0] == pytest.approx(mean / np.linalg.norm(mean))
    assert counts == {"neckline": [2, 1, 0], "colour": [1, 2]}
    assert np.isnan(protos["neckline"][2]).all(), "a value without training rows has no prototype"
    tables = Prototypes(ATTRS, protos, counts, {"neckline": 0.1, "colour": 0.1})
    with pytest.raises(NoPrototype, match="no training images"):
        tables.vector("neckline", "square")
    with pytest.raises(NoPrototype, match="no value 'turtle'"):
        tables.vector("neckline", "turtle")
    tags = tables.tag(_unit(np.array([[0.1, 1.0], [-1.0, 0.0]])))
    assert tags["neckline"][0] == "v_neck" and tags["colour"][0] == "blue"
    probs = tables.probabilities("neckline", _unit(np.array([[0.1, 1.0]])))[0]
    assert probs[2] == 0 and probs.sum() == pytest.approx(1.0)
    sims = np.array([vectors[0] @ protos["neckline"][0], vectors[0] @ protos["neckline"][1]]) / 0.1
    expected = np.exp(sims - sims.max()) / np.exp(sims - sims.max()).sum()
    assert tables.probabilities("neckline", vectors[:1])[0][:2] == pytest.approx(expected)


def test_sample_rows_caps_each_value_and_takes_whole_images() -> None:
    fids = np.repeat(np.arange(100), 2)
    rows = Tagged(fids, np.tile([0, 1], 100), np.concatenate([np.zeros(100, int), np.arange(100) % 2]))
    picked = sample_rows(rows, 2, per_value=10)
    for a, v in {(0, 0), (1, 0), (1, 1)}:
        assert ((picked.attrs == a) & (picked.values == v)).sum() == 10
    assert len(sample_rows(rows, 2, per_value=0)) == len(rows)


def test_tagging_report_against_a_direct_count(tmp_path: Path) -> None:
    protos = {
        "neckline": _unit(np.array([[1.0, 0], [0, 1.0], [-1.0, 0]])),
        "colour": _unit(np.array([[1.0, 1], [1.0, -1]])),
    }
    tables = Prototypes(
        ATTRS, protos, {"neckline": [1, 1, 1], "colour": [1, 1]}, {"neckline": 0.05, "colour": 0.05}
    )
    vectors = _unit(
        np.array([[1, 0.1], [0.9, -0.2], [0.1, 1], [-1, 0.3], [0.2, 1], [1, 0.9], [1, -0.8], [1, 0.7]])
    )
    rows = Tagged(np.arange(8), np.array([0, 0, 0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 2, 2, 0, 1, 1]))
    report = tagging_report(ATTRS, tables, rows, vectors, k=2)
    # neckline rows predicted: round, round, v_neck, square, v_neck (the last is wrong)
    assert report.accuracy["neckline"] == pytest.approx(4 / 5)
    assert report.confusion["neckline"] == [[2, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert report.accuracy["colour"] == pytest.approx(2 / 3) and report.worst == "colour"
    # value queries, top 2 of each attribute's rows: round -> rows 0, 1 (both round); v_neck -> rows 4, 2
    # (one v_neck); square -> rows 3, then row 1 or 2 by cosine: one square
    assert report.value_precision_per_value["neckline"] == pytest.approx(
        {"round": 1.0, "v_neck": 0.5, "square": 0.5}
    )
    assert report.rows == {"neckline": 5, "colour": 3}
    assert "tag accuracy" in report.table()
    plot_confusion(tmp_path / "c.png", ATTRS[0], report.confusion["neckline"], report.accuracy["neckline"])
    plot_reliability(tmp_path / "r.png", report.reliability, "test")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "r.png").stat().st_size > 1000

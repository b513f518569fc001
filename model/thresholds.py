"""Calibrated thresholds: what a similarity score means, per attribute.

On the validation split, every pair of images labelled for an attribute is a "same value" pair or
not; sorting the pairs by their score under that attribute gives, for every threshold t, the
precision (the share of pairs scoring >= t that have the same value) and the recall (the share of
same-value pairs scoring >= t). `min_precision` is translated into the lowest threshold whose
precision, and that of every higher threshold, is at least the asked precision.

Kept in the checkpoint (`extra["thresholds"]`, written at the end of training with the prototypes)
and, recomputed by `asen eval` on the whole validation split, beside it in `<checkpoint>.thresholds.json`
(which then wins, when it names the checkpoint's fingerprint): the checkpoint file itself is never
rewritten by an evaluation, so indexes built with it stay valid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asen_search.model.data.dataset import Attribute, Tagged

POINTS = 256  # thresholds kept per curve (by rank, so evenly over the pairs)
MIN_SUPPORT = 50  # pairs at or above a threshold before its precision is trusted for min_precision
MAX_ROWS = 2000  # rows per attribute paired (a random sample beyond; 2M pairs)
LEVELS = (0.9, 0.95, 0.99)  # the precisions GET /attributes lists


class NoThreshold(ValueError):
    """A precision the validation split never reaches, or an attribute without a curve."""


@dataclass
class Curve:
    """One attribute's precision and recall at descending thresholds `[m]`, and how many pairs score
    at least each threshold."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    pairs: int
    positives: int

    def score_for(self, precision: float) -> float:
        """The lowest threshold at which the precision, and that of every higher threshold with at
        least MIN_SUPPORT pairs, is at least `precision`; NoThreshold when no such threshold exists."""
        trusted = np.flatnonzero(self.support >= MIN_SUPPORT)
        if not len(trusted):
            raise NoThreshold(f"the validation split has fewer than {MIN_SUPPORT} pairs for this attribute")
        start = int(trusted[0])
        bad = np.flatnonzero(self.precision[start:] < precision)
        first_bad = start + (int(bad[0]) if len(bad) else len(self.thresholds) - start)
        if first_bad == start:
            raise NoThreshold(
                f"no score reaches precision {precision:g} on the validation split (among the "
                f"{self.support[start]} best-scoring pairs, at {self.thresholds[start]:.4f}, it is "
                f"{self.precision[start]:.3f})"
            )
        return float(self.thresholds[first_bad - 1])

    def precision_at(self, score: float) -> float:
        """Estimated precision of everything scoring at least `score` (the curve's point at the
        highest threshold not above it; the first point's above the curve)."""
        at = int(np.searchsorted(-self.thresholds, -score, side="left"))
        return float(self.precision[min(at, len(self.precision) - 1)])

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds.tolist(),
            "precision": self.precision.tolist(),
            "recall": self.recall.tolist(),
            "support": self.support.tolist(),
            "pairs": self.pairs,
            "positives": self.positives,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Curve:
        return cls(
            np.asarray(data["thresholds"], np.float64),
            np.asarray(data["precision"], np.float64),
            np.asarray(data["recall"], np.float64),
            np.asarray(data["support"], np.int64),
            int(data["pairs"]),
            int(data["positives"]),
        )


def pr_curve(scores: np.ndarray, same: np.ndarray, points: int = POINTS) -> Curve:
    """Precision and recall of "score >= t means same value" at `points` thresholds chosen by rank
    (every distinct score when there are fewer)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], same[order].astype(np.int64)
    tp = np.cumsum(hits)
    # the last index of each run of equal scores: a threshold keeps every pair scoring at least it
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    if len(ends) > points:
        ends = ends[np.unique(np.linspace(0, len(ends) - 1, points).round().astype(int))]
    positives = int(hits.sum())
    precision = tp[ends] / (ends + 1)
    recall = tp[ends] / max(positives, 1)
    return Curve(sorted_scores[ends].astype(np.float64), precision, recall, ends + 1, len(scores), positives)


def pair_scores(
    vectors: np.ndarray, values: np.ndarray, max_rows: int = MAX_ROWS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and same-value labels of every pair of rows (vectors `[n, dim]` under one attribute)."""
    if len(vectors) > max_rows:
        pick = np.random.default_rng(seed).choice(len(vectors), max_rows, replace=False)
        vectors, values = vectors[pick], values[pick]
    upper = np.triu_indices(len(vectors), k=1)
    sims = (vectors @ vectors.T)[upper]
    return sims.astype(np.float64), (values[:, None] == values[None, :])[upper]


@dataclass
class Thresholds:
    """One curve per attribute, and the checkpoint fingerprint a file beside it was made for."""

    curves: dict[str, Curve]
    fingerprint: str = ""

    def curve(self, attribute: str) -> Curve:
        try:
            return self.curves[attribute]
        except KeyError:
            raise NoThreshold(f"no precision curve for attribute {attribute!r}") from None

    def levels(self, attribute: str) -> dict[str, float | None]:
        """The score for each of LEVELS (None where the validation split never reaches it)."""
        out: dict[str, float | None] = {}
        for level in LEVELS:
            try:
                out[f"{level:g}"] = round(self.curve(attribute).score_for(level), 4)
            except NoThreshold:
                out[f"{level:g}"] = None
        return out

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "curves": {a: c.to_json() for a, c in self.curves.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Thresholds | None:
        if not data:
            return None
        return cls(
            {a: Curve.from_json(c) for a, c in data["curves"].items()}, str(data.get("fingerprint", ""))
        )


def compute_thresholds(attributes: Sequence[Attribute], rows: Tagged, vectors: np.ndarray) -> Thresholds:
    """A curve per attribute from labelled rows `[n]` and their vectors `[n, dim]` (under the row's
    attribute); attributes with fewer than two rows are left out."""
    curves = {}
    for a, attr in enumerate(attributes):
        mask = rows.attrs == a
        if mask.sum() >= 2:
            scores, same = pair_scores(vectors[mask], rows.values[mask])
            curves[attr.name] = pr_curve(scores, same)
    return Thresholds(curves)


def sidecar_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".thresholds.json")


def load_thresholds(
    checkpoint: str | Path, fingerprint: str, stored: dict[str, Any] | None
) -> Thresholds | None:
    """The curves beside the checkpoint when they were made for it, else those inside it (or None)."""
    path = sidecar_path(checkpoint)
    if path.is_file():
        beside = Thresholds.from_json(json.loads(path.read_text()))
        if beside is not None and beside.fingerprint == fingerprint:
            return beside
    return Thresholds.from_json(stored)


def plot_curves(path: Path, thresholds: Thresholds, title: str) -> None:
    """Precision and recall against the score, one panel per attribute, with the 0.9/0.95/0.99 scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(thresholds.curves)
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        curve = thresholds.curves[name]
        axis.plot(curve.thresholds, curve.precision, label="precision")
        axis.plot(curve.thresholds, curve.recall, label="recall")
        for level, score in thresholds.levels(name).items():
            if score is not None:
                axis.axvline(score, color="grey", lw=0.7, ls=":")
                axis.text(score, 0.02, level, rotation=90, fontsize=7, color="grey")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("score (cosine)", fontsize=8)
        axis.set_ylim(0, 1.02)
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

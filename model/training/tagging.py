"""How well the value prototypes tag and find (model/prototypes.py), measured on a labelled split for
`asen eval`: tagging accuracy and confusion per attribute, the reliability of the stated confidences,
and the precision@10 of search by value. Plots with matplotlib."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asen_search.model.data.dataset import Attribute, Tagged
from asen_search.model.prototypes import Prototypes, reliability


@dataclass
class TaggingReport:
    """Per attribute: accuracy, confusion matrix (rows: true value, columns: predicted), value-query
    precision@k (mean over values, and per value); pooled reliability of the confidences."""

    accuracy: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    confusion: dict[str, list[list[int]]] = field(default_factory=dict)
    value_precision: dict[str, float] = field(default_factory=dict)
    value_precision_per_value: dict[str, dict[str, float]] = field(default_factory=dict)
    reliability: dict[str, Any] = field(default_factory=dict)
    k: int = 10

    @property
    def worst(self) -> str:
        return min(self.accuracy, key=lambda a: self.accuracy[a])

    def table(self) -> str:
        lines = [f"{'attribute':<24} {'rows':>6} {'tag accuracy':>13} {f'value P@{self.k}':>12}"]
        for name, acc in self.accuracy.items():
            lines.append(
                f"{name:<24} {self.rows[name]:>6} {100 * acc:>13.2f} {100 * self.value_precision[name]:>12.2f}"
            )
        mean_acc = float(np.mean(list(self.accuracy.values())))
        mean_p = float(np.mean(list(self.value_precision.values())))
        lines.append(
            f"{'mean':<24} {sum(self.rows.values()):>6} {100 * mean_acc:>13.2f} {100 * mean_p:>12.2f}"
        )
        lines.append(
            f"expected calibration error of the confidences: {100 * self.reliability['ece']:.2f} points"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "rows": self.rows,
            "confusion": self.confusion,
            "value_precision_at_k": self.value_precision,
            "value_precision_per_value": self.value_precision_per_value,
            "k": self.k,
            "reliability": self.reliability,
            "worst": self.worst,
        }


def tagging_report(
    attributes: Sequence[Attribute], prototypes: Prototypes, rows: Tagged, vectors: np.ndarray, k: int = 10
) -> TaggingReport:
    """Each labelled row `[n]` (vector `[n, dim]` under the row's attribute) tagged against its
    attribute's prototypes; each value's prototype used as a query over the rows of its attribute."""
    report = TaggingReport(k=k)
    confidences, correct = [], []
    for a, attr in enumerate(attributes):
        mask = rows.attrs == a
        if not mask.any():
            continue
        truth = rows.values[mask]
        probs = prototypes.probabilities(attr.name, vectors[mask])
        predicted = probs.argmax(axis=1)
        confusion = np.zeros((len(attr.values), len(attr.values)), dtype=np.int64)
        np.add.at(confusion, (truth, predicted), 1)
        report.accuracy[attr.name] = float((predicted == truth).mean())
        report.rows[attr.name] = int(mask.sum())
        report.confusion[attr.name] = confusion.tolist()
        confidences.append(probs.max(axis=1))
        correct.append(predicted == truth)
        sims = prototypes.similarities(attr.name, vectors[mask])  # [rows, values]
        per_value = {}
        for v, value in enumerate(attr.values):
            if not np.isfinite(sims[:, v]).all():
                continue
            top = np.argsort(-sims[:, v], kind="stable")[:k]
            per_value[value] = float((truth[top] == v).mean())
        report.value_precision_per_value[attr.name] = per_value
        report.value_precision[attr.name] = float(np.mean(list(per_value.values()))) if per_value else 0.0
    report.reliability = reliability(np.concatenate(confidences), np.concatenate(correct).astype(np.float64))
    return report


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(path: Path, attribute: Attribute, confusion: list[list[int]], accuracy: float) -> None:
    """The confusion matrix (rows: true value, columns: predicted), counts written in the cells."""
    plt = pyplot()
    matrix = np.asarray(confusion)
    size = 1.2 + 0.9 * len(attribute.values)
    fig, axis = plt.subplots(figsize=(size + 1.5, size))
    shown = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(attribute.values)), attribute.values, rotation=35, ha="right")
    axis.set_yticks(range(len(attribute.values)), attribute.values)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"{attribute.name}: tagging accuracy {100 * accuracy:.1f}%")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            color="white" if count > matrix.max() / 2 else "black",
            fontsize=9,
        )
    fig.colorbar(shown, ax=axis, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(path: Path, stats: dict[str, Any], title: str) -> None:
    """Accuracy against stated confidence per bin (a calibrated model lies on the diagonal), with
    the number of rows per bin."""
    plt = pyplot()
    edges = np.asarray(stats["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    have = [i for i, n in enumerate(stats["count"]) if n]
    top.plot(
        [stats["confidence"][i] for i in have], [stats["accuracy"][i] for i in have], "o-", label="measured"
    )
    top.set_ylabel("accuracy")
    top.set_title(f"{title}\nexpected calibration error {100 * stats['ece']:.2f} points")
    top.legend(loc="upper left")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    bottom.bar(centres, stats["count"], width=edges[1] - edges[0], color="#8ab", edgecolor="white")
    bottom.set_yscale("log")
    bottom.set_xlabel("stated confidence")
    bottom.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Copy thresholds calibrated without copy labels: what a copy score means, from class labels alone.

Users have attribute labels, not plagiarism labels. On their validation split:
- every image and a new photograph of it (`model/augment.py`: another framing, rotation, exposure,
  occluders, compression) is a *same design* pair: its copy score is what a copy that changed
  nothing scores, and its attribute scores are what an unchanged attribute scores;
- every two different images that share their labelled values (tagged with a common attribute, the
  same value in each attribute both are tagged with) are a *look-alike* pair: the same classes, another
  garment, the hardest kind of non-copy a catalogue holds.
The false-match rate of a copy score t is the share of look-alike pairs scoring at least t (an
upper estimate for a catalogue, most of whose items share fewer values with a design); the threshold
for a target rate is the lowest score that keeps it. An attribute counts as *modified* in a match
when it scores below `changed_below[attribute]`: the score that best separates unchanged attributes
(same-design pairs) from changed ones (pairs of different values under that attribute).

Kept beside the checkpoint, `<checkpoint>.copies.json`, with the checkpoint's fingerprint (as the
precision curves: model/thresholds.py); written at the end of `asen train` and by `asen calibrate-copies`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from asen_search.copy_score import DEFAULT_MODIFIED, copy_scores, kept_count
from asen_search.model.augment import rephotograph
from asen_search.model.data.dataset import AttributeDataset
from asen_search.model.nn.preprocess import load_image

POINTS = 256
FORMAT = 1
MIN_LOOKALIKES = 20  # look-alike pairs below which a calibration is refused
CALIBRATION_IMAGES = 700  # validation images a calibration at the end of training uses at most


class NoCopyThreshold(ValueError):
    """A false-match rate or precision the validation split cannot vouch for."""


@dataclass
class CopyCalibration:
    """Copy-score thresholds against their false-match rate (look-alike pairs scoring at least it)
    and true-match rate (same-design pairs), descending; per attribute, the "modified" line."""

    modified: int
    thresholds: np.ndarray
    false_match_rate: np.ndarray
    true_match_rate: np.ndarray
    changed_below: dict[str, float]
    lookalike_pairs: int
    same_pairs: int
    fingerprint: str = ""

    def score_for_rate(self, rate: float) -> float:
        """The lowest copy score whose false-match rate is at most `rate`."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"a false-match rate is in [0, 1], got {rate:g}")
        floor = 1.0 / self.lookalike_pairs
        if rate < floor:
            raise NoCopyThreshold(
                f"a false-match rate of {rate:g} is below what {self.lookalike_pairs} look-alike "
                f"pairs can measure ({floor:.2g}); ask for {floor:.2g} or more, or calibrate on a "
                "larger validation split"
            )
        ok = np.flatnonzero(self.false_match_rate <= rate)
        return float(self.thresholds[ok[-1]]) if len(ok) else float(self.thresholds[0])

    def rate_at(self, score: float) -> float:
        """The estimated false-match rate of everything scoring at least `score`."""
        at = int(np.searchsorted(-self.thresholds, -score, side="right")) - 1
        return float(self.false_match_rate[at]) if at >= 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "modified": self.modified,
            "thresholds": self.thresholds.tolist(),
            "false_match_rate": self.false_match_rate.tolist(),
            "true_match_rate": self.true_match_rate.tolist(),
            "changed_below": self.changed_below,
            "lookalike_pairs": self.lookalike_pairs,
            "same_pairs": self.same_pairs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CopyCalibration:
        if data.get("format") != FORMAT:
            raise ValueError(f"copy calibration format {data.get('format')!r}, expected {FORMAT}")
        return cls(
            int(data["modified"]),
            np.asarray(data["thresholds"], np.float64),
            np.asarray(data["false_match_rate"], np.float64),
            np.asarray(data["true_match_rate"], np.float64),
            {str(k): float(v) for k, v in data["changed_below"].items()},
            int(data["lookalike_pairs"]),
            int(data["same_pairs"]),
            str(data.get("fingerprint", "")),
        )


def sidecar_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".copies.json")


def load_copy_calibration(checkpoint: str | Path, fingerprint: str) -> CopyCalibration | None:
    """The calibration beside the checkpoint when it was made for it (else None)."""
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return None
    calibration = CopyCalibration.from_json(json.loads(path.read_text()))
    return calibration if calibration.fingerprint == fingerprint else None


def balanced_line(same: np.ndarray, changed: np.ndarray) -> float:
    """The score that best separates `same` (should score above) from `changed` (below): the
    threshold minimising the mean of the two error rates."""
    if not len(same) or not len(changed):
        raise ValueError("balanced_line needs scores of both kinds")
    candidates = np.unique(np.concatenate([same, changed]))
    same_sorted, changed_sorted = np.sort(same), np.sort(changed)
    missed = np.searchsorted(same_sorted, candidates, side="left") / len(same)  # same below t
    passed = 1.0 - np.searchsorted(changed_sorted, candidates, side="left") / len(
        changed
    )  # changed at or above t
    return float(candidates[int(np.argmin(missed + passed))])


def lookalike_pairs(tags: dict[int, dict[int, int]], max_pairs: int, seed: int) -> np.ndarray:
    """`[n, 2]` pairs of different images sharing their labelled values (a common tagged attribute,
    equal values in every attribute both are tagged with); a seeded sample of at most `max_pairs`."""
    by_value: dict[tuple[int, int], list[int]] = {}
    for fid, labels in tags.items():
        for attr, value in labels.items():
            by_value.setdefault((attr, value), []).append(fid)
    pairs = set()
    for members in by_value.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                shared = tags[a].keys() & tags[b].keys()
                if all(tags[a][k] == tags[b][k] for k in shared):
                    pairs.add((a, b))
    ordered = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    if len(ordered) > max_pairs:
        ordered = ordered[np.sort(np.random.default_rng(seed).choice(len(ordered), max_pairs, replace=False))]
    return ordered


def split_tags(dataset: AttributeDataset, split: str) -> dict[int, dict[int, int]]:
    """fid -> {attribute id: value id} from a split's query and candidate files."""
    tags: dict[int, dict[int, int]] = {}
    for rows in (dataset.queries(split), dataset.candidates(split)):
        for fid, attr, value in zip(rows.fids.tolist(), rows.attrs.tolist(), rows.values.tolist()):
            tags.setdefault(fid, {})[attr] = value
    return tags


def calibrate_copies(
    encoder: Any,
    dataset: AttributeDataset,
    split: str = "valid",
    modified: int = DEFAULT_MODIFIED,
    max_images: int | None = 2000,
    max_pairs: int = 200_000,
    seed: int = 0,
    progress: bool = True,
    batch_size: int = 16,
) -> CopyCalibration:
    """Calibrate copy scores on a labelled split with `encoder` (an `Encoder`)."""
    tags = split_tags(dataset, split)
    fids = sorted(tags)
    if max_images is not None and len(fids) > max_images:
        fids = sorted(np.random.default_rng(seed).choice(fids, max_images, replace=False).tolist())
    tags = {f: tags[f] for f in fids}
    paths = dataset.split(split).paths
    names = [a.name for a in dataset.attributes]
    rng = np.random.default_rng([seed, 1])
    originals, views = [], []
    for start in tqdm(
        range(0, len(fids), batch_size), disable=not progress, desc="calibrating copy scores", unit="batch"
    ):
        images: list[Image.Image] = [load_image(paths[f]) for f in fids[start : start + batch_size]]
        originals.append(encoder.encode(images, batch_size=batch_size))
        views.append(encoder.encode([rephotograph(im, rng) for im in images], batch_size=batch_size))
    vec, view = np.concatenate(originals), np.concatenate(views)  # [n, A, D]
    row = {f: i for i, f in enumerate(fids)}
    same_attr = np.einsum("nad,nad->na", vec, view)  # [n, A]
    pairs = lookalike_pairs(tags, max_pairs, seed)
    if len(pairs) < MIN_LOOKALIKES:
        raise ValueError(
            f"the {split} split has {len(pairs)} pairs of images sharing their labelled values; at least "
            f"{MIN_LOOKALIKES} are needed to calibrate copy scores"
        )
    a_rows, b_rows = np.array([row[a] for a in pairs[:, 0]]), np.array([row[b] for b in pairs[:, 1]])
    kept = kept_count(len(names), modified)
    look = copy_scores(np.einsum("nad,nad->na", vec[a_rows], vec[b_rows]), kept)
    same = copy_scores(same_attr, kept)
    changed_below = {}
    for a, name in enumerate(names):
        tagged = [f for f in fids if a in tags[f]]
        if len(tagged) < 2:
            continue
        rows = np.array([row[f] for f in tagged])
        values = np.array([tags[f][a] for f in tagged])
        sims = vec[rows, a] @ vec[rows, a].T
        upper = np.triu_indices(len(rows), k=1)
        differ = (values[:, None] != values[None, :])[upper]
        if differ.any():
            changed_below[name] = balanced_line(same_attr[:, a], sims[upper][differ])
    thresholds = np.unique(np.concatenate([look, same]))[::-1]
    if len(thresholds) > POINTS:
        thresholds = thresholds[np.unique(np.linspace(0, len(thresholds) - 1, POINTS).round().astype(int))]
    look_sorted, same_sorted = np.sort(look), np.sort(same)
    fmr = 1.0 - np.searchsorted(look_sorted, thresholds, side="left") / len(look)
    tmr = 1.0 - np.searchsorted(same_sorted, thresholds, side="left") / len(same)
    return CopyCalibration(
        modified,
        thresholds.astype(np.float64),
        fmr,
        tmr,
        changed_below,
        len(look),
        len(same),
        getattr(encoder, "fingerprint", ""),
    )


def save_copy_calibration(checkpoint: str | Path, calibration: CopyCalibration) -> Path:
    path = sidecar_path(checkpoint)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(calibration.to_json()) + "\n")
    tmp.replace(path)
    return path


def describe(calibration: CopyCalibration, rates: Sequence[float] = (0.01, 0.001)) -> list[str]:
    """Lines for a report: the threshold and true-match rate at each false-match rate."""
    lines = []
    for rate in rates:
        try:
            t = calibration.score_for_rate(rate)
        except NoCopyThreshold as exc:
            lines.append(f"false-match rate {rate:g}: {exc}")
            continue
        at = int(np.flatnonzero(calibration.thresholds == t)[0])
        lines.append(
            f"false-match rate {rate:g}: copy score >= {t:.4f} (same-design pairs passing: "
            f"{calibration.true_match_rate[at]:.3f})"
        )
    return lines

"""The copy benchmark's evaluation: how well each way of scoring finds a design's copies.

Every protected design of a split queries every other image of that split (its copies, its
look-alike distractors, the other designs and theirs, the background). Measured per way of scoring:
- **mAP** of the design's copies (all of them relevant), and per number of changed attributes
  (0, 1, 2: only those copies relevant, the design's other copies set aside);
- **Recall@K** (1, 10, 50): the share of copies ranked within the first K, each copy against the
  items that are not copies of its design (the design's other copies set aside);
- at a copy threshold: the false matches per design (non-copies at or above it) and the share of
  copies found.
Ways of scoring: whole-image similarity (the global backbone's pooled map: what instance-level
retrieval compares), every single attribute (the best one chosen on the validation split), and the
copy score over all attributes with m = 0..3 modified attributes tolerated (asen_search/copy_score.py),
and that copy score with its best items geometrically verified (model/copy_verify.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from asen_search.copy_score import DEFAULT_MODIFIED, copy_scores, kept_count
from asen_search.model.data.copies import CopyRecord, read_copies
from asen_search.model.nn.preprocess import load_image

KS = (1, 10, 50)
CHANGES = ("all", "0", "1", "2")


@dataclass
class Encoded:
    """A split's images: per-attribute vectors `[N, A, D]`, whole-image vectors `[N, C]`, fid of each path."""

    paths: list[Path]
    vectors: np.ndarray
    whole: np.ndarray
    row: dict[Path, int]


def encode_split(encoder: Any, paths: Sequence[Path], batch_size: int = 16, progress: bool = True) -> Encoded:
    vectors, whole = [], []
    for start in tqdm(
        range(0, len(paths), batch_size),
        disable=not progress,
        desc="encoding the copy benchmark",
        unit="batch",
    ):
        images: list[Image.Image] = [load_image(p) for p in paths[start : start + batch_size]]
        vectors.append(encoder.encode(images, batch_size=batch_size))
        whole.append(encoder.whole_image(images, batch_size=batch_size))
    rows = {Path(p).resolve(): i for i, p in enumerate(paths)}
    return Encoded(list(paths), np.concatenate(vectors), np.concatenate(whole), rows)


def _rank_metrics(scores: np.ndarray, copies: list[tuple[int, int]], others: np.ndarray) -> dict[str, Any]:
    """One design: `scores` over every row, `copies` (row, changed count), `others` a mask of the rows
    that are not copies of it (the design itself excluded). AP per subset and each copy's rank."""
    negatives = np.sort(scores[others])
    out: dict[str, Any] = {"ranks": []}
    # a copy's rank: 1 + the non-copies scoring at least as high (ties count against it)
    ranks = [
        (1 + len(negatives) - int(np.searchsorted(negatives, scores[r], side="left")), k) for r, k in copies
    ]
    out["ranks"] = ranks
    for subset in CHANGES:
        chosen = sorted((scores[r] for r, k in copies if subset == "all" or str(k) == subset), reverse=True)
        if not chosen:
            continue
        precisions = [
            (i + 1) / (i + 1 + len(negatives) - int(np.searchsorted(negatives, s, side="left")))
            for i, s in enumerate(chosen)
        ]
        out[subset] = float(np.mean(precisions))
    return out


def evaluate_scores(
    score_rows: np.ndarray, records: Sequence[CopyRecord], encoded: Encoded, threshold: float | None = None
) -> dict[str, Any]:
    """Metrics of one way of scoring: `score_rows[d]` are design d's scores over every row."""
    aps: dict[str, list[float]] = {s: [] for s in CHANGES}
    hits: dict[str, dict[int, list[bool]]] = {s: {k: [] for k in KS} for s in CHANGES}
    false_matches: list[int] = []
    compared = lookalikes = lookalike_matches = 0
    found: dict[str, list[bool]] = {s: [] for s in CHANGES}
    for d, record in enumerate(records):
        me = encoded.row[record.design.resolve()]
        copies = [(encoded.row[p.resolve()], len(changed)) for p, changed in record.copies]
        others = np.ones(len(encoded.paths), dtype=bool)
        others[[me] + [r for r, _ in copies]] = False
        scores = score_rows[d]
        result = _rank_metrics(scores, copies, others)
        for subset in CHANGES:
            if subset in result:
                aps[subset].append(result[subset])
            for rank, k in result["ranks"]:
                if subset == "all" or str(k) == subset:
                    for K in KS:
                        hits[subset][K].append(rank <= K)
        if threshold is not None:
            false_matches.append(int((scores[others] >= threshold).sum()))
            compared += int(others.sum())
            near = [encoded.row[p.resolve()] for p, _ in record.distractors]
            lookalikes += len(near)
            lookalike_matches += int((scores[near] >= threshold).sum())
            for r, k in copies:
                for subset in ("all", str(k)):
                    found[subset].append(bool(scores[r] >= threshold))
    out: dict[str, Any] = {
        "map": {s: float(np.mean(v)) for s, v in aps.items() if v},
        **{f"recall@{K}": {s: float(np.mean(hits[s][K])) for s in CHANGES if hits[s][K]} for K in KS},
    }
    if threshold is not None:
        out["at_threshold"] = {
            "threshold": threshold,
            "false_matches_per_design": float(np.mean(false_matches)),
            "designs_with_a_false_match": float(np.mean([f > 0 for f in false_matches])),
            # the measured false-match rate, to set against the calibration's estimate: over
            # every non-copy, and over the designs' own look-alike distractors
            "false_match_rate": sum(false_matches) / max(compared, 1),
            "lookalike_false_match_rate": lookalike_matches / max(lookalikes, 1),
            "copies_found": {s: float(np.mean(v)) for s, v in found.items() if v},
        }
    return out


def method_scores(encoded: Encoded, records: Sequence[CopyRecord]) -> dict[str, np.ndarray]:
    """`[designs, N]` scores per way of scoring (whole image, each attribute, copy score m = 0..3)."""
    rows = np.array([encoded.row[r.design.resolve()] for r in records])
    per_attr = np.einsum("qad,nad->qna", encoded.vectors[rows], encoded.vectors)  # [Q, N, A]
    n_attr = per_attr.shape[-1]
    out = {"whole_image": encoded.whole[rows] @ encoded.whole.T}
    for a in range(n_attr):
        out[f"attribute:{a}"] = per_attr[..., a]
    for m in range(0, min(3, n_attr - 1) + 1):
        out[f"copy_score:m={m}"] = copy_scores(per_attr, kept_count(n_attr, m))
    return out


def verified_method(
    scores: np.ndarray, encoded: Encoded, records: Sequence[CopyRecord], progress: bool = True
) -> np.ndarray:
    """`[designs, N]`: each design's copy scores with its best items geometrically verified
    (model/copy_verify.py); every image's local features found once, when first needed."""
    from asen_search.model.copy_verify import local_features, verified_scores

    cache: dict[int, Any] = {}

    def features(row: int) -> Any:
        if row not in cache:
            cache[row] = local_features(load_image(encoded.paths[row]))
        return cache[row]

    out = np.empty_like(scores, dtype=np.float64)
    for d, record in enumerate(tqdm(records, disable=not progress, desc="verifying copies", unit="design")):
        me = encoded.row[record.design.resolve()]
        out[d], _ = verified_scores(scores[d], features(me), features, exclude=[me])
    return out


def judged_modified(
    encoded: Encoded,
    records: Sequence[CopyRecord],
    attributes: Sequence[str],
    changed_below: dict[str, float],
) -> dict[str, Any]:
    """How well the calibrated lines tell which attributes a copy changed: for every copy, the
    attributes scoring below their line against the design (judged modified) set against those the
    benchmark changed; per attribute and over all, precision and recall of "modified", and the share
    of copies whose judged set is exactly the changed one."""
    lines = np.array([changed_below.get(a, -np.inf) for a in attributes])
    judged_rows, truth_rows = [], []
    for record in records:
        design = encoded.vectors[encoded.row[record.design.resolve()]]
        for path, changed in record.copies:
            scores = np.einsum("ad,ad->a", encoded.vectors[encoded.row[path.resolve()]], design)
            judged_rows.append(scores < lines)
            truth_rows.append(np.array([a in changed for a in attributes]))
    judged, truth = np.array(judged_rows, dtype=bool), np.array(truth_rows, dtype=bool)

    def rates(j: np.ndarray, t: np.ndarray) -> dict[str, float | None]:
        return {
            "precision": float((j & t).sum() / j.sum()) if j.sum() else None,
            "recall": float((j & t).sum() / t.sum()) if t.sum() else None,
        }

    return {
        "copies": int(len(judged)),
        "exact": float((judged == truth).all(axis=1).mean()) if len(judged) else None,
        **rates(judged, truth),
        "per_attribute": {a: rates(judged[:, k], truth[:, k]) for k, a in enumerate(attributes)},
    }


def evaluate_split(
    encoder: Any,
    root: Path,
    split: str,
    thresholds: dict[str, float] | None = None,
    progress: bool = True,
    verify: int | None = None,
) -> tuple[dict[str, Any], Encoded]:
    """Every way of scoring on one split of a copy benchmark; `thresholds` (method -> score) adds the
    at-threshold numbers for those methods; `verify` (an m) adds the copy score with that m verified."""
    from asen_search.model.data.dataset import load_dataset

    dataset = load_dataset(root)
    records = read_copies(root, split)
    encoded = encode_split(encoder, dataset.split(split).paths, progress=progress)
    results = {}
    methods = method_scores(encoded, records)
    if verify is not None:
        methods[f"verified:m={verify}"] = verified_method(
            methods[f"copy_score:m={verify}"], encoded, records, progress
        )
    for method, scores in methods.items():
        results[method] = evaluate_scores(scores, records, encoded, (thresholds or {}).get(method))
    return results, encoded


def _names(method: str, attributes: Sequence[str]) -> str:
    if method.startswith("attribute:"):
        return f"attribute:{attributes[int(method.split(':')[1])]}"
    return method


def evaluate_copies(
    encoder: Any,
    root: Path,
    split: str = "test",
    calibration: Any = None,
    false_match_rate: float = 0.01,
    progress: bool = True,
    verify: bool = True,
) -> dict[str, Any]:
    """The benchmark's report: every way of scoring on `split`, the best single attribute chosen on
    the other split (by copy mAP), false matches at the calibrated threshold for `false_match_rate`
    (a `CopyCalibration`; the copy score with its m), and with `verify` the copy score geometrically
    verified (model/copy_verify.py)."""
    root = Path(root)
    attributes = encoder.attribute_names
    other = "valid" if split == "test" else "test"
    chosen_on, _ = evaluate_split(encoder, root, other, progress=progress)
    singles = {m: r["map"]["all"] for m, r in chosen_on.items() if m.startswith("attribute:")}
    best_single = max(singles, key=lambda m: singles[m])
    thresholds: dict[str, float] = {}
    threshold_note = None
    if calibration is not None:
        try:
            thresholds[f"copy_score:m={calibration.modified}"] = calibration.score_for_rate(false_match_rate)
        except ValueError as exc:
            threshold_note = str(exc)
    modified_allowed = calibration.modified if calibration is not None else DEFAULT_MODIFIED
    results, encoded = evaluate_split(
        encoder, root, split, thresholds, progress=progress, verify=modified_allowed if verify else None
    )
    modified = (
        None
        if calibration is None
        else judged_modified(encoded, read_copies(root, split), attributes, calibration.changed_below)
    )
    copy_method = f"copy_score:m={modified_allowed}"
    summary = {
        "whole_image": results["whole_image"],
        "best_single_attribute": results[best_single],
        "copy_score": results[copy_method],
    }
    if verify:
        summary["verified_copy_score"] = results[f"verified:m={modified_allowed}"]
    return {
        "split": split,
        "data": str(root),
        "best_single_attribute": _names(best_single, attributes),
        "best_single_chosen_on": other,
        "copy_score_method": copy_method,
        "false_match_rate": false_match_rate if thresholds else None,
        "threshold_note": threshold_note,
        "summary": summary,
        "judged_modified": modified,
        "methods": {_names(m, attributes): r for m, r in results.items()},
        "chosen_on": {_names(m, attributes): r["map"] for m, r in chosen_on.items()},
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"copy benchmark {report['data']}, {report['split']} split: copies with 0-2 changed attributes "
        f"(best single attribute, chosen on {report['best_single_chosen_on']}: {report['best_single_attribute']})",
        f"{'method':<28} {'changed':>7} {'mAP':>6} {'R@1':>6} {'R@10':>6} {'R@50':>6}",
    ]
    methods = [
        ("whole image", report["summary"]["whole_image"]),
        (report["best_single_attribute"], report["summary"]["best_single_attribute"]),
        (report["copy_score_method"], report["summary"]["copy_score"]),
    ]
    if "verified_copy_score" in report["summary"]:
        methods.append((f"{report['copy_score_method']} verified", report["summary"]["verified_copy_score"]))
    for method, result in methods:
        for subset in CHANGES:
            if subset in result["map"]:
                lines.append(
                    f"{method:<28} {subset:>7} {result['map'][subset]:6.3f} "
                    + " ".join(f"{result[f'recall@{K}'][subset]:6.3f}" for K in KS)
                )
    at = report["summary"]["copy_score"].get("at_threshold")
    if at:
        lines.append(
            f"at false-match rate {report['false_match_rate']:g} (copy score >= {at['threshold']:.4f}): "
            f"{at['false_matches_per_design']:.2f} false matches per design "
            f"({100 * at['designs_with_a_false_match']:.0f}% of designs have one; measured false-match "
            f"rate {at['false_match_rate']:.4f} over every non-copy, {at['lookalike_false_match_rate']:.4f} "
            "over the designs' look-alike distractors); copies found: "
            + ", ".join(f"{s} {v:.3f}" for s, v in at["copies_found"].items())
        )
    elif report.get("threshold_note"):
        lines.append(f"no threshold: {report['threshold_note']}")
    judged = report.get("judged_modified")
    if judged:
        shown = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(
            f"attributes judged modified (calibrated lines) against those changed, over {judged['copies']} "
            f"copies: precision {shown(judged['precision'])}, recall {shown(judged['recall'])}, exact set "
            f"{shown(judged['exact'])}"
        )
    return lines


def plot_copies(report: dict[str, Any], path: Path) -> None:
    """mAP and Recall@10 per number of changed attributes, the three ways of scoring side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [
        ("whole image", "whole_image"),
        (f"best single ({report['best_single_attribute'].split(':')[-1]})", "best_single_attribute"),
        (f"copy score ({report['copy_score_method'].split(':')[-1]})", "copy_score"),
    ]
    if "verified_copy_score" in report["summary"]:
        methods.append(("copy score, verified", "verified_copy_score"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(methods)
    for axis, metric in zip(axes, ("map", "recall@10")):
        for i, (label, key) in enumerate(methods):
            values = [report["summary"][key][metric].get(s, 0.0) for s in CHANGES]
            offset = (i - (len(methods) - 1) / 2) * width
            bars = axis.bar(np.arange(len(CHANGES)) + offset, values, width, label=label)
            axis.bar_label(bars, fmt="%.2f", fontsize=7)
        axis.set_xticks(np.arange(len(CHANGES)), ["all copies", "0 changed", "1 changed", "2 changed"])
        axis.set_ylim(0, 1.08)
        axis.set_title(
            f"copy {'mAP' if metric == 'map' else 'Recall@10'} ({report['split']} split)", fontsize=10
        )
    axes[0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

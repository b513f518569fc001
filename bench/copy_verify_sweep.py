"""How the geometric verification's settings (model/copy_verify.py) were chosen: a sweep on the copy
benchmark's valid split, the test split left for the measurement.

    .venv/bin/python -m bench.copy_verify_sweep --checkpoint runs/default-s0/best.pt \\
        --copies var/copybench/copies [--split valid] [--json sweep.json]

The split is encoded once and its copy scores (m = 2) ranked; for every feature setting (`--contrast`:
SIFT's contrast threshold, OpenCV's default 0.04; `--keep`: the strongest features kept per image, 0
all) every image's features are found once, and for
every matching setting (`--ratio`, `--pixels`: Lowe's ratio and RANSAC's tolerance) each design's
best `TOP_K` items are verified once; every (floor, cap, weight) of the grid then re-scores them
without matching again. Prints one line per setting: copy mAP (all / 0 / 1 / 2 changed) and
Recall@10, beside the copy score alone; per matching setting the time per image (features) and per
pair (matching and RANSAC), and the median inliers of copies by changed attributes and of the designs'
look-alikes. About 4 minutes per matching setting on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from asen_search.copy_score import copy_scores, kept_count
from asen_search.model import copy_verify
from asen_search.model.copy_eval import encode_split, evaluate_scores
from asen_search.model.data.copies import read_copies
from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.model.nn.preprocess import load_image


def _row(result: dict[str, Any]) -> dict[str, float]:
    return {
        **{f"map_{k}": round(v, 4) for k, v in result["map"].items()},
        "recall@10": result["recall@10"]["all"],
    }


def _medians(counts: np.ndarray, records: list[Any], encoded: Any) -> dict[str, float]:
    """Median inliers of the designs' copies by how many attributes they changed, and of their look-alikes."""
    by: dict[str, list[float]] = {"copies_0": [], "copies_1": [], "copies_2": [], "lookalikes": []}
    for d, record in enumerate(records):
        for path, changed in record.copies:
            by[f"copies_{len(changed)}"].append(counts[d, encoded.row[path.resolve()]])
        by["lookalikes"] += [counts[d, encoded.row[path.resolve()]] for path, _ in record.distractors]
    return {k: float(np.median(v)) for k, v in by.items() if v}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--copies", type=Path, required=True, help="a copy benchmark (asen synth --copies OUT)")
    p.add_argument("--split", default="valid", choices=("valid", "test"))
    p.add_argument("--contrast", type=float, nargs="+", default=[0.04])
    p.add_argument("--keep", type=int, nargs="+", default=[0])
    p.add_argument("--ratio", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--pixels", type=float, nargs="+", default=[3.0, 6.0])
    p.add_argument("--floor", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--cap", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--weight", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    encoder = Encoder.from_checkpoint(args.checkpoint, "cpu", "auto", extras=False)
    records = read_copies(args.copies, args.split)
    encoded = encode_split(encoder, load_dataset(args.copies).split(args.split).paths, progress=False)
    rows = np.array([encoded.row[r.design.resolve()] for r in records])
    per_attr = np.einsum("qad,nad->qna", encoded.vectors[rows], encoded.vectors)
    base = copy_scores(per_attr, kept_count(per_attr.shape[-1], 2))
    out: dict[str, Any] = {"copy_score": _row(evaluate_scores(base, records, encoded)), "settings": []}
    print("copy score alone", out["copy_score"], flush=True)
    images = [load_image(path) for path in encoded.paths]
    for contrast, keep in itertools.product(args.contrast, args.keep):
        detector = copy_verify.cv2.SIFT.create(nfeatures=keep, contrastThreshold=contrast)
        started = time.monotonic()
        features = [copy_verify.local_features(image, detector) for image in images]
        per_image = (time.monotonic() - started) / len(images)
        for ratio, pixels in itertools.product(args.ratio, args.pixels):
            counts = np.zeros_like(base)
            started = time.monotonic()
            for d, me in enumerate(rows):
                ranked = base[d].copy()
                ranked[me] = -np.inf
                for r in np.argsort(-ranked)[: copy_verify.TOP_K]:
                    counts[d, r] = copy_verify.inliers(features[me], features[r], ratio, pixels)
            per_pair = (time.monotonic() - started) / (len(rows) * copy_verify.TOP_K)
            medians = _medians(counts, records, encoded)
            matching = {"contrast": contrast, "keep": keep, "ratio": ratio, "pixels": pixels}
            print(
                matching,
                f"features {1000 * per_image:.0f} ms an image ({np.mean([len(f) for f in features]):.0f} each),",
                f"matching {1000 * per_pair:.1f} ms a pair; median inliers {medians}",
                flush=True,
            )
            out["matching"] = [
                *out.get("matching", []),
                {**matching, "ms_per_image": 1000 * per_image, "ms_per_pair": 1000 * per_pair, **medians},
            ]
            for floor, cap, weight in itertools.product(args.floor, args.cap, args.weight):
                bonus = np.minimum(np.maximum(counts - floor, 0), cap) / cap
                result = _row(evaluate_scores(base + weight * bonus, records, encoded))
                setting = {**matching, "floor": floor, "cap": cap, "weight": weight}
                out["settings"].append({**setting, **result})
                print(setting, result, flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""How large the local branch's RoI crops are, per attribute, at several RoI thresholds.

For the first N images of a split, the RoI box of every attribute (`Encoder.explain`, the crop the
local branch sees) as a share of the square the global input shows: mean, min and max side, and the
mean height of the box's centre (0: top, 1: bottom). Used to choose `asen train --roi-thresholds`
(docs/results.md, "Per-attribute RoI thresholds and reframed photographs").

    .venv/bin/python bench/roi_sizes.py --checkpoint runs/levers/quick-after1-s0/best.pt \
        --data data/demo --thresholds 0.02,0.05,0.1,0.3
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from PIL import Image

from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="dataset directory (dataset format)")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--images", type=int, default=60, help="the split's first N images (default 60)")
    parser.add_argument(
        "--thresholds",
        default="",
        help="comma-separated RoI thresholds to try for every attribute (default: the checkpoint's own)",
    )
    args = parser.parse_args()
    encoder = Encoder.from_checkpoint(args.checkpoint)
    paths = load_dataset(args.data).split(args.split).paths[: args.images]
    images = [Image.open(p).convert("RGB") for p in paths]
    own = encoder.preprocess
    for text in [t for t in args.thresholds.split(",") if t.strip()] or [None]:
        if text is None:
            print("the checkpoint's RoI thresholds:", own.roi_thresholds or own.roi_threshold)
        else:
            encoder.preprocess = replace(own, roi_threshold=float(text), roi_thresholds=None)
            print(f"RoI threshold {float(text)} for every attribute:")
        print(f"  {'attribute':18s} {'side':>5s} {'min':>5s} {'max':>5s} {'centre y':>9s}")
        for a, name in enumerate(encoder.attribute_names):
            sides, centres = [], []
            for image in images:
                shown = encoder.explain(image, a)
                x0, y0, x1, y1 = shown.roi_box
                left, top, right, bottom = shown.image_box
                sides.append((x1 - x0) / (right - left))
                centres.append(((y0 + y1) / 2 - top) / (bottom - top))
            print(
                f"  {name:18s} {np.mean(sides):5.2f} {np.min(sides):5.2f} {np.max(sides):5.2f} "
                f"{np.mean(centres):9.2f}"
            )


if __name__ == "__main__":
    main()

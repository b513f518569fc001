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

import numpy as np
import torch
from PIL import Image

from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.model.nn.roi import attention_boxes, roi_threshold


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
    pre, names = encoder.preprocess, encoder.attribute_names
    paths = load_dataset(args.data).split(args.split).paths[: args.images]
    images = [Image.open(p).convert("RGB") for p in paths]
    # each (attribute, image)'s attention map, once: a threshold changes only where the box is cut
    maps = torch.tensor(
        np.stack([[encoder.explain(image, a).attention for image in images] for a in range(len(names))])
    )
    attrs = torch.arange(len(names)).repeat_interleave(len(images))
    for text in [t for t in args.thresholds.split(",") if t.strip()] or [None]:
        if text is None:
            print("the checkpoint's RoI thresholds:", pre.roi_thresholds or pre.roi_threshold)
            threshold = roi_threshold(pre, attrs)
        else:
            threshold = float(text)
            print(f"RoI threshold {threshold} for every attribute:")
        # boxes in global-input pixels: as shares of that side they are shares of the square it shows
        boxes = attention_boxes(maps.flatten(0, 1), pre.global_size, threshold).view(len(names), -1, 4)
        sides = (boxes[..., 2] - boxes[..., 0]).double() / pre.global_size
        centres = (boxes[..., 1] + boxes[..., 3]).double() / (2 * pre.global_size)
        print(f"  {'attribute':18s} {'side':>5s} {'min':>5s} {'max':>5s} {'centre y':>9s}")
        for a, name in enumerate(names):
            print(
                f"  {name:18s} {sides[a].mean():5.2f} {sides[a].min():5.2f} {sides[a].max():5.2f} "
                f"{centres[a].mean():9.2f}"
            )


if __name__ == "__main__":
    main()

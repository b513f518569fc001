"""Encoding throughput for all attributes of an image: the encoder (global backbone once, heads and
local branch batched over attributes) against a naive loop running the full network once per
attribute, side by side in one run.

    .venv/bin/python bench/encode_throughput.py --checkpoint runs/default/best.pt --data data/demo --images 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.model.nn.preprocess import load_image
from asen_search.model.tuning import tune_allocator


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each method")
    args = parser.parse_args()
    tune_allocator()
    enc = Encoder.from_checkpoint(args.checkpoint)
    paths = load_dataset(args.data).split("test").paths[: args.images]
    images = [load_image(p) for p in paths]
    n_attr = len(enc.attributes)

    def batched() -> None:
        enc.encode(images, batch_size=args.batch_size)

    def naive() -> None:
        for a in range(n_attr):
            enc.encode(images, [a], batch_size=args.batch_size)

    enc.encode(images[:4])  # warm-up
    times: dict[str, list[float]] = {"encoder": [], "naive": []}
    for _ in range(args.rounds):
        for name, fn in (("encoder", batched), ("naive", naive)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "images": len(images),
        "attributes": n_attr,
        "threads": torch.get_num_threads(),
        "encoder_images_per_s": round(len(images) / best["encoder"], 2),
        "naive_images_per_s": round(len(images) / best["naive"], 2),
        "speedup": round(best["naive"] / best["encoder"], 2),
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

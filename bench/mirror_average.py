"""Mirror-averaged embeddings (`mirror_average` off, crops, images) side by side in one run
(docs/results.md, "Mirror-averaged embeddings").

    .venv/bin/python -m bench.mirror_average --data data/demo --out runs/mirror \\
        default-s0=runs/default-s0/best.pt default-s1=runs/default-s1/best.pt ...
    [--copies var/copybench/copies]     # also the copy benchmark's copy score (m = 2), test split
    [--timing 64]                       # also the encoding's speed per setting, interleaved
    [--write runs/mirror/ckpt]          # also NAME.SETTING.pt: the checkpoint with each setting, to serve

For every checkpoint the test split is encoded by the Encoder once per setting of `mirror_average`,
whatever the checkpoint says (the weights are the same: the setting only changes how an image is
embedded); writes `OUT/NAME.SETTING.json` in `asen eval --json`'s form (bench/ablation_table.py reads
them) and prints per checkpoint each setting's MAP, its lengths, its encoding time and, with
`--copies`, the copy score's mAP and Recall@10. `--timing N` times, on N test images, one image
and one attribute at a time (what `/search` by image encodes: p50 and p99) and all attributes in
batches (images per second), the settings interleaved so that the machine's drift hits all alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from asen_search.copy_score import DEFAULT_MODIFIED
from asen_search.model.checkpoint import load_checkpoint, save_checkpoint
from asen_search.model.config import MIRROR_AVERAGES
from asen_search.model.copy_eval import encode_split as encode_copies
from asen_search.model.copy_eval import evaluate_scores, method_scores
from asen_search.model.data.copies import read_copies
from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.model.nn.preprocess import load_image
from asen_search.model.training.evaluate import encode_split, map_of_rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a dataset (dataset format)")
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON reports")
    p.add_argument("--split", default="test")
    p.add_argument("--copies", type=Path, help="a copy benchmark (asen synth --copies OUT)")
    p.add_argument("--timing", type=int, default=0, metavar="N", help="time the encoding on N images")
    p.add_argument("--write", type=Path, help="write NAME.SETTING.pt here for each setting")
    p.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    args = p.parse_args(argv)
    ds = load_dataset(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    copies = None
    if args.copies:  # read once: the same images under every setting
        copies = (read_copies(args.copies, args.split), load_dataset(args.copies).split(args.split).paths)
    for pair in args.checkpoints:
        name, path = pair.split("=", 1)
        encoder = Encoder.from_checkpoint(path, "cpu", "auto", extras=False)
        line = [name]
        for kind in MIRROR_AVERAGES:
            encoder.preprocess = dataclasses.replace(encoder.preprocess, mirror_average=kind)
            started = time.monotonic()
            _, vectors = encode_split(encoder, ds, args.split, progress=False)
            seconds = time.monotonic() - started
            report = map_of_rows(ds, args.split, vectors)
            (args.out / f"{name}.{kind}.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
            lengths = {a: round(100 * v, 2) for a, v in report.per_attribute.items() if "length" in a}
            line.append(f"{kind} MAP {100 * report.overall:.2f} {lengths} ({seconds:.0f} s to encode)")
            if copies is not None:
                records, paths = copies
                encoded = encode_copies(encoder, paths, progress=False)
                scores = method_scores(encoded, records)[f"copy_score:m={DEFAULT_MODIFIED}"]
                result = evaluate_scores(scores, records, encoded)
                line.append(f"copy mAP {result['map']['all']:.3f} R@10 {result['recall@10']['all']:.3f}")
        print(" | ".join(line), flush=True)
        if args.timing:
            _timing(encoder, [load_image(p) for p in ds.split(args.split).paths[: args.timing]], name)
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            ckpt = load_checkpoint(path)
            for kind in MIRROR_AVERAGES:
                pre = dataclasses.replace(ckpt.preprocess, mirror_average=kind)
                save_checkpoint(
                    args.write / f"{name}.{kind}.pt", ckpt.model, pre, ckpt.attributes, ckpt.extra
                )


def _timing(encoder: Encoder, images: list[Image.Image], name: str) -> None:
    """One image and one attribute at a time, then all attributes in batches of 16, per setting."""
    settings = {k: dataclasses.replace(encoder.preprocess, mirror_average=k) for k in MIRROR_AVERAGES}
    single: dict[str, list[float]] = {k: [] for k in settings}
    for rounds in range(3):
        for i, image in enumerate(images):
            for kind, pre in settings.items():
                encoder.preprocess = pre
                started = time.perf_counter()
                encoder.encode_requests([(image, [i % len(encoder.attributes)])])
                if rounds:  # the first round warms every runtime's shapes
                    single[kind].append(1000 * (time.perf_counter() - started))
    rates: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(2):
        for kind, pre in settings.items():
            encoder.preprocess = pre
            started = time.perf_counter()
            encoder.encode(images)
            rates[kind].append(len(images) / (time.perf_counter() - started))
    for kind in settings:
        p50, p99 = np.percentile(single[kind], [50, 99])
        print(
            f"{name} {kind}: one image, one attribute p50 {p50:.1f} ms, p99 {p99:.1f} ms; all attributes "
            + " / ".join(f"{r:.1f}" for r in rates[kind])
            + " images/s",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""What the per-attribute fusion weights buy: MAP of one checkpoint with the betas chosen on the
validation split (stored in it), with one fixed beta (the old default 0.6), and with the global
branch alone (beta 1), on the validation and test splits.

    .venv/bin/python bench/fusion_gain.py --data data/demo --checkpoint runs/default-s0/best.pt

Each split is encoded once at beta 0.5, whose vectors hold both branches' unit vectors (each times
sqrt(0.5)); every other fusion is recombined from them.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.model.training.evaluate import encode_split, map_of_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    args = parser.parse_args()
    ds = load_dataset(args.data)
    encoder = Encoder.from_checkpoint(args.checkpoint)
    chosen = encoder.preprocess.betas
    if chosen is None or encoder.model.local_head is None:
        raise SystemExit("the checkpoint has no per-attribute betas (an ASEN++ checkpoint trained with them)")
    encoder.preprocess = dataclasses.replace(encoder.preprocess, beta=0.5, betas=None)
    d_g = encoder.model.cfg.global_branch.out_dim
    settings = {
        "chosen on valid": np.asarray(chosen),
        "0.6 (old default)": np.full(len(chosen), 0.6),
        "1 (global alone)": np.ones(len(chosen)),
    }
    print("betas chosen: " + ", ".join(f"{a.name} {b}" for a, b in zip(ds.attributes, chosen)))
    for split in ("valid", "test"):
        rows, vecs = encode_split(encoder, ds, split, progress=False)
        g, loc = vecs[:, :d_g] * np.sqrt(2), vecs[:, d_g:] * np.sqrt(2)
        for name, betas in settings.items():
            b = betas[rows.attrs][:, None]
            report = map_of_rows(ds, split, np.concatenate([g * np.sqrt(b), loc * np.sqrt(1 - b)], axis=1))
            print(
                f"{split:<5} beta {name:<18} MAP {100 * report.overall:6.2f}  "
                + "  ".join(f"{k} {100 * v:.1f}" for k, v in report.per_attribute.items())
            )


if __name__ == "__main__":
    main()

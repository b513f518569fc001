"""Why is one attribute hard? Per-query AP of a trained model on a drawn (asen synth) split, grouped
by what the renderer drew for each query picture: garment size, rotation, occluders, the garment's
height/width proportion, and the values of the other attributes.

    .venv/bin/python bench/attribute_diagnosis.py --data data/demo --checkpoint runs/default/best.pt \\
        --attribute garment_length [--seed 0] [--split test]

The pictures are re-drawn from their seeds (draws only, nothing is written), so the dataset must be
an unmodified `asen synth` output; `--seed` is the seed it was drawn with.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from asen_search.model.data.dataset import load_dataset
from asen_search.model.data.synth import ATTRIBUTES, SPLITS, draw_garment, sample_labels
from asen_search.model.data.synth_draw import DEFAULT_NUISANCE, Nuisance
from asen_search.model.encoder import Encoder
from asen_search.model.training.evaluate import encode_split
from asen_search.model.training.retrieval_map import attribute_rankings


def draws(seed: int, split: str, fid: int, nuisance: Nuisance) -> tuple[dict[str, int], dict[str, float]]:
    rng = np.random.default_rng([seed, SPLITS.index(split), fid])
    labels, record = sample_labels(rng), {}
    draw_garment(labels, rng, 1.0, nuisance, record)
    return labels, record


def _bins(name: str, values: np.ndarray, ap: np.ndarray, edges: list[float]) -> None:
    print(f"\nby {name}:")
    for lo, hi in zip(edges[:-1], edges[1:]):
        pick = (values >= lo) & (values < hi)
        if pick.any():
            print(f"  [{lo:.2f}, {hi:.2f})  queries {pick.sum():4d}  MAP {100 * ap[pick].mean():6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--attribute", default="garment_length")
    parser.add_argument("--seed", type=int, default=0, help="the seed the dataset was drawn with")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument(
        "--global-size",
        type=int,
        default=None,
        help="encode at this global input size instead of the checkpoint's (what the size does)",
    )
    parser.add_argument(
        "--all-rows",
        action="store_true",
        help="every row of the attribute (queries and candidates) as a query against all the others: "
        "about 5x the queries of the protocol, for finer groups",
    )
    args = parser.parse_args()
    ds = load_dataset(args.data)
    meta = json.loads((args.data / "meta.json").read_text())
    nuisance = DEFAULT_NUISANCE
    if "nuisance" in meta:
        settings = {
            k: tuple(v) if isinstance(v, list) else v for k, v in meta["nuisance"].items() if k != "seed"
        }
        nuisance, args.seed = Nuisance(**settings), meta["nuisance"]["seed"]
    a = [x.name for x in ds.attributes].index(args.attribute)
    encoder = Encoder.from_checkpoint(args.checkpoint, runtime="torch" if args.global_size else "auto")
    if args.global_size:
        encoder.preprocess = dataclasses.replace(encoder.preprocess, global_size=args.global_size)
    rows, vecs = encode_split(encoder, ds, args.split)
    queries, candidates = ds.queries(args.split), ds.candidates(args.split)
    nq = len(queries)
    q, c = queries.attrs == a, candidates.attrs == a
    if args.all_rows:  # each row against all the others (its own column masked out of the ranking)
        mine = rows.attrs == a
        v, values, fids = vecs[mine], rows.values[mine], rows.fids[mine]
        ap = np.array(
            [
                attribute_rankings(v[i : i + 1], values[i : i + 1], np.delete(v, i, 0), np.delete(values, i))[
                    "ap"
                ][0]
                for i in range(len(v))
            ]
        )
        qvalues = values
    else:
        ap = attribute_rankings(vecs[:nq][q], queries.values[q], vecs[nq:][c], candidates.values[c])["ap"]
        fids, qvalues = queries.fids[q], queries.values[q]
    info = [draws(args.seed, args.split, int(f), nuisance) for f in fids]
    if any(labels[args.attribute] != v for (labels, _), v in zip(info, qvalues)):
        raise SystemExit(
            f"the re-drawn labels differ from {args.data}'s: not an unmodified `asen synth` output "
            f"of seed {args.seed}"
        )
    print(f"{args.attribute}: {len(ap)} queries, MAP {100 * ap.mean():.2f}")
    for key, edges in (
        ("garment_height", [0, 0.45, 0.6, 0.75, 1.0]),
        ("rotation", [-45, -6, 6, 45]),
        ("occluders", [0, 1, 2, 3, 21]),
        ("aspect", [0, 0.7, 0.9, 1.1, 1.4, 3]),
    ):
        _bins(
            key if key != "rotation" else "rotation (degrees)", np.array([r[key] for _, r in info]), ap, edges
        )
    for name, values in ATTRIBUTES:
        groups: dict[str, list[float]] = defaultdict(list)
        for (labels, _), value in zip(info, ap):
            groups[values[labels[name]]].append(value)
        print(
            f"\nby {name}"
            + (" (the attribute itself)" if name == args.attribute else "")
            + ": "
            + ", ".join(f"{v} {100 * np.mean(groups[v]):.1f} ({len(groups[v])})" for v in values if groups[v])
        )


if __name__ == "__main__":
    main()

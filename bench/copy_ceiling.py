"""How far can attribute classes alone go on the copy benchmark? The copy score of perfect class labels.

The copy score (asen_search/copy_score.py) averages per-attribute similarities. Give it the best
similarities a class model could ever produce, the labels themselves (1 where an image has the
design's value under an attribute, 0 otherwise), and it still cannot tell a copy from a look-alike
that shares the same values, nor a changed copy from any garment sharing as many values. This
prints that ceiling beside a checkpoint's own copy score, with and without the designs' look-alike
distractors in the ranking:

    .venv/bin/python -m bench.copy_ceiling --copies var/copybench/copies \\
        [--checkpoint runs/default-s0/best.pt] [--json ceiling.json]

Ties (a perfect class score ties every image sharing the same values) are broken at random, the
numbers the mean over `--tie-seeds` draws: the expected ranking of a score that sees classes only.
With a checkpoint that has value prototypes, also the copy score (m = 2) with each attribute's
cosine plus `lambda` times the cosine of the embeddings' residuals (each embedding less its part
along its nearest prototype): does the within-class part of the embeddings find copies?
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from asen_search.copy_score import copy_scores, kept_count
from asen_search.model.copy_eval import Encoded, encode_split, evaluate_scores, method_scores
from asen_search.model.data.copies import CopyRecord, read_copies
from asen_search.model.data.dataset import load_dataset


def label_table(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    """The split's image paths and each image's value per attribute (-1 where not labelled)."""
    ds = load_dataset(root)
    paths = list(ds.split(split).paths)
    table = np.full((len(paths), len(ds.attributes)), -1, dtype=np.int64)
    for tagged in (ds.queries(split), ds.candidates(split)):
        table[tagged.fids, tagged.attrs] = tagged.values
    return paths, table


def label_similarities(table: np.ndarray, designs: np.ndarray) -> np.ndarray:
    """`[designs, N, A]`: 1 where an image has the design's value under an attribute (a value it is
    labelled with), else 0: the best per-attribute similarity a class model could give."""
    return ((table[designs][:, None, :] == table[None, :, :]) & (table[None, :, :] >= 0)).astype(np.float64)


def lookalikes_aside(scores: np.ndarray, records: list[CopyRecord], encoded: Encoded) -> np.ndarray:
    """The scores with every design's own look-alike distractors ranked last."""
    out = scores.copy()
    for d, record in enumerate(records):
        out[d, [encoded.row[p.resolve()] for p, _ in record.distractors]] = -np.inf
    return out


def residuals(vectors: np.ndarray, prototypes: Any, attributes: list[str]) -> np.ndarray:
    """Each attribute embedding less its part along its nearest value prototype, normalised: what
    an embedding holds beyond its class (the image's own look, if anything)."""
    out = np.zeros_like(vectors)
    for a, name in enumerate(attributes):
        protos = np.nan_to_num(prototypes.vectors[name].astype(np.float32))
        nearest = protos[(vectors[:, a] @ protos.T).argmax(1)]
        rest = vectors[:, a] - (vectors[:, a] * nearest).sum(-1, keepdims=True) * nearest
        out[:, a] = rest / np.maximum(np.linalg.norm(rest, axis=-1, keepdims=True), 1e-12)
    return out


def summary(result: dict[str, Any]) -> dict[str, float]:
    return {
        **{f"map_{k}": result["map"][k] for k in ("all", "0", "1", "2") if k in result["map"]},
        "recall@10": result["recall@10"]["all"],
    }


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=Path, required=True, help="a copy benchmark (asen synth --copies)")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--checkpoint", type=Path, help="also the copy score of this model")
    parser.add_argument("--tie-seeds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    paths, table = label_table(args.copies, args.split)
    records = read_copies(args.copies, args.split)
    n_attr = table.shape[1]
    rows = {p.resolve(): i for i, p in enumerate(paths)}
    encoded = Encoded(paths, np.zeros((len(paths), n_attr, 1), np.float32), np.zeros((len(paths), 1)), rows)
    designs = np.array([rows[r.design.resolve()] for r in records])
    same = label_similarities(table, designs)

    report: dict[str, Any] = {"copies": str(args.copies), "split": args.split, "labels": {}, "model": {}}
    for m in range(0, min(3, n_attr - 1) + 1):
        keep = kept_count(n_attr, m)
        plain, aside = [], []
        for seed in range(args.tie_seeds):
            jitter = np.random.default_rng(seed).random(same.shape) * 1e-6  # random tie-breaking
            scores = copy_scores(same + jitter, keep)
            plain.append(summary(evaluate_scores(scores, records, encoded)))
            aside.append(
                summary(evaluate_scores(lookalikes_aside(scores, records, encoded), records, encoded))
            )
        report["labels"][f"m={m}"] = {"all": mean_rows(plain), "lookalikes_aside": mean_rows(aside)}

    if args.checkpoint:
        from asen_search.model.encoder import Encoder

        encoder = Encoder.from_checkpoint(args.checkpoint, "cpu", extras=True)
        model = encode_split(encoder, paths)
        for method, scores in method_scores(model, records).items():
            if method.startswith("copy_score:"):
                report["model"][method.split(":")[1]] = {
                    "all": summary(evaluate_scores(scores, records, model)),
                    "lookalikes_aside": summary(
                        evaluate_scores(lookalikes_aside(scores, records, model), records, model)
                    ),
                }
        # the within-class part of each embedding, added to the class cosine
        if encoder.prototypes is not None:
            per_attr = np.einsum("qad,nad->qna", model.vectors[designs], model.vectors)
            res = residuals(model.vectors, encoder.prototypes, encoder.attribute_names)
            per_res = np.einsum("qad,nad->qna", res[designs], res)
            keep = kept_count(n_attr, 2)
            report["residual"] = {
                f"lambda={lam}": summary(
                    evaluate_scores(copy_scores(per_attr + lam * per_res, keep), records, model)
                )
                for lam in (0.0, 0.1, 0.3, 1.0)
            }
            report["residual"]["alone"] = summary(evaluate_scores(copy_scores(per_res, keep), records, model))

    print("copy mAP (all / 0 / 1 / 2 changed), Recall@10; 'aside': the designs' look-alikes ranked last")
    for who in ("labels", "model"):
        for m, r in report[who].items():
            for kind, s in r.items():
                print(
                    f"{who:<7} {m}  {kind:<17} {s['map_all']:.3f} / {s.get('map_0', float('nan')):.3f} / "
                    f"{s.get('map_1', float('nan')):.3f} / {s.get('map_2', float('nan')):.3f}  R@10 {s['recall@10']:.3f}"
                )
    for name, s in report.get("residual", {}).items():
        print(
            f"class + residual, m=2, {name:<10} {s['map_all']:.3f} / {s['map_0']:.3f} / {s['map_1']:.3f} / "
            f"{s['map_2']:.3f}  R@10 {s['recall@10']:.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

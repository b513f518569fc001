"""Copy detection side by side: training variants x seeds, each trained on the demo's class labels
only, then class MAP (test split), the label-free copy calibration (valid split) and the copy
benchmark (test split; whole image, best single attribute, copy score). docs/protection.md.

    .venv/bin/asen synth var/copybench/data && .venv/bin/asen synth --copies var/copybench/copies
    .venv/bin/python -m bench.copy_protection --data var/copybench/data --copies var/copybench/copies \
        --out var/copybench/runs --seeds 0 1 2 --variant base= --variant instance="--instance-weight 1" \
        --json docs/copy_protection.json

A run whose OUT/<variant>-s<seed>/best.pt exists is not trained again (its evaluations are redone).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

from asen_search.service.jobs.demo import RECIPES

QUICK = RECIPES["quick"]  # the demo's quick recipe


def _train(data: Path, out: Path, seed: int, flags: str, recipe: str) -> float:
    from asen_search.service.cli.model_commands import parse_train_config

    if (out / "best.pt").is_file():
        return float("nan")
    started = time.monotonic()
    from asen_search.model.training.trainer import train

    cfg = parse_train_config(f"{recipe} {flags} --seed {seed}", data, out)
    train(cfg, progress=False)
    return time.monotonic() - started


def _run(args: argparse.Namespace, name: str, flags: str, seed: int) -> dict[str, Any]:
    from asen_search.model.copy_calibration import calibrate_copies, save_copy_calibration
    from asen_search.model.copy_eval import evaluate_copies
    from asen_search.model.data.dataset import load_dataset
    from asen_search.model.encoder import Encoder
    from asen_search.model.training.evaluate import encode_split, map_of_rows

    out = args.out / f"{name}-s{seed}"
    seconds = _train(args.data, out, seed, flags, args.recipe)
    checkpoint = out / "best.pt"
    encoder = Encoder.from_checkpoint(checkpoint, "cpu", extras=False)
    dataset = load_dataset(args.data)
    class_map = map_of_rows(dataset, "test", encode_split(encoder, dataset, "test", 32)[1])
    calibration = calibrate_copies(encoder, dataset, "valid", progress=False)
    save_copy_calibration(checkpoint, calibration)
    copies = evaluate_copies(encoder, args.copies, "test", calibration, args.false_match_rate, progress=False)
    result = {
        "variant": name,
        "flags": flags,
        "seed": seed,
        "train_seconds": seconds,
        "class_map": class_map.overall,
        "class_map_per_attribute": class_map.per_attribute,
        "calibration": {
            "changed_below": calibration.changed_below,
            "threshold": copies["summary"]["copy_score"].get("at_threshold", {}).get("threshold"),
        },
        "copies": copies,
    }
    (out / "copy_protection.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | seeds | class MAP | method | copy mAP all / 0 / 1 / 2 | R@1 | R@10 | R@50 | false matches "
        "per design @FMR | measured FMR: all / look-alikes | copies found @FMR |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    for variant, runs in by_variant.items():
        cm = np.array([r["class_map"] for r in runs]) * 100
        for method in ("whole_image", "best_single_attribute", "copy_score"):

            def mean(path: list[str], runs: list[dict[str, Any]] = runs, method: str = method) -> float:
                values = []
                for r in runs:
                    node: Any = r["copies"]["summary"][method]
                    for key in path:
                        node = node.get(key) if isinstance(node, dict) else None
                    if node is not None:
                        values.append(node)
                return float(np.mean(values)) if values else float("nan")

            label = (
                method
                if method != "best_single_attribute"
                else f"best single ({runs[0]['copies']['best_single_attribute'].split(':')[-1]})"
            )
            lines.append(
                f"| {variant} | {len(runs)} | {cm.mean():.2f} ± {cm.std():.2f} | {label} | "
                + " / ".join(f"{mean(['map', s]):.3f}" for s in ("all", "0", "1", "2"))
                + " | "
                + " | ".join(f"{mean([f'recall@{k}', 'all']):.3f}" for k in (1, 10, 50))
                + " | "
                + (
                    f"{mean(['at_threshold', 'false_matches_per_design']):.2f} | "
                    f"{mean(['at_threshold', 'false_match_rate']):.4f} / "
                    f"{mean(['at_threshold', 'lookalike_false_match_rate']):.4f} | "
                    f"{mean(['at_threshold', 'copies_found', 'all']):.3f} |"
                    if method == "copy_score"
                    else "- | - | - |"
                )
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the demo dataset (asen synth)")
    p.add_argument("--copies", type=Path, required=True, help="the copy benchmark (asen synth --copies)")
    p.add_argument("--out", type=Path, required=True, help="runs folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="a training variant: a name and asen train flags (repeatable)",
    )
    p.add_argument(
        "--recipe", default=QUICK, help=f"asen train flags every variant shares (default: {QUICK!r})"
    )
    p.add_argument("--false-match-rate", type=float, default=0.01)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    variants = [v.partition("=") for v in args.variant] or [("base", "=", "")]
    results = []
    for name, _, flags in variants:
        shlex.split(flags)  # fail early on a bad flag string
        for seed in args.seeds:
            result = _run(args, name, flags, seed)
            summary = result["copies"]["summary"]
            whole, single, score = (
                summary[k] for k in ("whole_image", "best_single_attribute", "copy_score")
            )
            print(
                f"{name} seed {seed}: class MAP {100 * result['class_map']:.2f}; copy mAP whole image "
                f"{whole['map']['all']:.3f}, best single {single['map']['all']:.3f}, copy score "
                f"{score['map']['all']:.3f} (R@10 {score['recall@10']['all']:.3f})",
                flush=True,
            )
            results.append(result)
    print(_table(results))
    if args.json:
        args.json.write_text(
            json.dumps({"recipe": args.recipe, "runs": results, "table": _table(results)}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()

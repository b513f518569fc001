"""`asen eval`: MAP and the ranking metrics on a split, tagging and calibration reports, the
validation precision curves beside the checkpoint; `--compare` puts several checkpoints side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asen_search.model.device import DEVICE_CHOICES
from asen_search.model.runtime import RUNTIME_CHOICES, RUNTIME_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="MAP, Recall@1/10 and nDCG@10 on a split (the spec's protocol)",
        description="Encodes every query and candidate of the split through the same path as the "
        "service and reports per-attribute MAP, Recall@1, Recall@10 (the share of queries with a "
        "same-value candidate in the top 1 / 10) and nDCG@10. With --compare, one table of several "
        "checkpoints on the same split.",
    )
    p.add_argument("--data", type=Path, required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--checkpoint",
        type=Path,
        help="the checkpoint to evaluate (with tagging reports, plots and "
        "the validation precision curves written beside it)",
    )
    which.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="CKPT",
        help="several checkpoints: one side-by-side table of their metrics on the same split",
    )
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_CHOICES}; default auto")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help=RUNTIME_HELP)
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even when an image is both a query and a candidate of one attribute (refused "
        "by default: the query finds itself and MAP is inflated)",
    )
    p.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the tagging plots go (confusion matrix of the worst attribute, reliability of the "
        "confidences); default: eval-SPLIT beside the checkpoint",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    if args.compare:
        _compare(args)
    else:
        _eval(args)


def _open(args: argparse.Namespace, ds, path: Path):
    """The checkpoint's Encoder, after checking it fits the dataset and the split is evaluable."""
    from asen_search.model.encoder import Encoder

    encoder = Encoder.from_checkpoint(path, args.device, args.runtime)
    names = [a.name for a in ds.attributes]
    if names != encoder.attribute_names:
        raise SystemExit(
            f"error: {path}: the checkpoint's attributes {encoder.attribute_names} differ from the "
            f"dataset's {names}"
        )
    overlap = ds.query_candidate_overlap(args.split)
    if overlap and not args.allow_overlap:
        shown = "\n  ".join(overlap[:10]) + (
            f"\n  ... and {len(overlap) - 10} more" if len(overlap) > 10 else ""
        )
        raise ValueError(
            f"{len(overlap)} queries of the {args.split} split are also candidates of the same "
            f"attribute (each would find itself and inflate MAP):\n  {shown}\nmake the query and "
            "candidate lists disjoint, or pass --allow-overlap to evaluate anyway"
        )
    return encoder


def _compare(args: argparse.Namespace) -> None:
    from asen_search.model.data.dataset import load_dataset
    from asen_search.model.training.evaluate import encode_split, map_of_rows
    from asen_search.model.training.retrieval_map import compare_table

    missing = [str(p) for p in args.compare if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"error: no such checkpoint: {', '.join(missing)}")
    ds = load_dataset(args.data)
    reports = {}
    for path in args.compare:
        encoder = _open(args, ds, path)
        reports[str(path)] = map_of_rows(
            ds, args.split, encode_split(encoder, ds, args.split, args.batch_size)[1]
        )
    print(f"{args.split} split of {args.data}:")
    print(compare_table(reports))
    if args.json:
        args.json.write_text(json.dumps({k: r.to_json() for k, r in reports.items()}, indent=2) + "\n")


def _eval(args: argparse.Namespace) -> None:
    from asen_search.model.data.dataset import load_dataset
    from asen_search.model.training.evaluate import encode_split, map_of_rows
    from asen_search.model.training.tagging import plot_confusion, plot_reliability, tagging_report

    ds = load_dataset(args.data)
    encoder = _open(args, ds, args.checkpoint)
    rows, vectors = encode_split(encoder, ds, args.split, args.batch_size)
    report = map_of_rows(ds, args.split, vectors)
    print(report.table())
    result = report.to_json()
    if encoder.prototypes is None:
        print(
            "tagging and search by value: not measured (the checkpoint has no value prototypes; add them with "
            "`asen prototypes`)"
        )
    else:
        tagging = tagging_report(ds.attributes, encoder.prototypes, rows, vectors)
        print(f"\ntagging and search by value ({args.split} split):\n" + tagging.table())
        result["tagging"] = tagging.to_json()
        plots = args.plots or args.checkpoint.parent / f"eval-{args.split}"
        plots.mkdir(parents=True, exist_ok=True)
        worst = next(a for a in ds.attributes if a.name == tagging.worst)
        plot_confusion(
            plots / "confusion_worst.png", worst, tagging.confusion[worst.name], tagging.accuracy[worst.name]
        )
        plot_reliability(
            plots / "reliability.png",
            tagging.reliability,
            f"tag confidences on the {args.split} split (calibrated on valid)",
        )
        print(f"plots: {plots / 'confusion_worst.png'} ({worst.name}), {plots / 'reliability.png'}")
    if "valid" in ds.splits_available():
        _write_thresholds(args, ds, encoder, result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _write_thresholds(args: argparse.Namespace, ds, encoder, result: dict) -> None:
    """The score -> precision curves of the validation split, beside the checkpoint (the service and
    `asen scan` read them for `min_precision`), and their plot."""
    from asen_search.fileio import atomic_write
    from asen_search.model.thresholds import compute_thresholds, plot_curves, sidecar_path
    from asen_search.model.training.evaluate import encode_split

    rows, vectors = encode_split(encoder, ds, "valid", args.batch_size)
    thresholds = compute_thresholds(ds.attributes, rows, vectors)
    thresholds.fingerprint = encoder.fingerprint
    path = sidecar_path(args.checkpoint)
    atomic_write(path, lambda fh: fh.write(json.dumps(thresholds.to_json()).encode()))
    plots = args.plots or args.checkpoint.parent / f"eval-{args.split}"
    plots.mkdir(parents=True, exist_ok=True)
    plot_curves(plots / "pr_curves.png", thresholds, "same value at score >= t, validation split")
    levels = {name: thresholds.levels(name) for name in thresholds.curves}
    result["thresholds"] = levels
    print("\nscores for precision 0.9 / 0.95 / 0.99 (validation split; '-': never reached):")
    for name, by_level in levels.items():
        print(f"  {name:<24} " + "  ".join("-" if v is None else f"{v:.4f}" for v in by_level.values()))
    print(f"precision curves: {path}; plot: {plots / 'pr_curves.png'}")

"""`asen` subcommands of the model package: synth, train, prototypes, import-reference, import-fashionai."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from asen_search.model.device import DEVICE_CHOICES
from asen_search.model.runtime import RUNTIME_CHOICES, RUNTIME_HELP
from asen_search.service.cli.config_flags import add_config_options, config_from_args

if TYPE_CHECKING:
    from asen_search.model.training.train_config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="write the built-in demo dataset (or, with --copies, the copy benchmark)"
    )
    p.add_argument("out_dir", type=Path)
    _synth_options(p)
    copies = p.add_argument_group("the copy benchmark (design protection: docs/protection.md)")
    copies.add_argument(
        "--copies",
        action="store_true",
        help="write the copy benchmark instead of the demo dataset: "
        "valid and test splits of protected designs, their copies (0, 1 or 2 attributes changed, "
        "photographed anew), look-alike distractors and ordinary garments, with copies_<split>.jsonl "
        "naming each design's copies (--train/--valid/--test do not apply)",
    )
    copies.add_argument("--designs", type=int, default=100, help="protected designs per split (default 100)")
    copies.add_argument(
        "--background", type=int, default=600, help="ordinary garments per split (default 600)"
    )
    p.set_defaults(func=_synth)

    p = sub.add_parser("train", help="train ASEN++ (or a baseline) in two stages")
    p.add_argument("--data", type=Path, required=True, help="dataset directory (dataset format)")
    p.add_argument("--out", type=Path, required=True, help="run directory: checkpoints, log.jsonl")
    _train_options(p)
    p.set_defaults(func=_train)
    _register_others(sub)


def _synth_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", type=int, default=4000, help="train images (default 4000)")
    p.add_argument("--valid", type=int, default=700, help="valid images (default 700)")
    p.add_argument("--test", type=int, default=1400, help="test images (default 1400)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="picture size factor (default 1: shorter side 200-360 "
        "px; 1.6 draws FashionAI-like sizes around 512 px)",
    )
    p.add_argument(
        "--nuisance",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change how pictures vary, e.g. rotation=25, occluders=4, brightness=0.55,1.35 (repeatable; "
        "names: rotation, garment_scale, clutter, occluders, contrast, brightness, shadow, jpeg_quality)",
    )
    p.add_argument("--workers", type=int, default=None, help="drawing processes (default: one per core)")


def _train_options(p: argparse.ArgumentParser) -> None:
    """Every `asen train` option but --data and --out: one per TrainConfig field (model/training/train_config.py)."""
    from asen_search.model.training.train_config import TrainConfig

    add_config_options(p, TrainConfig)


class _OptionsParser(argparse.ArgumentParser):
    """Parses a flag string given to another command (`asen demo --train-args`): errors raise
    ValueError naming the string instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"{self.prog}: {message}")


def parse_synth_options(options: str) -> argparse.Namespace:
    """`asen synth` flags from one string, e.g. "--train 60 --valid 30 --test 60"."""
    p = _OptionsParser(prog="asen synth options", add_help=False)
    _synth_options(p)
    return p.parse_args(shlex.split(options))


def parse_train_config(options: str, data: Path, out: Path) -> TrainConfig:
    """A TrainConfig from `asen train` flags in one string (data and out given), e.g.
    "--backbone tiny --time-budget 0.2"."""
    p = _OptionsParser(prog="asen train options", add_help=False)
    _train_options(p)
    args = p.parse_args(shlex.split(options))
    args.data, args.out = data, out
    return train_config(args)


def _register_others(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prototypes",
        help="add value prototypes and tag calibration to a checkpoint (search by "
        "value, POST /tag, predicted tags)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="updated in place (its fingerprint changes: rebuild indexes built with it)",
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the dataset: prototypes from its train split, calibration on its valid split",
    )
    p.add_argument(
        "--per-value", type=int, default=200, help="training images averaged per value (default 200; 0: all)"
    )
    p.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_CHOICES}; default auto")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help=RUNTIME_HELP)
    p.set_defaults(func=_prototypes)

    p = sub.add_parser("import-reference", help="convert a released reference ASEN++ checkpoint")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument(
        "--attributes",
        type=Path,
        help="meta.json of the dataset the checkpoint was trained on (attribute names and values)",
    )
    p.set_defaults(func=_import_reference)

    p = sub.add_parser("import-fashionai", help="convert the FashionAI label CSV into the dataset format")
    p.add_argument("csv", type=Path)
    p.add_argument("image_root", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--copy", action="store_true", help="copy images instead of linking the image root")
    p.set_defaults(func=_import_fashionai)


def _synth(args: argparse.Namespace) -> None:
    from asen_search.model.data.synth import generate_dataset, parse_nuisance

    if args.copies:
        from asen_search.model.data.copies import generate_copies

        counts = generate_copies(
            args.out_dir,
            args.designs,
            args.background,
            seed=args.seed,
            scale=args.scale,
            workers=args.workers,
            nuisance=parse_nuisance(args.nuisance),
        )
        print(
            f"copy benchmark written to {args.out_dir}: "
            + ", ".join(f"{n} {s} images" for s, n in counts.items())
        )
        return
    generate_dataset(
        args.out_dir,
        args.train,
        args.valid,
        args.test,
        seed=args.seed,
        scale=args.scale,
        workers=args.workers,
        nuisance=parse_nuisance(args.nuisance),
    )
    print(f"demo dataset written to {args.out_dir}")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed `asen train` flags."""
    from asen_search.model.training.train_config import TrainConfig

    config: TrainConfig = config_from_args(TrainConfig, args, data=args.data, out=args.out)
    return config


def _train(args: argparse.Namespace) -> None:
    from asen_search.model.training.trainer import train

    summary = train(train_config(args))
    print(json.dumps(summary, indent=2))


def _prototypes(args: argparse.Namespace) -> None:
    from asen_search.model.checkpoint import update_extra
    from asen_search.model.data.dataset import load_dataset
    from asen_search.model.encoder import Encoder
    from asen_search.model.prototypes import compute_prototypes

    ds = load_dataset(args.data)
    encoder = Encoder.from_checkpoint(args.checkpoint, args.device, args.runtime, extras=False)
    prototypes, report, thresholds = compute_prototypes(encoder, ds, args.per_value)
    update_extra(
        args.checkpoint,
        prototypes=prototypes.to_extra(),
        thresholds=thresholds.to_json() if thresholds else None,
    )
    print(json.dumps(report, indent=2))
    print(
        f"stored in {args.checkpoint}; its fingerprint changed: rebuild indexes built with the old file "
        "(`asen index build`)"
    )


def _import_reference(args: argparse.Namespace) -> None:
    from asen_search.model.reference_import import import_reference

    import_reference(args.src, args.out, args.attributes)
    print(f"converted {args.src} -> {args.out}")


def _import_fashionai(args: argparse.Namespace) -> None:
    from asen_search.model.data.fashionai_import import import_fashionai

    counts = import_fashionai(
        args.csv, args.image_root, args.out_dir, seed=args.seed, link="copy" if args.copy else "symlink"
    )
    print(json.dumps(counts, indent=2))

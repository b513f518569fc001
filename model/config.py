"""Configuration objects that travel with a checkpoint: architecture and preprocessing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

VARIANTS = ("asen++", "asen-global", "csn", "triplet")
CROP_RULES = ("center", "pad")
MIRROR_AVERAGES = ("off", "crops", "images")  # Preprocess.mirror_average


@dataclass(frozen=True)
class BranchConfig:
    """One branch: which backbone, cut at which stride, and the attention head's sizes."""

    backbone: str = "tf_efficientnet_lite0"  # a registered backbone (model/nn/backbones.py)
    stride: int = 16  # feature map that feeds the attention: 16 or 32
    input_size: int = 224  # square input side in pixels
    common_dim: int = 128  # ASA common size c'
    reduction: int = 2  # ACA reduction
    out_dim: int = 128  # embedding size of the branch
    frozen_stages: int = -1  # leading backbone stages kept frozen; -1 = all of them
    positions: bool = False  # the head also pools position channels (y, x, y^2, x^2, xy): attention.py
    glimpses: int = 1  # spatial attention maps per attribute, pooled side by side (attention.py)
    extent: bool = False  # also pool the garment's extent and the glimpses' places on it (attention.py)
    coarse: bool = False  # stride 16 with the stride-32 features upsampled beside them (backbones.py)

    def __post_init__(self) -> None:
        if self.stride not in (16, 32):
            raise ValueError(f"stride must be 16 or 32, got {self.stride}")
        if self.coarse and self.stride != 16:
            raise ValueError("the stride-32 features are added beside stride 16 only (stride 16)")
        if not 1 <= self.glimpses <= 8:
            raise ValueError(f"glimpses must be 1 to 8, got {self.glimpses}")
        if self.input_size < 32 or self.input_size % 16:
            raise ValueError(f"input size must be a multiple of 16 and >= 32, got {self.input_size}")


@dataclass(frozen=True)
class Preprocess:
    """Everything needed to turn a PIL image into the network's inputs (travels with the weights)."""

    global_size: int = 224
    local_size: int = 112
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop_rule: str = "center"  # "center": resize shorter side + centre crop; "pad": letterbox
    roi_threshold: float = 0.1
    beta: float = 0.6  # weight of the global branch in the fused similarity
    betas: tuple[float, ...] | None = None  # one beta per attribute, chosen on validation (None: `beta`)
    roi_thresholds: tuple[float, ...] | None = None  # one RoI threshold per attribute (None: `roi_threshold`)
    # left-right mirrors averaged into every embedding (model/encoder.py): "off"; "crops", each RoI crop's
    # local embedding with its mirror's; "images", the whole image's vector with its mirror's. "off" for
    # checkpoints written before it existed, so their catalogues stay valid
    mirror_average: str = "off"

    def __post_init__(self) -> None:
        if self.crop_rule not in CROP_RULES:
            raise ValueError(f"crop rule must be one of {CROP_RULES}, got {self.crop_rule!r}")
        if not 0.0 <= self.roi_threshold < 1.0:
            raise ValueError(f"RoI threshold must be in [0, 1), got {self.roi_threshold}")
        if self.roi_thresholds is not None and not all(0.0 <= t < 1.0 for t in self.roi_thresholds):
            raise ValueError(
                f"every per-attribute RoI threshold must be in [0, 1), got {self.roi_thresholds}"
            )
        if self.mirror_average not in MIRROR_AVERAGES:
            raise ValueError(f"mirror_average must be one of {MIRROR_AVERAGES}, got {self.mirror_average!r}")
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")
        if self.betas is not None and not all(0.0 < b <= 1.0 for b in self.betas):
            raise ValueError(f"every per-attribute beta must be in (0, 1], got {self.betas}")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture: variant, branches, attribute embedding and ablation switches."""

    variant: str = "asen++"
    n_attributes: int = 1
    attr_dim: int = 512
    global_branch: BranchConfig = field(default_factory=BranchConfig)
    local_branch: BranchConfig = field(
        default_factory=lambda: BranchConfig(input_size=112, common_dim=128, out_dim=128)
    )
    use_asa: bool = True
    use_aca: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.n_attributes < 1:
            raise ValueError("a model needs at least one attribute")

    @property
    def has_local(self) -> bool:
        return self.variant == "asen++"

    @property
    def embedding_dim(self) -> int:
        """Size of the final (fused, normalised) vector per attribute."""
        if self.has_local:
            return self.global_branch.out_dim + self.local_branch.out_dim
        return self.global_branch.out_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        values = dict(data)
        for key in ("global_branch", "local_branch"):
            if isinstance(values.get(key), dict):
                values[key] = BranchConfig(**values[key])
        return cls(**values)


def preprocess_from_dict(data: dict[str, Any]) -> Preprocess:
    values = dict(data)
    for key in ("mean", "std", "betas", "roi_thresholds"):
        if values.get(key) is not None:
            values[key] = tuple(float(v) for v in values[key])
    return Preprocess(**values)

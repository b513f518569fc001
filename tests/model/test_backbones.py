"""The backbone registry: what each backbone declares matches what is built, and comes from timm's
and torchvision's own configurations."""

from __future__ import annotations

import pytest

from asen_search.model.config import BranchConfig
from asen_search.model.nn import backbones
from asen_search.model.nn.backbones import BackboneSpec, backbone_names, backbone_spec, build_backbone
from asen_search.model.training.train_config import TrainConfig
from asen_search.model.training.train_config import frozen_stages as _frozen


@pytest.mark.parametrize("name", backbone_names())
@pytest.mark.parametrize("stride", [16, 32])
def test_declared_stages_and_channels_are_what_is_built(name: str, stride: int) -> None:
    spec = backbone_spec(name)
    built = build_backbone(BranchConfig(name, stride, 64, 16, 2, 16), pretrained=False)
    assert (len(built.stages), built.out_channels) == (spec.stages[stride], spec.channels[stride])


def test_normalisation_comes_from_the_weights_own_config() -> None:
    assert backbone_spec("tf_efficientnet_lite0").mean == (0.5, 0.5, 0.5)  # timm's pretrained_cfg
    assert backbone_spec("resnet50").mean == pytest.approx(
        (0.485, 0.456, 0.406)
    )  # torchvision's weights meta
    assert backbone_spec("resnet50").std == pytest.approx((0.229, 0.224, 0.225))
    assert (
        TrainConfig(data=".", out=".", backbone="resnet50").preprocess().mean
        == backbone_spec("resnet50").mean
    )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown backbone"):
        backbone_spec("vgg16")


def test_trainable_stages_count_from_the_end() -> None:
    assert _frozen("tf_efficientnet_lite0", 16, 0) == -1
    assert _frozen("tf_efficientnet_lite0", 16, 2) == 4 and _frozen("tf_efficientnet_lite0", 32, 2) == 6
    assert _frozen("resnet50", 16, 1) == 3 and _frozen("tiny", 32, 9) == 0
    assert (
        TrainConfig(data=".", out=".", backbone="resnet50").model_config(7).local_branch.backbone
        == "resnet34"
    )  # type: ignore[arg-type]


def test_reading_a_backbone_spec_leaves_the_seeded_random_sequence_alone() -> None:
    """backbone_spec builds a throwaway timm model the first time: it must not draw from the global
    generator, or a seeded run's initial model would depend on whether it was the first in its process."""
    import torch

    from asen_search.model.nn.backbones import backbone_spec

    torch.manual_seed(5)
    expected = torch.rand(3)
    backbone_spec.cache_clear()
    torch.manual_seed(5)
    backbone_spec("tf_efficientnet_lite0")
    assert torch.equal(torch.rand(3), expected)


def test_a_backbone_is_added_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """One decorator declares a backbone: it is then built, specified and offered by `asen train`."""
    from torch import nn

    from asen_search.service.cli.main import build_parser

    monkeypatch.setattr(backbones, "_REGISTRY", dict(backbones._REGISTRY))

    def spec(name: str) -> BackboneSpec:
        return BackboneSpec(name, {16: 1, 32: 2}, {16: 4, 32: 4}, (0.5,) * 3, (0.5,) * 3, 64, name, False)

    @backbones.register_backbone("two-convs", spec=spec)
    def _stages(cfg: BranchConfig, pretrained: bool, weights: object) -> tuple[list[nn.Module], int]:
        convs = [nn.Conv2d(3, 4, 3, 16, 1), nn.Conv2d(4, 4, 3, 2, 1)]
        return convs[: 1 if cfg.stride == 16 else 2], 4

    assert backbone_names()[0] == "tf_efficientnet_lite0" and backbone_names()[-1] == "two-convs"
    built = build_backbone(BranchConfig("two-convs", 32, 64, 16, 2, 16), pretrained=False)
    assert (len(built.stages), built.out_channels) == (2, 4) and backbone_spec.__wrapped__(
        "two-convs"
    ).input_size == 64
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--backbone", "two-convs"])
    assert args.backbone == "two-convs"
    with pytest.raises(ValueError, match="registered twice"):
        backbones.register_backbone("two-convs", spec=spec)(_stages)


def test_coarse_adds_the_upsampled_stride_32_features_beside_stride_16() -> None:
    """`--coarse`: the stride-16 map unchanged, then the stride-32 blocks' output upsampled onto its grid;
    the whole stem frozen (cached); a backbone without it is refused, not silently built without."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    plain = build_backbone(BranchConfig(input_size=96), pretrained=False)
    coarse = build_backbone(BranchConfig(input_size=96, coarse=True), pretrained=False)
    coarse.load_state_dict(plain.state_dict(), strict=False)  # the same stride-16 stages
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        got, base = coarse.stem(x), plain.stem(x)
        deep = coarse.stages[-1].coarse(base)
    assert got.shape == (2, coarse.out_channels, 6, 6) and coarse.out_channels == 112 + 320
    assert deep.shape[-2:] == (3, 3)
    torch.testing.assert_close(got[:, :112], base)
    torch.testing.assert_close(got[:, 112:], F.interpolate(deep, size=(6, 6), mode="bilinear"))
    assert coarse.n_frozen == len(coarse.stages) and not any(p.requires_grad for p in coarse.parameters())
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        build_backbone(BranchConfig("tiny", input_size=64, coarse=True), pretrained=False)
    with pytest.raises(ValueError, match="stride 16"):
        BranchConfig(stride=32, coarse=True)
    cfg = TrainConfig(data=".", out=".", coarse=True)
    model_cfg = cfg.model_config(3)
    assert model_cfg.global_branch.coarse and not model_cfg.local_branch.coarse
    with pytest.raises(ValueError, match="frozen"):
        TrainConfig(data=".", out=".", coarse=True, trainable_stages=1).model_config(3)

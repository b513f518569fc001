"""The fusion weight beta: chosen per attribute on validation, stored in the checkpoint, applied by
the Encoder; and best.pt is the best validated model of either training stage."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asen_search.model.checkpoint import load_checkpoint
from asen_search.model.config import Preprocess
from asen_search.model.data.dataset import Attribute, Tagged
from asen_search.model.encoder import Encoder
from asen_search.model.nn.asen import ASENModel, fusion_beta
from asen_search.model.nn.losses import joint_loss
from asen_search.model.training.evaluate import ValidationSet
from asen_search.model.training.trainer import TrainConfig, train
from tests.helpers.models import tiny_config


def test_choose_betas_picks_the_branch_that_ranks_each_attribute() -> None:
    """Attribute 0: the global branch separates the values and the local one is noise (beta 1);
    attribute 1: the other way round (the smallest beta); the report is the MAP at those betas."""
    rng = np.random.default_rng(0)
    n, dim = 40, 8
    values = np.tile(np.arange(4), n // 4)
    centres = rng.normal(size=(4, dim)) * 4

    def clean() -> np.ndarray:
        return np.concatenate([centres[values] + rng.normal(size=(n, dim)) * 0.3] * 2)

    def noise() -> np.ndarray:
        return rng.normal(size=(2 * n, dim))

    # rows: attribute 0 queries, attribute 1 queries, attribute 0 candidates, attribute 1 candidates
    g0, l0, g1, l1 = clean(), noise(), noise(), clean()
    g = torch.tensor(np.concatenate([g0[:n], g1[:n], g0[n:], g1[n:]]), dtype=torch.float32)[:, None]
    loc = torch.tensor(np.concatenate([l0[:n], l1[:n], l0[n:], l1[n:]]), dtype=torch.float32)[:, None]
    queries = Tagged(np.arange(2 * n), np.repeat([0, 1], n), np.concatenate([values, values]))
    candidates = Tagged(np.arange(2 * n), np.repeat([0, 1], n), np.concatenate([values, values]))
    attributes = (Attribute("a", ("v0", "v1", "v2", "v3")), Attribute("b", ("v0", "v1", "v2", "v3")))
    valid = ValidationSet(attributes, queries, candidates, images=None)  # type: ignore[arg-type]
    model = ASENModel(tiny_config(n_attributes=2))
    betas, report = valid.choose_betas(model, g, loc)
    assert betas[0] == 1.0 and betas[1] <= 0.3
    assert report.per_attribute["a"] > 0.9 and report.per_attribute["b"] > 0.9
    at_fixed = valid.report(model, g, loc, 0.6)
    assert report.overall > at_fixed.overall + 0.05


def test_fuse_with_one_beta_per_row_equals_fusing_each_row() -> None:
    model = ASENModel(tiny_config(n_attributes=3))
    g, loc = torch.randn(5, 16), torch.randn(5, 16)
    attrs = torch.tensor([0, 2, 1, 1, 0])
    pre = Preprocess(global_size=64, local_size=32, betas=(1.0, 0.3, 0.7))
    fused = model.fuse(g, loc, fusion_beta(pre, attrs))
    for i, a in enumerate(attrs.tolist()):
        assert torch.allclose(fused[i], model.fuse(g[i : i + 1], loc[i : i + 1], pre.betas[a])[0], atol=1e-6)


def test_encoder_applies_each_attributes_beta() -> None:
    """The global half of an encoded vector carries beta of its squared length, the local half 1 - beta."""
    torch.manual_seed(0)
    model = ASENModel(tiny_config(n_attributes=3)).eval()
    betas = (1.0, 0.3, 0.8)
    attributes = [Attribute(f"a{i}", ("x", "y")) for i in range(3)]
    encoder = Encoder(model, Preprocess(global_size=64, local_size=32, betas=betas), attributes)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 70, 3), dtype=np.uint8))
    vectors = encoder.encode([image])[0]
    d_g = model.cfg.global_branch.out_dim
    for a, beta in enumerate(betas):
        assert float(np.sum(vectors[a, :d_g] ** 2)) == pytest.approx(beta, abs=1e-5)
        assert float(np.sum(vectors[a, d_g:] ** 2)) == pytest.approx(1 - beta, abs=1e-5)


@pytest.mark.slow  # two training stages with the real backbone (CI runs the slow tests too)
def test_stage_two_never_replaces_a_better_stage_one_model(
    demo_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage 2 that unlearns (it maximises its loss, fast): best.pt stays the stage-1 model (the
    global branch alone, beta 1 everywhere), and the summary, log and checkpoint agree on it."""
    from asen_search.model.training import trainer

    monkeypatch.setattr(trainer, "joint_loss", lambda *args, **kw: -joint_loss(*args, **kw))
    cfg = TrainConfig(
        data=demo_dataset,
        out=tmp_path / "run",
        global_size=96,
        local_size=64,
        embed_dim=32,
        common_dim=32,
        stage1_epochs=1,
        stage2_epochs=1,
        triplets_per_epoch=1600,
        seed=1,
        prototypes=False,
        lr_global=1e-2,
        lr_local=1e-2,
        proxy_weight=0.0,  # the proxy term would keep stage 2 learning: this one must only unlearn
    )
    summary = train(cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == [1, 2]
    assert log[1]["valid_map"] < log[0]["valid_map"]  # stage 2 made it worse ...
    assert summary["best_valid_map"] == pytest.approx(log[0]["valid_map"])  # ... and did not count
    assert summary["best_at"]["stage"] == 1
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt.extra["stage"] == 1 and ckpt.preprocess.betas == (1.0,) * len(ckpt.attributes)
    assert set(log[1]["betas"]) == {a.name for a in ckpt.attributes}  # stage 2 logs its choice
    assert (tmp_path / "run" / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_fixed_beta_is_kept(demo_dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        data=demo_dataset,
        out=tmp_path / "run",
        backbone="tiny",
        global_size=64,
        local_size=32,
        embed_dim=16,
        common_dim=16,
        stage1_epochs=1,
        stage2_epochs=1,
        triplets_per_epoch=320,
        seed=1,
        prototypes=False,
        beta=0.4,
    )
    train(cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "betas" not in log[-1]  # nothing chosen in stage 2
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    if ckpt.extra["stage"] == 2:
        assert ckpt.preprocess.betas is None and ckpt.preprocess.beta == 0.4
    else:
        assert ckpt.preprocess.betas == (1.0,) * len(ckpt.attributes)

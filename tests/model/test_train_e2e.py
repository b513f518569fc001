"""A seconds-long end-to-end training run on a tiny dataset with a tiny backbone."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.model.nn.asen import ASENModel
from asen_search.model.training.evaluate import evaluate_encoder
from asen_search.model.training.trainer import TrainConfig, focus_pair_weights, train


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    # the real pretrained backbone at small input sizes: a few hundred steps of head training suffice
    base = TrainConfig(
        data=data,
        out=out,
        global_size=96,
        local_size=64,
        embed_dim=32,
        common_dim=32,
        stage1_epochs=2,
        stage2_epochs=1,
        triplets_per_epoch=3200,
        seed=1,
        prototypes=False,
    )
    return replace(base, **kw)


def test_training_beats_untrained_model(demo_dataset: Path, tmp_path: Path) -> None:
    cfg = _cfg(demo_dataset, tmp_path / "run", prototypes=True)
    summary = train(cfg, progress=False)
    ds = load_dataset(demo_dataset)
    trained = evaluate_encoder(
        Encoder.from_checkpoint(tmp_path / "run" / "best.pt"), ds, "test", progress=False
    )
    torch.manual_seed(cfg.seed)
    untrained = Encoder(ASENModel(cfg.model_config(len(ds.attributes))), cfg.preprocess(), ds.attributes)
    before = evaluate_encoder(untrained, ds, "test", progress=False)
    assert trained.overall > before.overall + 0.03, (trained.overall, before.overall)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [(1, 1), (1, 2), (2, 1)]
    assert all(0 <= r["valid_map"] <= 1 and r["loss"] is not None for r in log)
    assert summary["best_valid_map"] == pytest.approx(max(r["valid_map"] for r in log))  # either stage
    # the value prototypes and tag temperatures are added to best.pt at the end
    assert summary["prototypes"]["train_rows"] > 0 and set(summary["prototypes"]["temperature"]) == {
        a.name for a in ds.attributes
    }
    encoder = Encoder.from_checkpoint(tmp_path / "run" / "best.pt")
    assert (
        encoder.prototypes is not None
        and encoder.prototypes.temperature == summary["prototypes"]["temperature"]
    )
    assert encoder.thresholds is not None and set(encoder.thresholds.curves) == {
        a.name for a in ds.attributes
    }
    # and the label-free copy calibration beside it, made with the final checkpoint
    assert summary["prototypes"]["copy_calibration"]["lookalike_pairs"] > 0
    assert (
        encoder.copy_calibration is not None
        and encoder.copy_calibration.lookalike_pairs
        == summary["prototypes"]["copy_calibration"]["lookalike_pairs"]
    )


def test_resume_continues_where_it_stopped(demo_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    small = dict(variant="asen-global", backbone="tiny", global_size=64, triplets_per_epoch=320)
    train(_cfg(demo_dataset, out, stage1_epochs=1, **small), progress=False)
    train(_cfg(demo_dataset, out, stage1_epochs=2, resume=True, **small), progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [(1, 1), (1, 2)]


def test_same_seed_same_model(demo_dataset: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        train(
            _cfg(
                demo_dataset,
                tmp_path / name,
                variant="csn",
                backbone="tiny",
                global_size=64,
                stage1_epochs=1,
                triplets_per_epoch=320,
            ),
            progress=False,
        )
        runs.append(json.loads((tmp_path / name / "log.jsonl").read_text())["loss"])
    assert runs[0] == runs[1]


def test_time_budget_stops_training(demo_dataset: Path, tmp_path: Path) -> None:
    summary = train(
        _cfg(
            demo_dataset,
            tmp_path / "run",
            time_budget=0.25,
            triplets_per_epoch=100_000,
            backbone="tiny",
            global_size=64,
            local_size=32,
        ),
        progress=False,
    )
    assert summary["seconds"] < 0.25 * 60 + 10
    assert (tmp_path / "run" / "best.pt").is_file()
    assert {"prepare", "stage1"} <= set(summary["phases"])


def test_trainable_backbone_stages_are_fine_tuned(demo_dataset: Path, tmp_path: Path) -> None:
    from asen_search.model.checkpoint import load_checkpoint

    cfg = _cfg(
        demo_dataset,
        tmp_path / "run",
        backbone="tiny",
        global_size=64,
        local_size=32,
        trainable_stages=1,
        stage1_epochs=1,
        stage2_epochs=1,
        triplets_per_epoch=320,
    )
    train(cfg, progress=False)
    trained = load_checkpoint(tmp_path / "run" / "best.pt").model
    torch.manual_seed(cfg.seed)
    initial = ASENModel(cfg.model_config(len(load_dataset(demo_dataset).attributes)))
    last, first = trained.global_backbone.stages[-1], trained.global_backbone.stages[0]
    assert not torch.equal(last[0].weight, initial.global_backbone.stages[-1][0].weight)  # fine-tuned
    assert torch.equal(first[0].weight, initial.global_backbone.stages[0][0].weight)  # frozen
    assert not torch.equal(
        trained.local_backbone.stages[-1][0].weight, initial.local_backbone.stages[-1][0].weight
    )


def test_attribute_focus_draws_the_weak_attributes_more(demo_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    small = dict(variant="asen-global", backbone="tiny", global_size=64, triplets_per_epoch=320)
    train(_cfg(demo_dataset, out, stage1_epochs=2, attribute_focus=0.5, **small), progress=False)
    first, second = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert "attribute_weights" not in first  # uniform before the first validation
    weights, errors = second["attribute_weights"], [1 - m for m in first["valid_per_attribute"].values()]
    assert sum(weights) == pytest.approx(1.0, abs=1e-3)
    expected = [0.5 / len(errors) + 0.5 * max(e, 1e-3) / sum(max(e, 1e-3) for e in errors) for e in errors]
    assert weights == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="attribute-focus"):
        train(_cfg(demo_dataset, tmp_path / "bad", attribute_focus=1.5, **small), progress=False)


def test_pair_focus_draws_the_confused_value_pairs_more(demo_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    small = dict(variant="asen-global", backbone="tiny", global_size=64, triplets_per_epoch=3200)
    train(_cfg(demo_dataset, out, stage1_epochs=2, pair_focus=1.0, **small), progress=False)
    first, second = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    ds = load_dataset(demo_dataset)
    hardest = easiest = 0.0
    expected = 0.0  # what the weights promise: the ratio of the two pairs' first-epoch losses
    for a, k in enumerate(ds.n_values):
        assert all(first["pair_loss"][a][v][v] is None for v in range(k))  # never a pair
        cells = [(first["pair_loss"][a][p][n], p, n) for p in range(k) for n in range(k) if p != n]
        cells = sorted(c for c in cells if c[0] is not None)
        # the second epoch drew the pair the first confused most more often than the one it confused least
        hardest += second["pair_triplets"][a][cells[-1][1]][cells[-1][2]]
        easiest += second["pair_triplets"][a][cells[0][1]][cells[0][2]]
        expected += cells[-1][0] / max(cells[0][0], 1e-3) / len(ds.n_values)
    assert expected > 1.5 and hardest > 1.3 * easiest, (hardest, easiest, expected)


def test_focus_pair_weights() -> None:
    loss = [[[None, 0.3, 0.1], [0.0, None, None], [0.2, 0.2, None]], [[None]]]
    weights = focus_pair_weights(loss, [3, 1], 0.5)
    assert weights[1] is None  # one value: no pair
    w = weights[0]
    assert w is not None and w.shape == (3, 3) and np.diag(w).tolist() == [0.0, 0.0, 0.0]
    # (1, 2) was not drawn: the mean of the others (0.16); the total of the losses is 0.96
    hard = np.array([[0, 0.3, 0.1], [0.0, 0, 0.16], [0.2, 0.2, 0]]) / 0.96
    np.testing.assert_allclose(w, 0.5 * (1 - np.eye(3)) / 6 + 0.5 * hard)
    assert w.sum() == pytest.approx(1.0)
    # no loss anywhere: uniform
    np.testing.assert_allclose(
        focus_pair_weights([[[None, 0.0], [0.0, None]]], [2], 1.0)[0], [[0, 0.5], [0.5, 0]]
    )


def test_mirror_trains_on_mirrored_copies(demo_dataset: Path, tmp_path: Path) -> None:
    from PIL import Image

    from asen_search.model.training.trainer import Trainer

    cache = tmp_path / "cache"
    cfg = _cfg(demo_dataset, tmp_path / "run", mirror=True, cache_dir=cache, triplets_per_epoch=320)
    trainer = Trainer(cfg, progress=False)
    originals = list(load_dataset(demo_dataset).split("train").paths)
    n = len(originals)
    assert trainer.data.mirror_offset == n and len(trainer.data.train.global_maps) == 2 * n
    # the cached images are the originals mirrored (up to JPEG)
    mirrors = sorted((cache / "mirrors-v1").glob("*.jpg"))
    assert len(mirrors) == len({p.read_bytes() for p in originals})
    first = np.asarray(Image.open(originals[0]).convert("RGB"), dtype=np.float32)
    from asen_search.model.training.instance import mirror_paths

    mirror = np.asarray(Image.open(mirror_paths(originals[:1], cache, False)[0]).convert("RGB"), np.float32)
    assert np.abs(mirror - first[:, ::-1]).mean() < 3 < np.abs(mirror - first).mean()
    # about half of the class triplets' images are mirrors, each of an image with the same labels
    rows = trainer._triplets(1, 0, 2000, None)
    mirrored = rows[:, 1:4] >= n
    assert 0.45 < mirrored.mean() < 0.55
    attr, (anchor, positive, negative) = rows[:, 0], (rows[:, 1:4] % n).T
    value = trainer.value_of
    assert (value[anchor, attr] == value[positive, attr]).all()
    assert (value[anchor, attr] != value[negative, attr]).all() and (value[negative, attr] >= 0).all()
    # and both stages run on them (stage 2 cuts its crops from the mirrored originals too)
    summary = trainer.run()
    assert summary["best_valid_map"] > 0.3

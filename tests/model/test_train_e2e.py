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


@pytest.mark.slow  # a 15 s training run (CI runs the slow tests too)
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


def test_a_time_budget_keeps_more_for_a_mirrored_final_pass(tmp_path: Path) -> None:
    """The final prototype and calibration pass encodes every image twice with `--mirror-average
    images`: the budget keeps MIRRORED_PASS_COST times the share for it (nothing without prototypes)."""
    from asen_search.model.training.trainer import MIRRORED_PASS_COST, PROTOTYPE_SHARE, Trainer

    def share(**kw: object) -> float:
        trainer = object.__new__(Trainer)  # only the configuration is read
        trainer.cfg = TrainConfig(data=tmp_path, out=tmp_path, **kw)  # type: ignore[arg-type]
        return trainer._final_pass_share()

    assert share(mirror_average="off") == share(mirror_average="crops") == PROTOTYPE_SHARE
    assert share(mirror_average="images") == pytest.approx(PROTOTYPE_SHARE * MIRRORED_PASS_COST)
    assert MIRRORED_PASS_COST > 1.5 and share(mirror_average="images", prototypes=False) == 0.0


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


@pytest.mark.slow  # a training run of about 9 s (CI runs the slow tests too)
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


@pytest.mark.slow  # a training run of about 7 s (CI runs the slow tests too)
def test_mined_negatives_are_other_values_and_train(demo_dataset: Path, tmp_path: Path) -> None:
    """`--negatives hard`: each class triplet keeps its sampled negative and gains a mined one, a batch
    image of another value under its attribute (often not the sampled one); the batch loss is above
    the sampled triplets' alone, and a semi-hard run trains."""
    from asen_search.model.training.trainer import Trainer

    cfg = _cfg(demo_dataset, tmp_path / "run", negatives="hard", negatives_after=0, triplets_per_epoch=320)
    trainer = Trainer(cfg, progress=False)
    batch = torch.from_numpy(trainer._triplets(1, 0, 64, None))
    fids = batch[:, 1:4].T.reshape(-1).numpy()
    with torch.no_grad():
        g_rows = trainer.model.global_embed(
            trainer.data.train.global_maps[torch.from_numpy(fids)].float(), batch[:, 0].repeat(3)[:, None]
        )[0][:, 0]
    both = trainer._negatives(batch, g_rows).numpy()  # the sampled negatives, then the mined ones
    assert len(both) == 128 and (both[:64] == np.arange(64) + 128).all()
    picked = both[64:]
    attr = batch[:, 0].numpy()
    assert (attr[picked % 64] == attr).all()
    value = trainer.value_of
    anchor_value, picked_value = value[fids[:64], attr], value[fids[picked], attr]
    assert (picked_value >= 0).all() and (picked_value != anchor_value).all()
    assert (picked != np.arange(64) + 128).mean() > 0.3  # mostly not the sampled negative
    with torch.no_grad():
        hard = float(trainer._loss(1, batch))
        trainer.cfg = replace(cfg, negatives="none")
        sampled = float(trainer._loss(1, batch))
        # --negatives-after 1: stage 1's first epoch on the sampled negatives alone, then mining
        trainer.cfg = replace(cfg, negatives_after=1)
        warm = float(trainer._loss(1, batch))
        trainer.state.epoch = 1
        mined = float(trainer._loss(1, batch))
    assert hard > sampled and warm == pytest.approx(sampled) and mined == pytest.approx(hard)
    summary = train(replace(cfg, negatives="semi-hard", out=tmp_path / "semi"), progress=False)
    assert summary["best_valid_map"] > 0.3


def test_ordinal_margins_grow_with_the_value_steps(demo_dataset: Path, tmp_path: Path) -> None:
    """`--ordinal 0.5`: the triplets of an ordered attribute get margin x (1 + 0.5 (steps - 1)), the
    other attributes' keep the margin; `--ordered` takes names and glob patterns."""
    from asen_search.model.training.trainer import Trainer, ordered_attributes

    names = ["neckline", "sleeve_length", "garment_length", "colour"]
    assert ordered_attributes(names, "*length*").tolist() == [False, True, True, False]
    assert ordered_attributes(names, "colour, neckline").tolist() == [True, False, False, True]
    assert not ordered_attributes(names, "").any()
    cfg = _cfg(demo_dataset, tmp_path / "run", ordinal=0.5, triplets_per_epoch=320)
    trainer = Trainer(cfg, progress=False)
    rows = trainer._triplets(1, 0, 400, None)
    margins = trainer._ordinal_margins(torch.from_numpy(rows), rows[:, 3], None).numpy()
    attr = rows[:, 0]
    steps = np.abs(trainer.value_of[rows[:, 1], attr] - trainer.value_of[rows[:, 3], attr])
    ordered = trainer.ordered[attr]
    assert trainer.ordered.sum() == 2  # sleeve_length, garment_length
    np.testing.assert_allclose(margins[~ordered], cfg.margin)
    np.testing.assert_allclose(margins[ordered], cfg.margin * (1 + 0.5 * (steps[ordered] - 1)), rtol=1e-6)
    assert (margins[ordered] > cfg.margin).any()
    with torch.no_grad():  # the loss takes them: larger than with the plain margin
        wide = float(trainer._loss(1, torch.from_numpy(rows[:64])))
        trainer.cfg = replace(cfg, ordinal=0.0)
        plain = float(trainer._loss(1, torch.from_numpy(rows[:64])))
    assert wide > plain


@pytest.mark.slow
def test_coarse_features_train_and_encode(demo_dataset: Path, tmp_path: Path) -> None:
    """`--coarse`: the cached global maps carry both scales, a run trains on them, and its checkpoint
    encodes through the same backbone (the stride-32 part included)."""
    cfg = _cfg(demo_dataset, tmp_path / "run", coarse=True, triplets_per_epoch=320)
    summary = train(cfg, progress=False)
    assert summary["best_valid_map"] > 0.3
    encoder = Encoder.from_checkpoint(tmp_path / "run" / "best.pt")
    assert encoder.model.cfg.global_branch.coarse
    assert encoder.model.global_backbone.out_channels == 112 + 320
    ds = load_dataset(demo_dataset)
    report = evaluate_encoder(encoder, ds, "test", progress=False)
    assert report.overall > 0.3


def test_per_attribute_roi_thresholds_from_names_and_patterns() -> None:
    cfg = TrainConfig(
        data=Path("d"), out=Path("o"), roi_threshold=0.1, roi_thresholds="*length*=0.05, pattern=0.3"
    )
    names = ["neckline", "sleeve_length", "pattern", "garment_length"]
    assert cfg.preprocess(names).roi_thresholds == (0.1, 0.05, 0.3, 0.05)
    assert TrainConfig(data=Path("d"), out=Path("o")).preprocess(names).roi_thresholds is None
    first = replace(cfg, roi_thresholds="sleeve*=0.2,*length*=0.0")  # the first matching pattern wins
    assert first.preprocess(names).roi_thresholds == (0.1, 0.2, 0.1, 0.0)
    with pytest.raises(ValueError, match="'collar' names no attribute; the attributes are neckline"):
        replace(cfg, roi_thresholds="collar=0.2").preprocess(names)
    with pytest.raises(ValueError, match="expected NAME=VALUE, got 'pattern'"):
        replace(cfg, roi_thresholds="pattern").preprocess(names)
    with pytest.raises(ValueError, match="expected NAME=VALUE, got 'pattern=high'"):
        replace(cfg, roi_thresholds="pattern=high").preprocess(names)
    with pytest.raises(ValueError, match=r"per-attribute RoI threshold must be in \[0, 1\)"):
        replace(cfg, roi_thresholds="pattern=1.5").preprocess(names)


@pytest.mark.slow  # a training run of about 15 s (CI runs the slow tests too)
def test_training_crops_each_attribute_at_its_roi_threshold(demo_dataset: Path, tmp_path: Path) -> None:
    """The trainer gives `--roi-thresholds` the dataset's attribute names; the checkpoint keeps them."""
    ds = load_dataset(demo_dataset)
    first = ds.attributes[0].name
    cfg = _cfg(
        demo_dataset, tmp_path / "run", stage1_epochs=1, triplets_per_epoch=640, roi_thresholds=f"{first}=0.3"
    )
    train(cfg, progress=False)
    pre = Encoder.from_checkpoint(tmp_path / "run" / "best.pt").preprocess
    assert pre.roi_thresholds == (0.3,) + (0.1,) * (len(ds.attributes) - 1)


def test_reframed_photographs_keep_the_whole_garment_in_view() -> None:
    """`--reframe`'s photographs are framed wider, never cropped: a garment 80% of the picture's
    height never touches its border (the plain new photographs, which crop, cut it)."""
    from PIL import Image, ImageDraw

    from asen_search.model.augment import DEFAULT_REPHOTOGRAPH, rephotograph
    from asen_search.model.training.instance import REFRAME

    picture = Image.new("RGB", (100, 100), (128, 128, 128))
    ImageDraw.Draw(picture).rectangle((25, 10, 74, 89), fill=(0, 0, 0))  # the garment

    def cut(how) -> int:
        touching = 0
        for seed in range(20):
            dark = (np.asarray(rephotograph(picture, np.random.default_rng(seed), how)) < 50).all(axis=2)
            touching += int(dark[[0, -1]].any() or dark[:, [0, -1]].any())
        return touching

    assert cut(REFRAME) == 0 and cut(DEFAULT_REPHOTOGRAPH) >= 3


@pytest.mark.slow  # a training run of about 25 s (CI runs the slow tests too)
def test_reframe_trains_on_reframed_copies_beside_the_mirrors(demo_dataset: Path, tmp_path: Path) -> None:
    from asen_search.model.training.trainer import Trainer

    cache = tmp_path / "cache"
    cfg = _cfg(
        demo_dataset, tmp_path / "run", mirror=True, reframe=0.3, cache_dir=cache, triplets_per_epoch=320
    )
    trainer = Trainer(cfg, progress=False)
    n = len(load_dataset(demo_dataset).split("train").paths)
    assert (trainer.data.mirror_offset, trainer.data.reframe_offset) == (n, 2 * n)
    assert len(trainer.data.train.global_maps) == 3 * n
    assert len(list(cache.glob("reframed-v1-*/*.jpg"))) > 0
    # about 30% of the class triplets' images are reframed photographs, each of an image with its labels
    rows = trainer._triplets(1, 0, 3000, None)
    reframed = rows[:, 1:4] >= 2 * n
    assert 0.26 < reframed.mean() < 0.34 and 0.3 < (rows[:, 1:4] >= n).mean() - reframed.mean() < 0.4
    attr, (anchor, positive, negative) = rows[:, 0], (rows[:, 1:4] % n).T
    value = trainer.value_of
    assert (value[rows[:, 1], attr] == value[anchor, attr]).all()  # a reframed row has its original's labels
    assert (value[anchor, attr] == value[positive, attr]).all()
    assert (value[anchor, attr] != value[negative, attr]).all() and (value[negative, attr] >= 0).all()
    summary = trainer.run()  # both stages run on them (stage 2 cuts crops from the reframed images too)
    assert summary["best_valid_map"] > 0.3


@pytest.mark.parametrize("flag", ["attribute_focus", "pair_focus", "reframe"])
def test_shares_outside_zero_to_one_fail_before_any_work(
    demo_dataset: Path, tmp_path: Path, flag: str
) -> None:
    from asen_search.model.training.trainer import Trainer

    with pytest.raises(ValueError, match=f"--{flag.replace('_', '-')} must be in \\[0, 1\\], got 1.5"):
        Trainer(_cfg(demo_dataset, tmp_path / "run", **{flag: 1.5}), progress=False)
    assert not (tmp_path / "run").exists()


def test_proxy_term_joins_the_loss_trains_its_proxies_and_resumes(demo_dataset: Path, tmp_path: Path) -> None:
    """`--proxy-weight`: the loss grows by the weighted proxy term, a step moves the proxies (their own
    optimizer group), and `--resume` continues with the proxies of `last.pt`, refusing a run saved
    without them."""
    from asen_search.model.training.trainer import Trainer

    cfg = _cfg(demo_dataset, tmp_path / "run", proxy_weight=0.5, proxy_soft=1.0, triplets_per_epoch=320)
    trainer = Trainer(cfg, progress=False)
    assert trainer.proxies is not None
    rows = torch.from_numpy(trainer._triplets(1, 0, 64, None)[:64])
    with torch.no_grad():
        with_term = float(trainer._loss(1, rows))
        trainer.cfg = replace(cfg, proxy_weight=0.0)
        without = float(trainer._loss(1, rows))
        trainer.cfg = cfg
    assert with_term > without + 0.1  # a cross-entropy over 3-5 values starts near log(V)
    trainer.optimizer = trainer._make_optimizer(1)
    before = trainer.proxies.detach().clone()
    trainer._loss(1, rows).backward()
    trainer.optimizer.step()
    assert not torch.equal(before, trainer.proxies.detach())
    trainer.state.stage = 1
    trainer._save_last(1)
    resumed = Trainer(replace(cfg, resume=True), progress=False)
    assert resumed.proxies is not None and torch.equal(resumed.proxies.detach(), trainer.proxies.detach())
    plain = Trainer(
        _cfg(demo_dataset, tmp_path / "plain", proxy_weight=0.0, triplets_per_epoch=320), progress=False
    )
    assert plain.proxies is None
    plain.optimizer = plain._make_optimizer(1)
    plain.state.stage = 1
    plain._save_last(1)
    with pytest.raises(ValueError, match="without --proxy-weight.*resume it with --proxy-weight 0"):
        Trainer(replace(cfg, out=tmp_path / "plain", resume=True), progress=False)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("proxy_weight", -0.1, "--proxy-weight must be at least 0, got -0.1"),
        ("proxy_soft", float("nan"), "--proxy-soft must be at least 0, got nan"),
        ("proxy_scale", 0.0, "--proxy-scale must be positive, got 0.0"),
    ],
)
def test_proxy_settings_out_of_range_fail_before_any_work(
    demo_dataset: Path, tmp_path: Path, flag: str, value: float, message: str
) -> None:
    from asen_search.model.training.trainer import Trainer

    with pytest.raises(ValueError, match=message):
        Trainer(_cfg(demo_dataset, tmp_path / "run", **{flag: value}), progress=False)
    assert not (tmp_path / "run").exists()

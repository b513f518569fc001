"""The training map cache: reused across runs, keyed by the stem and each image's content (one changed
image is the only one recomputed), safe against torn writes; and bounded memory: with a budget that
holds nothing, maps come from disk per batch, originals are decoded per batch, and training gives the
same model as with everything in memory."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asen_search.model.data.dataset import load_dataset
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.preprocess import global_inputs
from asen_search.model.training.map_cache import (
    MapCache,
    MemoryBudget,
    build_image_set,
    load_kept,
    local_maps,
    stem_key,
)
from asen_search.model.training.row_store import RowFile
from asen_search.model.training.trainer import TrainConfig, train
from tests.helpers.models import tiny_config


@pytest.fixture
def images(demo_dataset: Path, tmp_path: Path) -> list[Path]:
    """Twelve private copies of demo images (the tests change some)."""
    ds = load_dataset(demo_dataset)
    paths = []
    for i, src in enumerate(ds.split("train").paths[:12]):
        paths.append(Path(shutil.copy(src, tmp_path / f"{i:02d}.jpg")))
    return paths


@pytest.fixture
def model_and_pre() -> tuple[ASENModel, object]:
    torch.manual_seed(0)
    cfg = TrainConfig(data=Path("."), out=Path("."), backbone="tiny", global_size=64, local_size=32)
    return ASENModel(tiny_config()), cfg.preprocess()


def test_a_second_build_reads_the_cache_and_a_changed_image_is_the_only_one_recomputed(
    images: list[Path], model_and_pre: tuple[ASENModel, object], tmp_path: Path
) -> None:
    model, pre = model_and_pre
    cache = tmp_path / "cache"
    first = build_image_set(model, pre, images, "t", cache, progress=False)
    assert first.computed == len(images)
    with torch.inference_mode():
        direct = model.global_backbone.stem(global_inputs([load_kept(p) for p in images], pre)[0]).to(
            torch.float16
        )
    torch.testing.assert_close(first.global_maps[torch.arange(len(images))], direct)
    again = build_image_set(model, pre, images, "t", cache, progress=False)
    assert again.computed == 0
    torch.testing.assert_close(again.global_maps[torch.arange(len(images))], direct)
    Image.open(images[5]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(images[5])  # one image changes
    changed = build_image_set(model, pre, images, "t", cache, progress=False)
    assert changed.computed == 1
    assert not torch.equal(changed.global_maps[torch.tensor([5])], direct[5:6])
    torch.testing.assert_close(changed.global_maps[torch.tensor([4, 6])], direct[[4, 6]])
    # another stem (its weights) is another cache folder: nothing of the first is used
    with torch.no_grad():
        next(model.global_backbone.stages[0].parameters()).add_(1.0)
    assert build_image_set(model, pre, images, "t", cache, progress=False).computed == len(images)
    assert len(list(cache.iterdir())) == 2


def test_the_key_covers_the_preprocessing(model_and_pre: tuple[ASENModel, object]) -> None:
    model, pre = model_and_pre
    assert stem_key(model, pre) == stem_key(model, replace(pre))  # type: ignore[type-var]
    assert stem_key(model, pre) != stem_key(model, replace(pre, mean=(0.4, 0.4, 0.4)))  # type: ignore[type-var]
    assert stem_key(model, pre) != stem_key(model, replace(pre, crop_rule="pad"))  # type: ignore[type-var]


def test_torn_writes_are_ignored_and_recomputed(
    images: list[Path], model_and_pre: tuple[ASENModel, object], tmp_path: Path
) -> None:
    model, pre = model_and_pre
    cache = tmp_path / "cache"
    build_image_set(model, pre, images[:4], "t", cache, progress=False)
    folder = next(cache.iterdir())
    index = folder / "index.tsv"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join(lines[:3]) + lines[3][:20])  # the last line torn
    maps = folder / "maps.f16"
    with open(maps, "ab") as fh:
        fh.write(b"\0" * 100)  # a torn row after the last whole one
    assert build_image_set(model, pre, images[:4], "t", cache, progress=False).computed == 1
    rebuilt = build_image_set(model, pre, images[:4], "t", cache, progress=False)
    assert rebuilt.computed == 0
    fresh = build_image_set(model, pre, images[:4], "t", tmp_path / "fresh", progress=False)
    torch.testing.assert_close(rebuilt.global_maps[torch.arange(4)], fresh.global_maps[torch.arange(4)])
    # an index line naming a row the file does not have (maps lost, index kept) is not used
    entries = MapCache(folder, RowFile(maps, (1,)).shape).entries
    assert len(entries) == 4


def test_row_file_reads_what_was_written(tmp_path: Path) -> None:
    rows = RowFile(tmp_path / "r.f16", (2, 3))
    data = torch.arange(30, dtype=torch.float16).reshape(5, 2, 3)
    assert rows.append(data[:3]) == range(0, 3) and rows.append(data[3:]) == range(3, 5)
    torch.testing.assert_close(rows.read([4, 0, 0, 2]), data[[4, 0, 0, 2]])
    torch.testing.assert_close(rows.load(), data)
    rows.write_at(1, data[:2])
    torch.testing.assert_close(rows.load(), data[[0, 0, 1, 3, 4]])
    with pytest.raises(IndexError, match="past the end"):
        rows.read([5])


def test_a_budget_that_holds_nothing_keeps_nothing_in_memory(
    images: list[Path], model_and_pre: tuple[ASENModel, object], tmp_path: Path
) -> None:
    model, pre = model_and_pre
    roomy = build_image_set(model, pre, images, "t", tmp_path / "c", MemoryBudget(None), progress=False)
    tight = build_image_set(model, pre, images, "t", tmp_path / "c", MemoryBudget(1.0), progress=False)
    assert roomy.global_maps.in_memory and not tight.global_maps.in_memory
    assert roomy.keep_originals(MemoryBudget(None), "t", progress=False)
    assert not tight.keep_originals(MemoryBudget(1.0), "t", progress=False) and tight.kept is None
    fids = torch.tensor([0, 0, 3, 7, 7, 11, 2])
    attrs = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    in_memory = local_maps(model, pre, roomy, fids, attrs, "t", batch_size=3, progress=False)
    on_disk = local_maps(
        model, pre, tight, fids, attrs, "t", batch_size=3, progress=False, scratch=tmp_path / "scratch.f16"
    )
    assert in_memory.in_memory and not on_disk.in_memory
    torch.testing.assert_close(on_disk[torch.arange(len(fids))], in_memory[torch.arange(len(fids))])


def test_training_within_a_budget_that_holds_nothing_gives_the_same_model(
    demo_dataset: Path, tmp_path: Path
) -> None:
    base = TrainConfig(
        data=demo_dataset,
        out=tmp_path / "roomy",
        global_size=64,
        local_size=48,
        embed_dim=16,
        common_dim=16,
        stage1_epochs=1,
        stage2_epochs=1,
        triplets_per_epoch=256,
        seed=2,
        cache_dir=tmp_path / "cache",
        max_memory_gb=None,
        prototypes=False,
    )
    roomy = train(base, progress=False)
    tight = train(replace(base, out=tmp_path / "tight", max_memory_gb=1e-9), progress=False)
    assert tight["best_valid_map"] == pytest.approx(roomy["best_valid_map"], abs=1e-4)
    a = torch.load(tmp_path / "roomy" / "best.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "tight" / "best.pt", weights_only=False)["state_dict"]
    for name, tensor in a.items():
        # equal up to float rounding (the same maps; kernels may sum in another order on other memory)
        np.testing.assert_allclose(b[name].numpy(), tensor.numpy(), atol=1e-4, err_msg=name)
    assert not (tmp_path / "tight" / ".scratch").exists()  # the per-run row files are removed at the end


def test_the_crops_of_each_attribute_use_its_own_roi_threshold(
    images: list[Path], model_and_pre: tuple[ASENModel, object], tmp_path: Path
) -> None:
    """`--roi-thresholds`: the local maps of an attribute's pairs are those of its threshold alone."""
    model, pre = model_and_pre
    imageset = build_image_set(model, pre, images, "t", tmp_path / "c", MemoryBudget(None), progress=False)
    imageset.keep_originals(MemoryBudget(None), "t", progress=False)
    fids = torch.tensor([0, 0, 0, 3, 3, 3, 7, 7, 7])
    attrs = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    thresholds = (0.0, 0.5, 0.95)
    per = local_maps(
        model, replace(pre, roi_thresholds=thresholds), imageset, fids, attrs, "t", progress=False
    )
    differ = 0
    for a, t in enumerate(thresholds):
        alone = local_maps(model, replace(pre, roi_threshold=t), imageset, fids, attrs, "t", progress=False)
        rows = torch.nonzero(attrs == a)[:, 0]
        torch.testing.assert_close(per[rows], alone[rows])
        differ += int(
            not torch.equal(
                per[rows], local_maps(model, pre, imageset, fids, attrs, "t", progress=False)[rows]
            )
        )
    assert differ >= 2  # the thresholds changed the crops

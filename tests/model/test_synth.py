"""Tests for the built-in demo dataset generator (model/data/synth.py): format, determinism, balance."""

from __future__ import annotations

import json
import pathlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from asen_search.model.data import synth

SMALL = {"n_train": 10, "n_valid": 14, "n_test": 14}


def _read_rows(path: pathlib.Path) -> list[list[int]]:
    return [[int(x) for x in line.split()] for line in path.read_text().splitlines()]


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("synth")
    synth.generate_dataset(root, n_train=240, n_valid=84, n_test=84, seed=3, progress=False)
    return root


def test_attributes_shape() -> None:
    assert 6 <= len(synth.ATTRIBUTES) <= 8
    names = [name for name, _ in synth.ATTRIBUTES]
    assert len(set(names)) == len(names)
    for _, values in synth.ATTRIBUTES:
        assert 3 <= len(values) <= 8 and len(set(values)) == len(values)


def test_meta_and_filenames(dataset: pathlib.Path) -> None:
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["name"] == "asen-demo"
    assert [(a["name"], a["values"]) for a in meta["attributes"]] == synth.ATTRIBUTES
    for split, n in (("train", 240), ("valid", 84), ("test", 84)):
        names = (dataset / f"filenames_{split}.txt").read_text().splitlines()
        assert names == [f"images/{split}/{i:05d}.jpg" for i in range(n)]
        assert all((dataset / name).is_file() for name in names)


def test_train_labels_carry_every_attribute(dataset: pathlib.Path) -> None:
    rows = _read_rows(dataset / "label_train.txt")
    assert [r[0] for r in rows] == list(range(240))
    for row in rows:
        pairs = list(zip(row[1::2], row[2::2]))
        assert [a for a, _ in pairs] == list(range(len(synth.ATTRIBUTES)))
        assert all(0 <= v < len(synth.ATTRIBUTES[a][1]) for a, v in pairs)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_query_candidate_split(dataset: pathlib.Path, split: str) -> None:
    queries = _read_rows(dataset / f"query_{split}.txt")
    candidates = _read_rows(dataset / f"candidate_{split}.txt")
    fids = Counter(r[0] for r in queries + candidates)
    assert sorted(fids) == list(range(84)) and set(fids.values()) == {1}
    for _, attr, val in queries + candidates:
        assert 0 <= attr < len(synth.ATTRIBUTES) and 0 <= val < len(synth.ATTRIBUTES[attr][1])
    per_attr = Counter(r[1] for r in queries + candidates)
    assert set(per_attr.values()) == {84 // len(synth.ATTRIBUTES)}  # round-robin tagging
    assert {r[1] for r in queries} == set(range(len(synth.ATTRIBUTES)))
    assert 0.12 < len(queries) / 84 < 0.4  # small groups still get one query each


def test_every_value_gets_queries_at_default_size() -> None:
    labels = np.stack(
        [np.random.default_rng([5, i]).integers(0, [len(v) for _, v in synth.ATTRIBUTES]) for i in range(700)]
    )
    queries, candidates = synth.tag_queries(labels, seed=0, split_id=1)
    assert {(a, v) for _, a, v in queries} == {
        (a, v) for a, (_, vs) in enumerate(synth.ATTRIBUTES) for v in range(len(vs))
    }
    for fid, attr, val in queries + candidates:
        assert labels[fid, attr] == val
    assert sorted(f for f, _, _ in queries + candidates) == list(range(700))
    assert 0.17 < len(queries) / 700 < 0.23


def test_values_roughly_uniform(dataset: pathlib.Path) -> None:
    rows = np.array(_read_rows(dataset / "label_train.txt"))
    for attr, (_, values) in enumerate(synth.ATTRIBUTES):
        counts = np.bincount(rows[:, 2 + 2 * attr], minlength=len(values))
        expected = len(rows) / len(values)
        assert counts.min() > 0.5 * expected and counts.max() < 1.5 * expected, (attr, counts)


def test_image_sizes_vary(dataset: pathlib.Path) -> None:
    sizes = set()
    for path in sorted((dataset / "images" / "train").glob("*.jpg"))[:60]:
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.format == "JPEG"
            w, h = image.size
        assert 195 <= min(w, h) <= 365 and 0.68 <= w / h <= 1.42
        sizes.add((w, h))
    assert len(sizes) > 40
    ratios = [w / h for w, h in sizes]
    assert min(ratios) < 0.9 and max(ratios) > 1.1


def test_same_seed_gives_identical_files(tmp_path: pathlib.Path) -> None:
    synth.generate_dataset(tmp_path / "a", seed=11, progress=False, **SMALL)
    synth.generate_dataset(tmp_path / "b", seed=11, progress=True, **SMALL)
    synth.generate_dataset(tmp_path / "c", seed=12, progress=False, **SMALL)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".jpg"))


def test_images_do_not_depend_on_split_sizes_or_workers(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synth.generate_dataset(tmp_path / "serial", seed=4, progress=False, **SMALL)
    monkeypatch.setattr(synth, "PARALLEL_MIN_IMAGES", 0)
    monkeypatch.setattr(synth, "CHUNK", 3)
    synth.generate_dataset(tmp_path / "pool", seed=4, progress=False, n_train=12, n_valid=14, n_test=14)
    serial, pool = _files(tmp_path / "serial"), _files(tmp_path / "pool")
    assert all(pool[k] == v for k, v in serial.items() if k.endswith(".jpg"))


def test_draw_garment_checks_labels() -> None:
    rng = np.random.default_rng(0)
    labels = synth.sample_labels(rng)
    image = synth.draw_garment(labels, rng)
    assert image.mode == "RGB"
    with pytest.raises(ValueError, match="out of range"):
        synth.draw_garment({**labels, "colour": 99}, rng)
    with pytest.raises(KeyError, match="neckline"):
        synth.draw_garment({k: v for k, v in labels.items() if k != "neckline"}, rng)


def test_generator_does_not_import_torch() -> None:
    for module in ("synth.py", "synth_draw.py"):
        source = (pathlib.Path(synth.__file__).parent / module).read_text()
        assert "import torch" not in source and "from torch" not in source


def test_scale_draws_larger_pictures_with_the_same_labels(tmp_path: pathlib.Path) -> None:
    synth.generate_dataset(tmp_path / "one", seed=6, progress=False, n_train=8, n_valid=4, n_test=4)
    synth.generate_dataset(
        tmp_path / "big", seed=6, progress=False, n_train=8, n_valid=4, n_test=4, scale=1.6, workers=2
    )
    for name in ("label_train.txt", "query_test.txt", "candidate_test.txt"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "big" / name).read_text()
    for i in range(8):
        with (
            Image.open(tmp_path / "one" / "images" / "train" / f"{i:05d}.jpg") as a,
            Image.open(tmp_path / "big" / "images" / "train" / f"{i:05d}.jpg") as b,
        ):
            assert abs(min(b.size) - 1.6 * min(a.size)) <= 1 and 320 <= min(b.size) <= 576
    with pytest.raises(ValueError, match="scale"):
        synth.generate_dataset(tmp_path / "bad", n_train=2, n_valid=2, n_test=2, scale=0)


def test_nuisance_settings_change_the_pictures_and_are_recorded(tmp_path: pathlib.Path) -> None:
    from asen_search.model.data.synth import _render_one, parse_nuisance

    changed = parse_nuisance(["rotation=25", "occluders=4", "brightness=0.55,1.35"])
    assert (changed.rotation, changed.occluders, changed.brightness) == (25.0, 4, (0.55, 1.35))
    plain = [_render_one(0, 0, i)[1] for i in range(4)]
    other = [_render_one(0, 0, i, nuisance=changed)[1] for i in range(4)]
    assert all(a != b for a, b in zip(plain, other))
    assert [_render_one(0, 0, i)[0] for i in range(4)] == [
        _render_one(0, 0, i, nuisance=changed)[0] for i in range(4)
    ]
    synth.generate_dataset(
        tmp_path / "d", n_train=2, n_valid=2, n_test=2, seed=5, progress=False, nuisance=changed
    )
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["nuisance"]["rotation"] == 25.0 and meta["nuisance"]["seed"] == 5
    synth.generate_dataset(tmp_path / "e", n_train=2, n_valid=2, n_test=2, progress=False)
    assert "nuisance" not in json.loads((tmp_path / "e" / "meta.json").read_text())


@pytest.mark.parametrize("bad", ["spin=3", "rotation", "rotation=abc", "clutter=4", "rotation=90"])
def test_bad_nuisance_settings_are_refused(bad: str) -> None:
    from asen_search.model.data.synth import parse_nuisance

    with pytest.raises(ValueError, match="nuisance setting|out of range"):
        parse_nuisance([bad])

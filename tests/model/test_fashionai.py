"""FashionAI CSV importer: conversion loads with load_dataset; bad rows name their CSV line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from asen_search.model.data.dataset import DatasetError, load_dataset
from asen_search.model.data.fashionai_import import import_fashionai

# (category, label-string length, images): the 'y' cycles over values; some rows carry 'm's.
CATEGORIES = (("collar_design_labels", 5, 30), ("skirt_length_labels", 6, 20))


def _label(n_values: int, value: int, maybe: bool) -> str:
    chars = ["m" if maybe and i == (value + 1) % n_values else "n" for i in range(n_values)]
    chars[value] = "y"
    return "".join(chars)


def make_raw(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A tiny raw release: image_root/Images/<category>/<i>.jpg and its label CSV."""
    image_root = tmp_path / "raw"
    lines = []
    for category, n_values, n_images in CATEGORIES:
        (image_root / "Images" / category).mkdir(parents=True)
        for i in range(n_images):
            rel = f"Images/{category}/{i:04x}.jpg"
            Image.new("RGB", (4, 4), (i, 0, 0)).save(image_root / rel)
            lines.append(f"{rel},{category},{_label(n_values, i % n_values, maybe=i % 3 == 0)}")
    csv_path = tmp_path / "label.csv"
    csv_path.write_text("\n".join(lines) + "\n\n")
    return csv_path, image_root, lines


def test_convert_then_load(tmp_path: Path) -> None:
    csv_path, image_root, _ = make_raw(tmp_path)
    out = tmp_path / "out"
    counts = import_fashionai(csv_path, image_root, out, seed=3)
    assert counts["train"]["images"] + counts["valid"]["images"] + counts["test"]["images"] == 50
    assert counts["valid"]["images"] == counts["test"]["images"] == 5  # round(0.1*30) + round(0.1*20)
    assert (out / "images").is_symlink()

    ds = load_dataset(out)
    assert [a.name for a in ds.attributes] == ["collar_design", "skirt_length"]
    assert ds.attributes[1].values == ("v0", "v1", "v2", "v3", "v4", "v5")
    assert len(ds.split("train").paths) == counts["train"]["images"] == len(ds.train_labels())
    for split in ("valid", "test"):
        q, c = ds.queries(split), ds.candidates(split)
        assert (len(q), len(c)) == (counts[split]["queries"], counts[split]["candidates"])
        assert sorted([*q.fids.tolist(), *c.fids.tolist()]) == list(range(len(ds.split(split).paths)))
        assert set(q.attrs.tolist()) == {0, 1}  # >= 1 query per attribute in each split

    # Values come from the position of 'y' (file i of a category has value i % n_values).
    labels = ds.train_labels()
    for fid, attr, value in zip(labels.fids, labels.attrs, labels.values):
        stem = ds.split("train").paths[fid].stem
        assert int(stem, 16) % (5, 6)[attr] == value


def test_split_is_deterministic_by_seed(tmp_path: Path) -> None:
    csv_path, image_root, _ = make_raw(tmp_path)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        import_fashionai(csv_path, image_root, tmp_path / name, seed=seed)
    text = {n: (tmp_path / n / "filenames_test.txt").read_text() for n in "abc"}
    assert text["a"] == text["b"] != text["c"]


def test_copy_mode(tmp_path: Path) -> None:
    csv_path, image_root, _ = make_raw(tmp_path)
    import_fashionai(csv_path, image_root, tmp_path / "out", link="copy")
    assert not (tmp_path / "out" / "images").is_symlink()
    assert len(load_dataset(tmp_path / "out").split("valid").paths) == 5


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("nnyny", "must have exactly one 'y', has 2"),
        ("nnmnn", "must have exactly one 'y', has 0"),
        ("nnxyn", "must be >= 2 characters of y/n/m"),
    ],
)
def test_bad_label_names_line_and_count(tmp_path: Path, bad: str, message: str) -> None:
    csv_path, image_root, lines = make_raw(tmp_path)
    lines[6] = lines[6].rsplit(",", 1)[0] + "," + bad
    lines[9] = lines[9].rsplit(",", 1)[0] + ",nnnnn"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DatasetError,
        match=re.escape(f"label.csv line 7: label string '{bad}' {message}") + r".*\(2 bad rows in total\)",
    ):
        import_fashionai(csv_path, image_root, tmp_path / "out")


def test_missing_image_names_line(tmp_path: Path) -> None:
    csv_path, image_root, lines = make_raw(tmp_path)
    (image_root / lines[4].split(",")[0]).unlink()
    with pytest.raises(
        DatasetError, match=r"label\.csv line 5: image not found: .*\(1 of 50 images missing\)"
    ):
        import_fashionai(csv_path, image_root, tmp_path / "out")


def test_inconsistent_label_length(tmp_path: Path) -> None:
    csv_path, image_root, lines = make_raw(tmp_path)
    lines[2] = lines[2].rsplit(",", 1)[0] + ",nnynnn"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DatasetError,
        match=r"label\.csv line 3: label string has 6 values but "
        r"'collar_design_labels' has 5 \(line 1\)",
    ):
        import_fashionai(csv_path, image_root, tmp_path / "out")


def test_malformed_and_duplicate_rows(tmp_path: Path) -> None:
    csv_path, image_root, lines = make_raw(tmp_path)
    csv_path.write_text("\n".join([*lines[:3], lines[0], "just,two"]) + "\n")
    with pytest.raises(
        DatasetError,
        match=r"label\.csv line 4: duplicate image .*first on line 1.*"
        r"\(2 bad rows in total\)",
    ):
        import_fashionai(csv_path, image_root, tmp_path / "out")


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    csv_path, image_root, _ = make_raw(tmp_path)
    with pytest.raises(ValueError, match="link"):
        import_fashionai(csv_path, image_root, tmp_path / "out", link="hardlink")
    with pytest.raises(ValueError, match="valid_frac"):
        import_fashionai(csv_path, image_root, tmp_path / "out", valid_frac=0.6, test_frac=0.5)


def test_too_few_images_writes_nothing(tmp_path: Path) -> None:
    csv_path, image_root, lines = make_raw(tmp_path)
    csv_path.write_text("\n".join(lines[:4]) + "\n")  # 4 images: round(0.1 * 4) = 0 for valid/test
    with pytest.raises(DatasetError, match="too few images to fill filenames_valid.txt"):
        import_fashionai(csv_path, image_root, tmp_path / "out")
    assert not (tmp_path / "out").exists()

"""Dataset-format loader: a valid tiny dataset loads; every kind of bad data names file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asen_search.model.data.dataset import Attribute, AttributeDataset, DatasetError, load_dataset

META = {
    "name": "tiny",
    "attributes": [
        {"name": "collar", "values": ["round", "v", "high", "none", "polo"]},
        {"name": "sleeve", "values": ["short", "long"]},
    ],
}


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def make_dataset(root: Path) -> Path:
    """A 6/4/4-image dataset with tiny PNGs; train line 3 carries two (attr, value) pairs."""
    (root / "img").mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps(META))
    for split, n in (("train", 6), ("valid", 4), ("test", 4)):
        names = [f"img/{split}_{i}.png" for i in range(n)]
        for name in names:
            Image.new("RGB", (4, 4), (10 * n, 0, 0)).save(root / name)
        _write(root / f"filenames_{split}.txt", names)
    _write(root / "label_train.txt", ["0 0 1", "1 0 1", "2 0 3 1 0", "3 1 1", "4 1 0", "5 0 4", ""])
    for split in ("valid", "test"):
        _write(root / f"query_{split}.txt", ["0 0 1", "1 1 0"])
        _write(root / f"candidate_{split}.txt", ["2 0 1", "3 1 1"])
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds")


def _raises(root: Path, message: str, load: str = "train_labels") -> None:
    dataset = load_dataset(root)
    with pytest.raises(DatasetError, match=re.escape(message)):
        if load == "train_labels":
            dataset.train_labels()
        else:
            getattr(dataset, load.split(":")[0])(load.split(":")[1])


def test_valid_dataset_loads(root: Path) -> None:
    ds = load_dataset(root)
    assert isinstance(ds, AttributeDataset)
    assert ds.name == "tiny"
    assert ds.attributes[1] == Attribute("sleeve", ("short", "long"))
    assert ds.splits_available() == ["train", "valid", "test"]
    train = ds.split("train")
    assert len(train.paths) == 6 and all(p.is_absolute() and p.is_file() for p in train.paths)
    assert train.paths[2] == root.resolve() / "img" / "train_2.png"
    labels = ds.train_labels()
    assert labels.fids.tolist() == [0, 1, 2, 2, 3, 4, 5]
    assert labels.attrs.tolist() == [0, 0, 0, 1, 1, 1, 0]
    assert labels.values.tolist() == [1, 1, 3, 0, 1, 0, 4]
    assert labels.fids.dtype == np.int64
    q, c = ds.queries("test"), ds.candidates("valid")
    assert (q.fids.tolist(), q.attrs.tolist(), q.values.tolist()) == ([0, 1], [0, 1], [1, 0])
    assert c.fids.tolist() == [2, 3]
    assert ds.split("train") is train  # cached


def test_unknown_split_name(root: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_dataset(root).split("dev")


def test_missing_image_names_file_line_and_count(root: Path) -> None:
    (root / "img" / "train_2.png").unlink()
    (root / "img" / "train_4.png").unlink()
    _raises(root, "filenames_train.txt line 3: image not found")
    with pytest.raises(DatasetError, match=r"\(2 of 6 images missing\)"):
        load_dataset(root).split("train")
    assert len(load_dataset(root, check_images=False).split("train").paths) == 6


def test_value_out_of_range(root: Path) -> None:
    _write(root / "label_train.txt", ["0 0 1"] * 16 + ["1 0 9"])
    _raises(root, "label_train.txt line 17: value id 9 out of range for attribute 'collar' (5 values)")


def test_attribute_out_of_range(root: Path) -> None:
    _write(root / "query_valid.txt", ["0 0 1", "1 2 0"])
    _raises(root, "query_valid.txt line 2: attribute id 2 out of range (2 attributes)", "queries:valid")


def test_fid_out_of_range_counts_all_bad_rows(root: Path) -> None:
    _write(root / "candidate_test.txt", ["2 0 1", "4 1 1", "-1 0 0"])
    _raises(
        root,
        "candidate_test.txt line 2: fid 4 out of range for filenames_test.txt (4 images) "
        "(2 bad rows in total)",
        "candidates:test",
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["0 0 1", "1 0 x"], "label_train.txt line 2: non-integer token 'x'"),
        (["0 0 1", "1 0 1.5"], "label_train.txt line 2: non-integer token '1.5'"),
        (["0 0 1 1"], "label_train.txt line 1: expected 'fid attr val [attr val ...]', got 4 tokens"),
        (["0 0 1", "1"], "label_train.txt line 2: expected 'fid attr val [attr val ...]', got 1 tokens"),
        (["0 0 1", "", "1 0 1"], "label_train.txt line 2: blank line"),
    ],
)
def test_malformed_label_line(root: Path, lines: list[str], message: str) -> None:
    _write(root / "label_train.txt", lines)
    _raises(root, message)


def test_malformed_query_line(root: Path) -> None:
    _write(root / "query_test.txt", ["0 0 1", "1 1 0 0"])
    _raises(root, "query_test.txt line 2: expected 'fid attr val', got 4 tokens", "queries:test")


def test_empty_split(root: Path) -> None:
    _write(root / "filenames_valid.txt", ["", ""])
    with pytest.raises(DatasetError, match=r"filenames_valid\.txt: empty file: split 'valid' has no images"):
        load_dataset(root).split("valid")


def test_empty_query_file(root: Path) -> None:
    (root / "query_test.txt").write_text("\n")
    _raises(root, "query_test.txt: empty file: no query rows", "queries:test")


def test_missing_filenames_file(root: Path) -> None:
    (root / "filenames_test.txt").unlink()
    assert load_dataset(root).splits_available() == ["train", "valid"]
    _raises(root, "filenames_test.txt: file not found", "split:test")
    _raises(root, "filenames_test.txt: file not found", "queries:test")


@pytest.mark.parametrize("entry", ["/etc/passwd", "../outside.png", "img/../../outside.png", "C:\\x.png"])
def test_rejects_paths_outside_root(root: Path, entry: str) -> None:
    _write(root / "filenames_train.txt", ["img/train_0.png", entry])
    with pytest.raises(DatasetError, match=r"filenames_train\.txt line 2: .*(absolute|escapes)"):
        load_dataset(root, check_images=False).split("train")


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (None, "meta.json: file not found"),
        ('{\n  "attributes": [,]\n}', "meta.json line 2: invalid JSON"),
        ({"attributes": []}, "non-empty 'attributes' list"),
        ({"attributes": [{"name": "a", "values": ["x"]}]}, "attributes[0] ('a') has 1 values; needs >= 2"),
        (
            {"attributes": [{"name": "a", "values": ["x", "y"]}, {"name": "a", "values": ["x", "y"]}]},
            "duplicate attribute name 'a'",
        ),
        ({"attributes": [{"name": "a", "values": ["x", "x"]}]}, "duplicate value names"),
        ({"attributes": [{"values": ["x", "y"]}]}, "attributes[0] needs a non-empty string 'name'"),
    ],
)
def test_bad_meta(root: Path, meta: object, message: str) -> None:
    if meta is None:
        (root / "meta.json").unlink()
    else:
        (root / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_dataset(root)


def test_crlf_and_trailing_blank_lines(root: Path) -> None:
    (root / "query_valid.txt").write_bytes(b"0 0 1\r\n1 1 0\r\n\r\n\n")
    assert load_dataset(root).queries("valid").fids.tolist() == [0, 1]


def test_query_candidate_overlap_names_both_lines(root: Path) -> None:
    assert load_dataset(root).query_candidate_overlap("test") == []
    _write(root / "candidate_test.txt", ["2 0 1", "3 1 1", "0 0 1", "1 0 0"])  # fid 0 again under collar
    (root / "img" / "test_3_copy.png").symlink_to(root / "img" / "test_1.png")
    _write(root / "filenames_test.txt", [f"img/test_{i}.png" for i in range(3)] + ["img/test_3_copy.png"])
    _write(root / "query_test.txt", ["0 0 1", "2 1 0"])  # fid 2 is no candidate under sleeve
    found = load_dataset(root).query_candidate_overlap("test")
    assert found == [
        "query_test.txt line 1 and candidate_test.txt line 3: "
        f"{root / 'img' / 'test_0.png'} is both a query and a candidate for 'collar'"
    ]
    _write(root / "query_test.txt", ["3 0 0"])  # another fid, the same file as candidate line 4's
    assert [m.split(":")[0] for m in load_dataset(root).query_candidate_overlap("test")] == [
        "query_test.txt line 1 and candidate_test.txt line 4"
    ]


def test_eval_refuses_overlapping_queries_unless_allowed(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asen_search.service.cli.main import main
    from tests.helpers.models import write_checkpoint

    _write(root / "candidate_test.txt", ["2 0 1", "3 1 1", "1 1 0"])
    checkpoint = write_checkpoint(tmp_path / "m.pt", root)
    assert main(["eval", "--data", str(root), "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert (
        "1 queries of the test split" in err and "query_test.txt line 2 and candidate_test.txt line 3" in err
    )
    assert main(["eval", "--data", str(root), "--checkpoint", str(checkpoint), "--allow-overlap"]) == 0

"""`asen index build`: sources, unreadable images, and resuming an interrupted build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from asen_search.index import FaissCatalogue
from asen_search.model.encoder import Encoder
from asen_search.model.nn.preprocess import load_image
from asen_search.service.cli.main import main
from asen_search.service.jobs import build as catalogue_build
from asen_search.service.jobs.build import WORK_DIR, BuildConfig, build_index
from asen_search.service.jobs.sources import read_catalogue


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory, demo_dataset: Path) -> Path:
    """Nine images in two folders, one truncated file, one unreadable name, one non-image file."""
    root = tmp_path_factory.mktemp("images")
    (root / "shirts").mkdir()
    for i in range(9):
        target = root / ("shirts" if i % 2 else "") / f"item{i}.jpg"
        shutil.copy(demo_dataset / "images" / "test" / f"{i:05d}.jpg", target)
    (root / "broken.jpg").write_bytes((root / "item0.jpg").read_bytes()[:400])
    (root / "notes.txt").write_text("not part of the catalogue")
    (root / ".hidden.jpg").write_bytes(b"ignored")
    return root


def test_build_from_a_folder_reports_unreadable_images(
    image_folder: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "index"
    assert (
        main(
            [
                "index",
                "build",
                "--checkpoint",
                str(tiny_checkpoint),
                "--catalogue",
                str(image_folder),
                "--out",
                str(out),
                "--batch-size",
                "4",
                "--chunk-size",
                "3",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "9 items" in captured.out and "1 unreadable images skipped" in captured.err
    assert "broken:" in captured.err
    catalogue = FaissCatalogue.load(
        out, expected_fingerprint=Encoder.from_checkpoint(tiny_checkpoint).fingerprint
    )
    assert sorted(catalogue.ids()) == sorted(
        [
            "item0",
            "item2",
            "item4",
            "item6",
            "item8",
            "shirts/item1",
            "shirts/item3",
            "shirts/item5",
            "shirts/item7",
        ]
    )
    report = json.loads((out / "build_report.json").read_text())
    assert report["items"] == 9 and [s["id"] for s in report["skipped"]] == ["broken"]
    assert not (out / WORK_DIR).exists()


def test_vectors_equal_encoding_each_image(image_folder: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    build_index(BuildConfig(tiny_checkpoint, image_folder, tmp_path / "ix", batch_size=5, progress=False))
    catalogue = FaissCatalogue.load(tmp_path / "ix")
    encoder = Encoder.from_checkpoint(tiny_checkpoint)
    expected = encoder.encode([load_image(image_folder / "shirts" / "item3.jpg")])[0]
    stored = np.stack([catalogue.vector("shirts/item3", a) for a in catalogue.attributes])
    np.testing.assert_allclose(stored, expected, atol=1e-5)


def test_jsonl_and_csv_sources_carry_metadata(image_folder: Path, tmp_path: Path) -> None:
    jsonl = image_folder / "catalogue.jsonl"
    jsonl.write_text(
        '{"id": "a", "path": "item0.jpg", "brand": "acme"}\n\n'
        '{"id": 7, "path": "shirts/item1.jpg", "metadata": {"tags": ["x", "y"]}}\n'
    )
    entries = read_catalogue(jsonl)
    assert [(e.id, e.path.name, e.metadata) for e in entries] == [
        ("a", "item0.jpg", {"brand": "acme"}),
        ("7", "item1.jpg", {"tags": ["x", "y"]}),
    ]
    csv_file = image_folder / "catalogue.csv"  # absolute paths inside the listing's folder (docs/service.md)
    csv_file.write_text(
        f"id,path,category,colour\nc1,{image_folder / 'item2.jpg'},dress,\nc2,"
        f"{image_folder / 'item4.jpg'},coat,red\n"
    )
    entries = read_catalogue(csv_file)
    assert [e.metadata for e in entries] == [{"category": "dress"}, {"category": "coat", "colour": "red"}]
    (tmp_path / "bad.csv").write_text("id,file\nx,y\n")
    with pytest.raises(ValueError, match="path"):
        read_catalogue(tmp_path / "bad.csv")
    (tmp_path / "dupes.jsonl").write_text('{"id": "a", "path": "p.jpg"}\n{"id": "a", "path": "q.jpg"}\n')
    with pytest.raises(ValueError, match="more than once"):
        read_catalogue(tmp_path / "dupes.jsonl")


def test_dataset_split_metadata(demo_dataset: Path) -> None:
    entries = read_catalogue(demo_dataset, "test")
    assert entries[0].id == "test-00000" and entries[0].metadata["split"] == "test"
    assert all(len(e.metadata) == 2 for e in entries)  # the split and the one tagged attribute
    train = read_catalogue(demo_dataset, "train")
    assert len(train[0].metadata) == 1 + 7


def test_interrupted_build_resumes_without_redoing_work(
    image_folder: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "index"
    config = BuildConfig(tiny_checkpoint, image_folder, out, batch_size=2, chunk_size=4, progress=False)
    real = catalogue_build.encode_entries
    encoded: list[str] = []

    def interrupted_after_two_chunks(encoder: Encoder, entries: list, *rest: object) -> object:
        if len(encoded) >= 8:
            raise KeyboardInterrupt
        encoded.extend(e.id for e in entries)
        return real(encoder, entries, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(catalogue_build, "encode_entries", interrupted_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        build_index(config)
    assert len(encoded) == 8 and not (out / "CURRENT").exists()
    assert sorted(p.name for p in (out / WORK_DIR).glob("chunk-*")) == [
        "chunk-000000.npz",
        "chunk-000001.npz",
    ]

    encoded.clear()
    monkeypatch.setattr(
        catalogue_build, "encode_entries", lambda *a: (encoded.extend(e.id for e in a[1]), real(*a))[1]
    )
    report = build_index(config)
    assert len(encoded) == 2 and report.encoded_now == 2  # only the last chunk (10 files, 4 per chunk)
    assert report.items == 9 and [i for i, _ in report.skipped] == ["broken"]
    assert len(FaissCatalogue.load(out)) == 9 and not (out / WORK_DIR).exists()


def test_resume_refuses_a_different_build(
    image_folder: Path, tiny_checkpoint: Path, tmp_path: Path, demo_dataset: Path
) -> None:
    from tests.helpers.models import write_checkpoint

    out = tmp_path / "index"
    (out / WORK_DIR).mkdir(parents=True)
    other = write_checkpoint(tmp_path / "other.pt", demo_dataset, seed=1)
    (out / WORK_DIR / "plan.json").write_text(json.dumps({"fingerprint": "someone-else"}))
    with pytest.raises(ValueError, match="--restart"):
        build_index(BuildConfig(other, image_folder, out, progress=False))
    report = build_index(BuildConfig(other, image_folder, out, progress=False, restart=True))
    assert report.items == 9


def test_bad_sources_fail_clearly(tmp_path: Path, tiny_checkpoint: Path) -> None:
    assert (
        main(
            [
                "index",
                "build",
                "--checkpoint",
                str(tiny_checkpoint),
                "--catalogue",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        read_catalogue(tmp_path / "empty")


def test_a_build_over_an_existing_catalogue_is_refused_unless_replace_which_keeps_a_backup(
    image_folder: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An item added through the API (here: the catalogue's writer, logged) after the first build must
    not vanish when the build is run again by mistake; `--replace` replaces on purpose and keeps it."""
    out = tmp_path / "index"
    build = [
        "index",
        "build",
        "--checkpoint",
        str(tiny_checkpoint),
        "--catalogue",
        str(image_folder),
        "--out",
        str(out),
    ]
    assert main(build) == 0
    served = FaissCatalogue.load(out, writer=True)
    served.open_log()
    served.add(
        ["added-through-the-api"],
        np.ones((1, len(served.attributes), served.dim), np.float32) / served.dim**0.5,
    )
    served.close()  # stopped without compacting: the item is in the log only
    capsys.readouterr()
    assert main(build) == 2
    assert "already holds a catalogue" in capsys.readouterr().err
    assert "added-through-the-api" in FaissCatalogue.load(out)
    assert not (out / WORK_DIR).exists()  # refused before any encoding
    assert main([*build, "--replace"]) == 0
    kept = capsys.readouterr().out.split("the catalogue it replaced is kept in ")[1].strip()
    assert "added-through-the-api" not in FaissCatalogue.load(out)
    assert "added-through-the-api" in FaissCatalogue.load(kept) and Path(kept).parent == tmp_path

"""Save/load round trips, model fingerprints, and saves that crash half-way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import asen_search.index.store as store
from asen_search.index import (
    FaissCatalogue,
    FingerprintMismatch,
    IndexFormatError,
    ReadOnlyCatalogue,
    read_manifest,
)
from asen_search.index.attribute_index import AttributeIndex
from tests.helpers import ROOT
from tests.helpers.engines import ATTRIBUTES, DIM, FINGERPRINT, clustered, make_catalogue


def assert_same(a: FaissCatalogue, b: FaissCatalogue, queries: np.ndarray) -> None:
    assert a.ids() == b.ids() and len(a) == len(b)
    assert [a.get(i) for i in a.ids()] == [b.get(i) for i in b.ids()]
    for attribute in ATTRIBUTES:
        assert a.search(queries, attribute, 10) == b.search(queries, attribute, 10)
        np.testing.assert_array_equal(a.vector(a.ids()[3], attribute), b.vector(b.ids()[3], attribute))


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".tmp-", "CURRENT.tmp")))


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat"])
def test_round_trip(tmp_path: Path, factory: str) -> None:
    catalogue, vectors, ids = make_catalogue(300, factory)
    catalogue.remove(ids[:10])  # tombstones for HNSW
    if factory != "Flat":
        catalogue.set_search_params(**({"ef_search": 40} if factory == "HNSW16" else {"nprobe": 3}))
        catalogue.set_exact_filter_max(7)
    catalogue.save(tmp_path)
    loaded = FaissCatalogue.load(tmp_path, expected_fingerprint=FINGERPRINT)
    assert_same(catalogue, loaded, vectors[:4, 0])
    assert loaded.search_params() == catalogue.search_params()
    assert loaded.search(vectors[0, 0], "colour", 5, filters={"category": "coat"}) == catalogue.search(
        vectors[0, 0], "colour", 5, filters={"category": "coat"}
    )
    manifest = read_manifest(tmp_path)
    assert manifest["format_version"] == store.FORMAT_VERSION
    assert (manifest["fingerprint"], manifest["dim"], manifest["attributes"], manifest["factory"]) == (
        FINGERPRINT,
        DIM,
        ATTRIBUTES,
        factory,
    )
    assert manifest["count"] == 290 and manifest["attribute_counts"] == {a: 290 for a in ATTRIBUTES}
    assert manifest["created_at"] <= manifest["updated_at"]
    loaded.add(["after-load"], vectors[:1])  # a loaded catalogue keeps working
    assert "after-load" in loaded and "after-load" not in catalogue


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat"])
def test_mmap_load_searches_and_is_read_only(tmp_path: Path, factory: str) -> None:
    catalogue, vectors, _ = make_catalogue(100, factory)
    catalogue.save(tmp_path)
    mapped = FaissCatalogue.load(tmp_path, mmap=True)
    assert mapped.read_only and mapped.search(vectors[1, 0], "colour", 3) == catalogue.search(
        vectors[1, 0], "colour", 3
    )
    with pytest.raises(ReadOnlyCatalogue, match="mmap"):
        mapped.add(["x"], vectors[:1])
    with pytest.raises(ReadOnlyCatalogue):
        mapped.remove(["item-1"])


def test_fingerprint_mismatch_names_both_models(tmp_path: Path) -> None:
    make_catalogue(20)[0].save(tmp_path)
    with pytest.raises(FingerprintMismatch, match="different model") as caught:
        FaissCatalogue.load(tmp_path, expected_fingerprint="model-zzz999")
    assert FINGERPRINT in str(caught.value) and "model-zzz999" in str(caught.value)
    assert FaissCatalogue.load(tmp_path).fingerprint == FINGERPRINT  # no expectation, no check


def test_missing_and_corrupt_saves_are_format_errors(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="no saved index"):
        FaissCatalogue.load(tmp_path / "nothing-here")
    with pytest.raises(IndexFormatError, match="CURRENT"):
        FaissCatalogue.load(tmp_path)
    version = make_catalogue(20)[0].save(tmp_path)
    with open(version / "attr_1.faiss", "ab") as handle:
        handle.write(b"junk")
    with pytest.raises(IndexFormatError, match=r"attr_1\.faiss"):
        FaissCatalogue.load(tmp_path)
    manifest = json.loads((version / "manifest.json").read_text())
    (version / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        FaissCatalogue.load(tmp_path)


def saved_then_grown(tmp_path: Path) -> FaissCatalogue:
    """A catalogue saved with 50 items, then grown to 60 in memory."""
    catalogue, _, _ = make_catalogue(50)
    catalogue.save(tmp_path)
    catalogue.add([f"extra-{i}" for i in range(10)], clustered(np.random.default_rng(1), 10))
    return catalogue


def test_failed_pointer_swap_keeps_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = saved_then_grown(tmp_path)
    real_replace = os.replace

    def fail_on_pointer(src: str, dst: str) -> None:
        if Path(dst).name == "CURRENT":
            raise OSError("disk full while committing")
        real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", fail_on_pointer)
    with pytest.raises(OSError, match="disk full"):
        catalogue.save(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "v000002").is_dir()  # written but never committed
    assert len(FaissCatalogue.load(tmp_path)) == 50
    assert (tmp_path / "v000002").exists()  # a read-only load tidies nothing (a writer may be busy)
    assert len(writer_load(tmp_path)) == 50
    assert not (tmp_path / "v000002").exists() and leftovers(tmp_path) == []  # tidied by the writer's load
    catalogue.save(tmp_path)
    assert len(FaissCatalogue.load(tmp_path)) == 60


def test_failed_rename_keeps_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = saved_then_grown(tmp_path)

    def fail(*_: object) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(store.os, "rename", fail)
    with pytest.raises(OSError, match="rename failed"):
        catalogue.save(tmp_path)
    monkeypatch.undo()
    assert leftovers(tmp_path) == []  # the failed save removed its own temp directory
    assert len(FaissCatalogue.load(tmp_path)) == 50


def test_half_written_temp_dir_is_ignored_and_cleaned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalogue = saved_then_grown(tmp_path)
    calls = []
    real_write = AttributeIndex.write

    def die_on_second(self: AttributeIndex, path: Path) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands in for a crash half-way through writing
        real_write(self, path)

    monkeypatch.setattr(AttributeIndex, "write", die_on_second)
    monkeypatch.setattr(store.shutil, "rmtree", lambda *a, **k: None)  # a crash runs no cleanup
    with pytest.raises(KeyboardInterrupt):
        catalogue.save(tmp_path)
    monkeypatch.undo()
    assert len(leftovers(tmp_path)) == 1
    (tmp_path / "v000007").mkdir()  # and an orphan version newer than CURRENT, without manifest
    (tmp_path / "CURRENT.tmp-dead").write_text("v000007\n")
    loaded = writer_load(tmp_path)
    assert len(loaded) == 50 and loaded.ids() == [f"item-{i}" for i in range(50)]
    assert leftovers(tmp_path) == [] and not (tmp_path / "v000007").exists()
    catalogue.save(tmp_path)
    assert len(FaissCatalogue.load(tmp_path)) == 60


def writer_load(root: Path) -> FaissCatalogue:
    """Load as the directory's writer (which tidies leftovers of crashed saves), then let go."""
    catalogue = FaissCatalogue.load(root, writer=True)
    catalogue.close()
    return catalogue


@pytest.mark.parametrize("crash_point", ["writing", "before_pointer"])
def test_process_killed_mid_save_leaves_previous_loadable(tmp_path: Path, crash_point: str) -> None:
    script = textwrap.dedent(
        f"""
        import os
        from tests.helpers.engines import make_catalogue, clustered
        import numpy as np
        import asen_search.index.store as store
        from asen_search.index.attribute_index import AttributeIndex
        catalogue, _, _ = make_catalogue(50)
        catalogue.save({str(tmp_path)!r})
        catalogue.add(["late"], clustered(np.random.default_rng(0), 1))
        if {crash_point!r} == "writing":
            AttributeIndex.write = lambda self, path: os._exit(3)
        else:
            store.os.replace = lambda src, dst: os._exit(3)
        catalogue.save({str(tmp_path)!r})
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    loaded = writer_load(tmp_path)
    assert len(loaded) == 50 and "late" not in loaded
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.glob("v*")) == ["v000001"]


def test_old_versions_are_pruned(tmp_path: Path) -> None:
    catalogue, _, _ = make_catalogue(10)
    for _ in range(4):
        catalogue.save(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("v*")) == ["v000003", "v000004"]
    assert (tmp_path / "CURRENT").read_text().strip() == "v000004"

"""Distributed encoding on a real local Ray cluster (`ray.init(num_cpus=2)`): the shards give the
same vectors and catalogue as `asen index build`, a second run resumes without re-encoding, an
encoder actor killed mid-run is restarted and its shard retried, unreadable images are listed."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from asen_search.index import CatalogueIndex
from asen_search.service.catalogue.ray_encode import EncodeConfig, ShardEncoder, encode_with_ray
from asen_search.service.catalogue.shards import load_shards, shard_path
from asen_search.service.catalogue.sources import CatalogueEntry, read_catalogue
from asen_search.service.cli.main import main

ray = pytest.importorskip("ray", reason="distributed encoding needs pip install '.[ray]'")
SHARD, N = 40, 120  # 3 shards: every test's cost is mostly starting actors, not encoding


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def entries(demo_dataset: Path) -> list[CatalogueEntry]:
    return read_catalogue(demo_dataset, "test")[:N]


@pytest.fixture(scope="module")
def encoded(local_ray: None, tiny_checkpoint: Path, entries: list[CatalogueEntry],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """One distributed run shared by the tests that only read its shards: (shards folder, report)."""
    out = tmp_path_factory.mktemp("ray") / "shards"
    return out, encode_with_ray(_config(tiny_checkpoint, out), entries)


def _config(checkpoint: Path, out: Path, shard_size: int = SHARD) -> EncodeConfig:
    return EncodeConfig(checkpoint, out, "local", actors=2, batch_size=16, shard_size=shard_size)


def test_shards_give_the_same_catalogue_as_the_single_process_build(encoded: tuple[Path, object], built_index: Path,
                                                                    entries: list[CatalogueEntry],
                                                                    tmp_path: Path) -> None:
    out, report = encoded
    assert report.shards == N // SHARD and report.encoded_now == N and not report.failures  # type: ignore[attr-defined]
    assert main(["index", "load-shards", "--shards", str(out), "--out", str(tmp_path / "index")]) == 0
    distributed, single = CatalogueIndex.load(tmp_path / "index"), CatalogueIndex.load(built_index)
    assert sorted(distributed.ids()) == sorted(e.id for e in entries) and distributed.fingerprint == single.fingerprint
    for item in distributed.ids():
        assert distributed.get(item).metadata == single.get(item).metadata
        for attribute in single.attributes:
            np.testing.assert_allclose(distributed.vector(item, attribute), single.vector(item, attribute), atol=1e-5)


def test_a_second_run_encodes_only_the_missing_shards(encoded: tuple[Path, object], tiny_checkpoint: Path,
                                                      entries: list[CatalogueEntry], tmp_path: Path) -> None:
    out = Path(shutil.copytree(encoded[0], tmp_path / "shards"))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    shard_path(out, 1).unlink()
    again = encode_with_ray(_config(tiny_checkpoint, out), entries)
    assert again.encoded_now == SHARD
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert after.keys() == before.keys() and {k for k in after if after[k] != before[k]} == {shard_path(out, 1).name}
    assert encode_with_ray(_config(tiny_checkpoint, out), entries).encoded_now == 0  # nothing left: no actors


def test_shards_load_into_milvus_too(encoded: tuple[Path, object], tmp_path: Path) -> None:
    pytest.importorskip("pymilvus")
    catalogue = load_shards(encoded[0], f"milvus-lite:{tmp_path}/shards.db#catalogue")
    try:
        assert len(catalogue) == N and catalogue.search(catalogue.vector("test-00005", "colour"), "colour", 1)[0].id \
            == "test-00005"
    finally:
        catalogue.close()


class DiesOnceOnShardTwo(ShardEncoder):
    """Kills its own process the first time it starts shard 2 (a marker file remembers it)."""

    def before_shard(self, number: int) -> None:
        marker = self.out / "died-once"
        if number == 2 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)


def test_a_killed_actor_is_restarted_and_the_run_completes(local_ray: None, tiny_checkpoint: Path,
                                                          entries: list[CatalogueEntry], tmp_path: Path) -> None:
    out = tmp_path / "shards"
    report = encode_with_ray(_config(tiny_checkpoint, out), entries, actor_class=DiesOnceOnShardTwo)
    assert (out / "died-once").exists(), "the actor was never killed: the test tested nothing"
    assert report.encoded_now == len(entries)
    assert len(list(out.glob("shard-*.parquet"))) == report.shards
    catalogue = load_shards(out, str(tmp_path / "index"))
    assert len(catalogue) == len(entries)


def test_unreadable_images_are_listed_not_fatal(local_ray: None, tiny_checkpoint: Path,
                                                entries: list[CatalogueEntry], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    shutil.copy(entries[0].path, tmp_path / "fine.jpg")
    some = [*entries[:30], CatalogueEntry("broken", broken), CatalogueEntry("gone", tmp_path / "missing.jpg")]
    report = encode_with_ray(_config(tiny_checkpoint, tmp_path / "shards", shard_size=16), some)
    assert sorted(f["id"] for f in report.failures) == ["broken", "gone"]
    assert len(load_shards(tmp_path / "shards", str(tmp_path / "index"))) == 30

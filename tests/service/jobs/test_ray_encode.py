"""Distributed encoding on a real local Ray instance (2 CPUs, started by each run's own process, as
`asen encode --ray local` does): the shards give the same vectors and catalogue as `asen index build`,
a second run resumes without re-encoding, an encoder actor killed mid-run is restarted and its shard
retried, unreadable images are listed, not fatal. The first run reads its listing and some images
through fsspec (`file://` URLs: the code path of `s3://`, across Ray's worker processes)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asen_search.index import FaissCatalogue
from asen_search.service.cli.main import main
from asen_search.service.jobs.shards import failures_of, load_shards, shard_path
from asen_search.service.jobs.sources import CatalogueEntry, read_catalogue
from tests.helpers import ROOT

pytestmark = pytest.mark.ray

SHARD, N = 40, 120  # 3 shards: every run's cost is mostly starting Ray and its actors, not encoding


def _listing(entries: list[CatalogueEntry], path: Path) -> Path:
    path.write_text(
        "".join(json.dumps({"id": e.id, "path": str(e.path), "metadata": e.metadata}) + "\n" for e in entries)
    )
    return path


def _encode(checkpoint: Path, listing: Path | str, out: Path, shard_size: int = SHARD) -> tuple[int, str]:
    """`asen encode --ray local`; (images encoded by this run, its output)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asen_search.service.cli",
            "encode",
            "--checkpoint",
            str(checkpoint),
            "--catalogue",
            str(listing),
            "--out",
            str(out),
            "--shard-size",
            str(shard_size),
            "--ray-actors",
            "2",
            "--batch-size",
            "16",
            "--allow-any-url",
        ],  # the listing names the dataset's images, outside its own folder
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    found = re.search(r"encoded (\d+) images", done.stdout)
    assert found is not None, done.stdout
    return int(found.group(1)), done.stdout


@pytest.fixture(scope="module")
def entries(demo_dataset: Path) -> list[CatalogueEntry]:
    return read_catalogue(demo_dataset, "test")[:N]


@pytest.fixture(scope="module")
def encoded(
    tiny_checkpoint: Path,
    entries: list[CatalogueEntry],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str, str]:
    """One distributed run shared by the tests that only read its shards: (shards, listing, output)."""
    work = tmp_path_factory.mktemp("ray")
    broken = work / "broken.jpg"
    broken.write_bytes(b"not an image")
    unreadable = [
        CatalogueEntry("broken", broken.as_uri()),
        CatalogueEntry("gone", (work / "missing.jpg").as_uri()),
    ]
    copy = CatalogueEntry("copy", Path(entries[0].path).as_uri(), entries[0].metadata)  # an image read by URL
    listing = _listing([*entries, copy, *unreadable], work / "listing.jsonl")
    count, output = _encode(
        tiny_checkpoint, listing.as_uri(), work / "shards", SHARD + 1
    )  # 3 shards, 2 bad images
    assert count == N + 3
    return work / "shards", listing.as_uri(), output


def test_shards_give_the_same_catalogue_as_the_single_process_build(
    encoded: tuple[Path, str, str], built_index: Path, entries: list[CatalogueEntry], tmp_path: Path
) -> None:
    out, _, output = encoded
    assert f"into {N // SHARD} shards; 2 unreadable" in output  # the two bad images: listed, not fatal
    assert sorted(f["id"] for f in failures_of(out)) == ["broken", "gone"]
    assert main(["index", "load-shards", "--shards", str(out), "--out", str(tmp_path / "index")]) == 0
    distributed, single = FaissCatalogue.load(tmp_path / "index"), FaissCatalogue.load(built_index)
    assert sorted(distributed.ids()) == sorted([*(e.id for e in entries), "copy"])
    assert distributed.fingerprint == single.fingerprint
    assert distributed.get("copy").metadata["_image"] == Path(entries[0].path).as_uri()
    for attribute in single.attributes:
        np.testing.assert_allclose(
            distributed.vector("copy", attribute), single.vector(entries[0].id, attribute), atol=1e-5
        )
    for item in set(distributed.ids()) - {"copy"}:
        # the listing was read by URL, so its absolute paths were read (and recorded) as URLs on its filesystem
        (mine, theirs) = (dict(distributed.get(item).metadata), dict(single.get(item).metadata))
        assert mine.pop("_image") == Path(theirs.pop("_image")).as_uri() and mine == theirs
        for attribute in single.attributes:
            np.testing.assert_allclose(
                distributed.vector(item, attribute), single.vector(item, attribute), atol=1e-5
            )


@pytest.mark.slow  # a second Ray run (~16 s)
def test_a_second_run_encodes_only_the_missing_shards(
    encoded: tuple[Path, str, str], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = Path(shutil.copytree(encoded[0], tmp_path / "shards"))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    shard_path(out, 1).unlink()
    assert _encode(tiny_checkpoint, encoded[1], out, SHARD + 1)[0] == SHARD + 1
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert after.keys() == before.keys() and {k for k in after if after[k] != before[k]} == {
        shard_path(out, 1).name
    }
    assert _encode(tiny_checkpoint, encoded[1], out, SHARD + 1)[0] == 0  # nothing left: no Ray, no actors


def test_shards_load_into_milvus_too(encoded: tuple[Path, str, str], tmp_path: Path) -> None:
    catalogue = load_shards(encoded[0], f"milvus-lite:{tmp_path}/shards.db#catalogue")
    try:
        assert (
            len(catalogue) == N + 1
            and catalogue.search(catalogue.vector("test-00005", "colour"), "colour", 1)[0].id == "test-00005"
        )
    finally:
        catalogue.close()


@pytest.mark.slow  # a second Ray run (~16 s)
def test_a_killed_actor_is_restarted_and_the_run_completes(
    tiny_checkpoint: Path, encoded: tuple[Path, str, str], tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.helpers.ray_tasks",
            str(tiny_checkpoint),
            str(encoded[1]),
            str(out),
            str(SHARD + 1),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "died-once").exists(), "the actor was never killed: the test tested nothing"
    assert f"encoded {N + 3} images" in done.stdout
    assert len(list(out.glob("shard-*.parquet"))) == N // SHARD
    assert len(load_shards(out, str(tmp_path / "index"))) == N + 1

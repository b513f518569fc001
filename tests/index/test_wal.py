"""The write-ahead log: logged writes survive without a snapshot, a torn last record is an
unacknowledged write and is dropped, compaction leaves a complete state wherever it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from asen_search.index import (
    NO_SPACE_ERRNOS,
    DirectoryLocked,
    FaissCatalogue,
    LogUnavailable,
    ReadOnlyCatalogue,
)
from asen_search.index.wal import LogRecord, log_path, read_log
from tests.helpers import ROOT
from tests.helpers.wal import ATTRS, DIM, file_size_limit
from tests.helpers.wal import opened as _opened
from tests.helpers.wal import vectors as _vectors


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    catalogue = FaissCatalogue.create(ATTRS, DIM, "fp")
    catalogue.add([f"base-{i}" for i in range(20)], _vectors(20, 0), [{"n": i} for i in range(20)])
    catalogue.save(tmp_path / "ix")
    return tmp_path / "ix"


def _assert_same(a: FaissCatalogue, b: FaissCatalogue) -> None:
    assert sorted(a.ids()) == sorted(b.ids())
    for item_id in a.ids():
        assert a.get(item_id) == b.get(item_id)
        for attribute in ATTRS:
            np.testing.assert_array_equal(a.vector(item_id, attribute), b.vector(item_id, attribute))


def test_logged_writes_are_replayed(saved: Path) -> None:
    live = _opened(saved)
    live.add(["new-1", "new-2"], _vectors(2, 1), [{"a": "x"}, {"b": [1, 2]}])
    live.upsert(["base-3"], _vectors(1, 2), [{"replaced": True}])
    live.upsert(["base-4"], _vectors(1, 3))  # keeps its metadata
    live.remove(["base-5", "new-2", "never-there"])
    assert live.log_size > 0
    reloaded = FaissCatalogue.load(saved)  # no snapshot was written since: all from the log
    _assert_same(live, reloaded)
    assert reloaded.get("base-4").metadata == {"n": 4}
    assert "base-5" not in reloaded and "new-2" not in reloaded
    assert len(read_log(log_path(saved, "v000001"))[0]) == 4  # the unknown id was not logged


def test_torn_last_record_is_dropped_and_cut_off(saved: Path) -> None:
    live = _opened(saved)
    live.add(["kept"], _vectors(1, 4))
    live.close()
    path = log_path(saved, "v000001")
    whole = LogRecord("upsert", ["torn"], _vectors(1, 5), [{}]).encode()
    for cut in (1, 11, len(whole) // 2, len(whole) - 1):
        with open(path, "ab") as fh:
            fh.write(whole[:cut])
        loaded = FaissCatalogue.load(saved)
        assert "kept" in loaded and "torn" not in loaded
        loaded.open_log()  # cuts the torn bytes off so later records are not lost behind them
        loaded.add([f"after-{cut}"], _vectors(1, cut))
        loaded.close()
        again = FaissCatalogue.load(saved)
        assert f"after-{cut}" in again and "torn" not in again


def test_corrupt_record_stops_replay(saved: Path) -> None:
    live = _opened(saved)
    live.add(["one"], _vectors(1, 6))
    live.add(["two"], _vectors(1, 7))
    live.close()
    path = log_path(saved, "v000001")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip a bit inside the last record's vectors: its checksum fails
    path.write_bytes(bytes(data))
    loaded = FaissCatalogue.load(saved)
    assert "one" in loaded and "two" not in loaded


def test_checkpoint_folds_the_log_into_a_new_snapshot(saved: Path) -> None:
    live = _opened(saved)
    live.add(["c1"], _vectors(1, 8))
    version = live.checkpoint()
    assert version.name == "v000002" and live.log_size == 0
    assert not log_path(saved, "v000001").exists()
    live.remove(["c1"])
    live.add(["c2"], _vectors(1, 9))
    _assert_same(live, FaissCatalogue.load(saved))
    live.save(saved)  # saving into its own directory is a checkpoint too
    assert live.log_size == 0
    _assert_same(live, FaissCatalogue.load(saved))


def test_one_writer_per_directory(saved: Path) -> None:
    _opened(saved)
    second = FaissCatalogue.load(saved)  # flock is per open file: a second one in this process conflicts too
    with pytest.raises(DirectoryLocked, match=f"process {os.getpid()} .*one writer per index directory"):
        second.open_log()
    with pytest.raises(DirectoryLocked):
        FaissCatalogue.load(saved, writer=True)


def test_mmap_refuses_unapplied_log(saved: Path) -> None:
    live = _opened(saved)
    live.add(["pending"], _vectors(1, 10))
    with pytest.raises(ReadOnlyCatalogue, match="logged writes"):
        FaissCatalogue.load(saved, mmap=True)
    live.checkpoint()
    assert "pending" in FaissCatalogue.load(saved, mmap=True)


def test_failed_append_leaves_no_trace(saved: Path) -> None:
    live = _opened(saved)
    live.add(["before"], _vectors(1, 11))
    size = live.log_size
    with file_size_limit(size + 40), pytest.raises(OSError) as info:  # the record is ~200 bytes: half written
        live.add(["lost"], _vectors(1, 12))
    assert info.value.errno in NO_SPACE_ERRNOS
    assert "lost" not in live and live.log_size == size  # not applied, and cut back on disk
    assert os.path.getsize(log_path(saved, "v000001")) == size
    live.add(["after"], _vectors(1, 13))
    reloaded = FaissCatalogue.load(saved)
    assert {"before", "after"} <= set(reloaded.ids()) and "lost" not in reloaded


def test_log_that_cannot_be_restored_refuses_writes_until_a_checkpoint(saved: Path) -> None:
    """/dev/full under the log's descriptor: the append fails (ENOSPC) and so does cutting it
    back; writes are refused (no write may follow a garbage record) until a checkpoint."""
    live = _opened(saved)
    fd = live._store.log._fd  # type: ignore[union-attr]
    kept, full = os.dup(fd), os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, fd)
    try:
        with pytest.raises(OSError):
            live.add(["lost"], _vectors(1, 12))
        with pytest.raises(LogUnavailable):
            live.add(["refused"], _vectors(1, 13))
        assert live.log_error is not None
    finally:
        os.dup2(kept, fd)
        os.close(kept)
        os.close(full)
    live.checkpoint()
    assert live.log_error is None
    live.add(["resumed"], _vectors(1, 14))
    reloaded = FaissCatalogue.load(saved)
    assert "resumed" in reloaded and "lost" not in reloaded and "refused" not in reloaded


KILL_DURING_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import asen_search.index.store as store
    from asen_search.index import FaissCatalogue

    where, directory = sys.argv[1], sys.argv[2]
    catalogue = FaissCatalogue.load(directory)
    catalogue.open_log()
    rng = np.random.default_rng(99)
    v = rng.standard_normal((3, 3, 8)).astype(np.float32)
    catalogue.add(["w1", "w2", "w3"], v / np.linalg.norm(v, axis=-1, keepdims=True), [{}, {}, {"k": 1}])
    catalogue.remove(["base-0"])
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "files":        # while the new snapshot's files are written
        store._write_version = die
    elif where == "pointer":    # new snapshot complete, CURRENT not yet moved
        os.replace = die
    else:                       # CURRENT moved, the new log not yet started
        import asen_search.index.directory as directory_module
        directory_module.WriteAheadLog = die
    catalogue.checkpoint()
""")


@pytest.mark.parametrize("where", ["files", "pointer", "new-log"])
def test_killed_checkpoint_leaves_a_complete_state(saved: Path, where: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KILL_DURING_CHECKPOINT, where, str(saved)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    loaded = FaissCatalogue.load(saved)
    assert {"w1", "w2", "w3"} <= set(loaded.ids()) and "base-0" not in loaded
    assert len(loaded) == 22 and loaded.get("w3").metadata == {"k": 1}
    for attribute in ATTRS:  # every item in every attribute index
        hits = loaded.search(loaded.vector("w2", attribute), attribute, k=1)
        assert hits[0].id == "w2"
    loaded.open_log()
    loaded.add(["later"], _vectors(1, 14))
    loaded.checkpoint()
    assert "later" in FaissCatalogue.load(saved)


def test_compact_command_folds_the_log(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from asen_search.service.cli.main import main

    live = _opened(saved)
    live.add(["pending"], _vectors(1, 15))
    assert main(["index", "compact", "--index", str(saved)]) == 2  # the writer still has the log open
    assert "one writer per index directory" in capsys.readouterr().err
    live.close()
    assert main(["index", "compact", "--index", str(saved)]) == 0
    assert "21 items in v000002" in capsys.readouterr().out
    assert "pending" in FaissCatalogue.load(saved, mmap=True)

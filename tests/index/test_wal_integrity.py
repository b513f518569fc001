"""What could lose acknowledged writes before: a second writer on one directory, a damaged frame
in the middle of the log, a record over the size limit. Each test fails without its mechanism
(the directory lock, telling a torn tail from corruption, the limit enforced at append)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import asen_search.index.wal as wal
from asen_search.index import (
    CatalogueExists,
    DirectoryLocked,
    FaissCatalogue,
    LogCorrupt,
    RecordTooLarge,
    StaleCatalogue,
    repair_log,
)
from asen_search.index.wal import LogRecord, log_path, scan_log, split_write
from tests.helpers.wal import ATTRS, DIM
from tests.helpers.wal import opened as _opened
from tests.helpers.wal import vectors as _vectors


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    catalogue = FaissCatalogue.create(ATTRS, DIM, "fp")
    catalogue.add(["base"], _vectors(1, 0))
    catalogue.save(tmp_path / "ix")
    return tmp_path / "ix"


# -- 1. one writer per directory ------------------------------------------------------------------
def test_a_second_writer_cannot_delete_the_live_log(saved: Path) -> None:
    """The review's sequence: A writes; B loads; A adds a1, compacts, adds a2; B tries to open its
    (stale) log. Before the lock, B's open succeeded and deleted A's live log."""
    a = _opened(saved)
    b = FaissCatalogue.load(saved)
    a.add(["a1"], _vectors(1, 1))
    a.checkpoint()
    a.add(["a2"], _vectors(1, 2))
    with pytest.raises(DirectoryLocked, match="one writer per index directory"):
        b.open_log()
    with pytest.raises(DirectoryLocked):
        FaissCatalogue.load(saved, writer=True)
    a.add(["a3"], _vectors(1, 3))
    assert sorted(FaissCatalogue.load(saved).ids()) == ["a1", "a2", "a3", "base"]


def test_a_stale_loader_is_refused_after_the_writer_left(saved: Path) -> None:
    b = FaissCatalogue.load(saved)  # loaded without the lock: may go stale
    a = _opened(saved)
    a.add(["a1"], _vectors(1, 1))
    a.close()  # the lock is free again, but b's view is older than the log
    with pytest.raises(StaleCatalogue, match="Load it again"):
        b.open_log()
    a = _opened(saved)
    a.checkpoint()
    a.close()
    with pytest.raises(StaleCatalogue, match="moved from v000001 to v000002"):
        b.open_log()
    fresh = FaissCatalogue.load(saved, writer=True)
    fresh.open_log()
    fresh.add(["b1"], _vectors(1, 4))
    fresh.close()
    assert sorted(FaissCatalogue.load(saved).ids()) == ["a1", "b1", "base"]


def test_saves_and_repairs_into_a_live_directory_are_refused(saved: Path) -> None:
    live = FaissCatalogue.load(saved, writer=True)
    live.open_log()
    live.add(["acknowledged"], _vectors(1, 5))
    other = FaissCatalogue.create(ATTRS, DIM, "fp")
    other.add(["x"], _vectors(1, 6))
    with pytest.raises(DirectoryLocked, match=f"process {os.getpid()}"):
        other.save(saved)  # `asen index build --out` into a served directory
    with pytest.raises(DirectoryLocked):
        repair_log(saved)
    live.close()
    assert sorted(FaissCatalogue.load(saved).ids()) == ["acknowledged", "base"]
    with pytest.raises(CatalogueExists, match="already holds a catalogue"):
        other.save(saved)  # the writer has gone, but the directory holds writes `other` never saw
    assert sorted(FaissCatalogue.load(saved).ids()) == ["acknowledged", "base"]
    other.save(saved, replace=True)  # on purpose
    assert FaissCatalogue.load(saved).ids() == ["x"]


def test_a_stale_save_into_its_own_directory_is_refused(saved: Path) -> None:
    """A catalogue loaded without the lock (a script, a notebook) must not save over writes a server
    acknowledged meanwhile, whether they are still in the log or already compacted."""
    stale = FaissCatalogue.load(saved)
    server = _opened(saved)
    server.add(["ack-1", "ack-2"], _vectors(2, 21))
    server.checkpoint()
    server.close()
    stale.add(["mine"], _vectors(1, 22))
    with pytest.raises(StaleCatalogue, match="moved from v000001 to v000002"):
        stale.save(saved)
    logged = FaissCatalogue.load(saved)
    server = _opened(saved)
    server.add(["ack-3"], _vectors(1, 23))  # in the log only
    server.close()
    with pytest.raises(StaleCatalogue, match="write-ahead log holds"):
        logged.save(saved)
    assert {"ack-1", "ack-2", "ack-3"} <= set(FaissCatalogue.load(saved).ids())
    assert "mine" not in FaissCatalogue.load(saved)


def test_an_unchanged_directory_takes_a_save_of_what_was_loaded_from_it(saved: Path) -> None:
    loaded = FaissCatalogue.load(saved)
    loaded.add(["new"], _vectors(1, 24))
    loaded.save(saved)
    loaded.add(["newer"], _vectors(1, 25))
    loaded.save(saved)  # its own last save: still unchanged since
    assert {"new", "newer", "base"} <= set(FaissCatalogue.load(saved).ids())


def test_the_lock_dies_with_its_process(saved: Path) -> None:
    import subprocess
    import sys

    script = (
        "import os, sys; from asen_search.index import FaissCatalogue; "
        "c = FaissCatalogue.load(sys.argv[1], writer=True); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", script, str(saved)], timeout=60).returncode == 9
    FaissCatalogue.load(saved, writer=True).close()  # no stale lock after kill: the kernel freed it


# -- 2. a damaged frame followed by valid ones is corruption, not a torn tail ---------------------
def _three_records(saved: Path) -> tuple[Path, list[int]]:
    live = _opened(saved)
    for n in range(3):
        live.add([f"r{n}"], _vectors(1, 10 + n))
    live.close()
    path = log_path(saved, "v000001")
    return path, [a for a, _ in scan_log(path).frames]


@pytest.mark.parametrize("which", [0, 1])
def test_damage_before_valid_records_refuses_to_load_and_changes_nothing(saved: Path, which: int) -> None:
    path, starts = _three_records(saved)
    data = bytearray(path.read_bytes())
    data[starts[which] + 40] ^= 0x01  # one bit inside the record
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt, match=f"byte {starts[which]} is damaged and {2 - which} valid records"):
        FaissCatalogue.load(saved)
    with pytest.raises(LogCorrupt):
        FaissCatalogue.load(saved, writer=True)
    assert path.read_bytes() == bytes(data), "the log was changed"
    assert not list(saved.glob("*.cut-*"))


def test_damage_in_the_last_record_is_a_torn_tail_cut_with_a_copy(saved: Path) -> None:
    path, starts = _three_records(saved)
    data = bytearray(path.read_bytes())
    data[starts[2] + 40] ^= 0x01
    path.write_bytes(bytes(data))
    loaded = FaissCatalogue.load(saved)
    assert sorted(loaded.ids()) == ["base", "r0", "r1"]
    loaded.open_log()
    loaded.close()
    assert path.stat().st_size == starts[2]
    (copy,) = saved.glob("wal-v000001.log.cut-*")
    assert copy.read_bytes() == bytes(data[starts[2] :]), "the cut bytes are kept"


def test_repair_reports_then_cuts_or_salvages_keeping_a_copy(saved: Path) -> None:
    path, starts = _three_records(saved)
    data = bytearray(path.read_bytes())
    data[starts[1] + 40] ^= 0x01
    path.write_bytes(bytes(data))
    dry = repair_log(saved, dry_run=True)
    assert [r.ids for r in dry.kept] == [["r0"]] and [r.ids for r in dry.lost] == [["r2"]]
    assert dry.unreadable == [(starts[1], starts[2])] and not dry.applied
    assert "lost: upsert of 1 item(s): r2" in "\n".join(dry.lines())
    assert path.read_bytes() == bytes(data)

    salvage = repair_log(saved, "salvage", dry_run=True)
    assert [r.ids for r in salvage.kept] == [["r0"], ["r2"]] and salvage.lost == []

    done = repair_log(saved, "salvage")
    assert done.applied and done.backup is not None and done.backup.read_bytes() == bytes(data)
    assert sorted(FaissCatalogue.load(saved).ids()) == ["base", "r0", "r2"]
    assert not repair_log(saved).needed


def test_repair_command_refuses_while_served_and_reports(
    saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asen_search.service.cli.main import main

    path, starts = _three_records(saved)
    data = bytearray(path.read_bytes())
    data[starts[0] + 40] ^= 0x01
    path.write_bytes(bytes(data))
    assert main(["index", "compact", "--index", str(saved)]) == 2
    assert "is corrupt" in capsys.readouterr().err
    assert main(["index", "repair", "--index", str(saved), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "keeps 0 records" in out and "r1" in out and "r2" in out and "dry run" in out
    assert main(["index", "repair", "--index", str(saved)]) == 0
    assert "repaired" in capsys.readouterr().out
    assert FaissCatalogue.load(saved).ids() == ["base"]
    assert len(list(saved.glob("wal-v000001.log.corrupt-*"))) == 1


# -- the record size limit: enforced at append, large writes split, each write applied whole ------
def test_a_record_over_the_limit_is_refused_before_anything_is_written(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = _opened(saved)
    live.add(["small"], _vectors(1, 1))
    size = live.log_size
    record = LogRecord("upsert", ["big"], _vectors(1, 2), [{"blob": "x" * 4000}])
    monkeypatch.setattr(wal, "MAX_RECORD_BYTES", len(record.encode()) - wal._FRAME.size - 1)  # just over
    with pytest.raises(RecordTooLarge, match="over the limit"):
        live._store.log.append(record)  # type: ignore[union-attr]
    with pytest.raises(RecordTooLarge, match="alone needs"):
        live.add(["big"], _vectors(1, 2), [{"blob": "x" * 4000}])
    assert live.log_size == size and log_path(saved, "v000001").stat().st_size == size and "big" not in live
    live.close()


def test_a_large_write_is_split_and_applied_whole(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wal, "MAX_RECORD_BYTES", 2000)
    live = _opened(saved)
    ids = [f"bulk-{i}" for i in range(40)]
    live.add(ids, _vectors(40, 3), [{"i": i} for i in range(40)])
    live.remove(ids[:30])
    live.close()
    path = log_path(saved, "v000001")
    scan = scan_log(path)
    assert len(scan.records) > 2 and all(len(r.encode()) <= 2000 + wal._FRAME.size for r in scan.records)
    reloaded = FaissCatalogue.load(saved)
    assert sorted(reloaded.ids()) == sorted(["base", *ids[30:]])
    assert reloaded.get("bulk-35").metadata == {"i": 35}
    # a crash part-way through a split write: none of it is applied, and the writer cuts it off
    first_add = [r for r in scan.records if r.op == "upsert"]
    end_of_first_part = scan.frames[0][1]
    assert first_add[0].more > 0
    data = path.read_bytes()
    path.write_bytes(data[:end_of_first_part])
    assert FaissCatalogue.load(saved).ids() == ["base"]
    _opened(saved).close()
    assert path.stat().st_size == 0


def test_split_write_counts_down_and_keeps_order() -> None:
    vectors = _vectors(5, 1)
    records = split_write("upsert", [f"i{n}" for n in range(5)], vectors, [{}] * 5)
    assert len(records) == 1 and records[0].more == 0
    small = split_write("remove", [f"i{n}" for n in range(5)])
    assert [r.ids for r in small] == [[f"i{n}" for n in range(5)]]
    with pytest.raises(ValueError, match="count down"):
        wal.WriteAheadLog.append(None, [LogRecord("remove", ["a"]), LogRecord("remove", ["b"])])  # type: ignore
    assert np.array_equal(records[0].vectors, vectors)

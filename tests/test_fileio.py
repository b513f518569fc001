"""The one atomic-write helper every layer uses (asen_search/fileio.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asen_search import fileio


def test_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    fileio.atomic_write(target, lambda fh: fh.write(b"new"))
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["file.bin"]


def test_a_failing_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def half_then_fail(fh: object) -> None:
        fh.write(b"partial")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        fileio.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["file.bin"]


def test_file_then_rename_then_directory_are_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The order that makes the write durable: the data reaches the disk before the rename makes it
    visible, and the directory after it, so the new name survives a crash."""
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("fsync " + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).split(".tmp-")[0])
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        steps.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    fileio.atomic_write(tmp_path / "file.bin", lambda fh: fh.write(b"x"))
    assert steps == ["fsync file.bin", "rename", f"fsync {tmp_path.name}"]


def test_temporary_names_are_unique(tmp_path: Path) -> None:
    assert fileio.temp_name(tmp_path / "a") != fileio.temp_name(tmp_path / "a")

"""Durable file-system steps shared by every layer: the store, the write-ahead log, the writer lock,
stored item images, index-build chunks and checkpoints.

It lives below the layers (standard library only, no import from `model`, `index` or `service`), so
that `model` and `index` can both use it without importing each other (tests/test_layers.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory by path (a directory: so the names made in it survive a crash)."""
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """A unique temporary name beside `path` (`NAME.tmp-XXXXXXXX`): concurrent writers of the same
    file never share one, and a left-over one is recognisable."""
    return path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *, sync_dir: bool = True
) -> None:
    """Replace `path` with what `write(file)` writes, all or nothing, durably: a temporary file
    beside it is written, flushed and fsynced, renamed over `path` (`os.replace`, atomic on POSIX)
    and, with `sync_dir`, the directory is fsynced so the new name itself survives a crash. A crash
    or an exception at any point leaves the old file (or none) and never a partial one; the
    temporary file is removed on an exception."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_path(path.parent)

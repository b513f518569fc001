"""One writer per index directory.

A writer (a serving catalogue with its write-ahead log, ``asen index compact``, ``asen index
build``, ``asen index repair``, a plain ``save``) takes an exclusive ``flock`` on ``root/LOCK``
before it reads anything, and holds it for as long as it may write: the way SQLite and etcd hold
theirs. A second writer is refused at once with ``DirectoryLocked``, naming the process that holds
the lock (recorded in the file); read-only loads take no lock and are never refused.

The lock is the kernel's: it goes away with the process that held it (``kill -9`` included), so a
crash never leaves a stale lock behind; the file itself stays (deleting a lock file is racy).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from asen_search.fileio import fsync_path

from .errors import CatalogueError

LOCK_FILE = "LOCK"


class DirectoryLocked(CatalogueError, RuntimeError):
    """Another writer (another process, or another catalogue of this one) holds the directory."""


class DirectoryUnwritable(CatalogueError, OSError):
    """The lock file cannot be created or opened for writing (read-only filesystem, permissions):
    nothing can be written there, so the directory can only be opened read-only."""


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"process {info['pid']} ({info['command']}; {info['purpose']}, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


class DirectoryLock:
    """The exclusive writer lock of one index directory; ``release`` (or process exit) frees it."""

    def __init__(self, root: Path, fd: int) -> None:
        self.root, self._fd = root, fd

    @classmethod
    def acquire(cls, root: str | os.PathLike[str], purpose: str, create: bool = False) -> DirectoryLock:
        """Take the lock of ``root`` without waiting. DirectoryLocked names the holder when another
        writer has it; DirectoryUnwritable when the lock file cannot be opened for writing;
        FileNotFoundError when ``root`` does not exist (``create=True`` makes it)."""
        root = Path(root)
        if create and not root.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            fsync_path(root.parent)  # the new directory's name survives a crash
        elif not root.is_dir():
            raise FileNotFoundError(f"no index directory at {root}")
        path = root / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except (PermissionError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise DirectoryUnwritable(
                exc.errno,
                f"{root} cannot be written ({exc.strerror or exc}): it can only be opened read-only",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            finally:
                os.close(fd)
            raise DirectoryLocked(
                f"{root} is being written by {_describe(holder)}: one writer per index directory. Stop that "
                f"process first (or, to read without writing, open the index read-only)"
            ) from None
        except OSError:
            os.close(fd)
            raise
        record = json.dumps(
            {
                "pid": os.getpid(),
                "command": " ".join(sys.argv)[:200] or "python",
                "purpose": purpose,
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode("utf-8"), 0)
        except OSError:
            pass  # only the description of the holder is lost; the lock itself is held
        return cls(root, fd)

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def covers(self, root: str | os.PathLike[str]) -> bool:
        """Whether this is the (held) lock of ``root``."""
        return self.held and Path(root).resolve() == self.root.resolve()

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

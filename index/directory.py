"""The FAISS engine's store: the index directory a catalogue is loaded from and written to, with
its writer lock (index/dirlock.py), its versioned snapshots (index/store.py), its write-ahead log
(index/wal.py) and the staleness rule that keeps a catalogue from writing over what it has not seen.

The rule: a catalogue may commit into a directory only while it holds the directory's lock and the
directory is still as it was when the catalogue was read (the same committed version, the same
bytes of log), or when the directory holds no catalogue yet. Anything else (another process
compacted it or logged writes since; a fresh catalogue saved over an existing one) is refused with
StaleCatalogue or CatalogueExists before a byte is written, unless the caller says `replace`.

The searchable state (ids, metadata, vectors) is the catalogue's (index/faiss_catalogue.py); the store
only persists what it is given. Callers serialise writes (the catalogue's writer mutex).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .dirlock import DirectoryLock
from .errors import CatalogueError, CatalogueExists
from .store import Snapshot, current_version, load_snapshot, save_snapshot, tidy_after_load
from .wal import LogRecord, LogUnavailable, WriteAheadLog, log_path, read_log, remove_stale_logs


class StaleCatalogue(CatalogueError, RuntimeError):
    """The directory changed after this catalogue was loaded (another writer committed or logged
    writes since): writing would lose them. Load it again."""


class DirectoryStore:
    """Where one catalogue lives on disk; see the module docstring."""

    def __init__(self) -> None:
        self.root: Path | None = None  # the directory this catalogue was loaded from or saved to
        self.version: str | None = None  # the committed version it was read from (or wrote)
        self.loaded_log_end = 0  # bytes of that version's log it has seen
        self.lock: DirectoryLock | None = None  # held from load(writer=True) or open_log until close
        self.log: WriteAheadLog | None = None
        self.durable = False  # open_log was called: every write goes through the log
        self.error = ""  # why writes are refused when durable and log is None

    # -- reading -------------------------------------------------------------------------------
    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], expected_fingerprint: str | None, mmap: bool, writer: bool
    ) -> tuple[DirectoryStore, Snapshot, list[LogRecord]]:
        """The committed snapshot of `directory` and the logged writes since; `writer=True` takes the
        directory's lock first (DirectoryLocked naming the holder) and keeps it."""
        root = Path(directory)
        if writer and mmap:
            raise ValueError("a memory-mapped catalogue is read-only: it cannot be loaded as the writer")
        store = cls()
        store.lock = DirectoryLock.acquire(root, "writing the catalogue") if writer else None
        try:
            snapshot, manifest = load_snapshot(root, expected_fingerprint, mmap)
            records, end, _ = read_log(log_path(root, manifest["version"]))
        except BaseException:
            store.release()
            raise
        store.root, store.version, store.loaded_log_end = root, manifest["version"], end
        if store.lock is not None:
            tidy_after_load(root, manifest["version"])
        return store, snapshot, records

    def is_source(self, directory: str | os.PathLike[str]) -> bool:
        return self.root is not None and Path(directory).resolve() == self.root.resolve()

    # -- the staleness rule --------------------------------------------------------------------
    def check_unchanged(self) -> None:
        """StaleCatalogue when the directory moved on since this catalogue read it (a compaction
        committed a new version, or writes were logged). Caller holds the directory's lock."""
        assert self.root is not None and self.version is not None
        now = current_version(self.root)
        if now != self.version:
            raise StaleCatalogue(
                f"{self.root} moved from {self.version} to {now} after this catalogue was loaded: "
                "writing now would lose what was committed since. Load it again (with "
                "writer=True, which locks the directory before reading)"
            )
        _, end, _ = read_log(log_path(self.root, self.version))
        if end != self.loaded_log_end:
            raise StaleCatalogue(
                f"{self.root}'s write-ahead log holds {end} bytes of writes, {self.loaded_log_end} "
                "when this catalogue was loaded: writing now would lose the writes logged since. "
                "Load it again (with writer=True)"
            )

    def _check_may_replace(self, target: Path) -> None:
        """Whether committing into `target` can lose writes this catalogue has not seen (lock held)."""
        current = current_version(target)
        if current is None:
            return
        if self.is_source(target):
            self.check_unchanged()
            return
        raise CatalogueExists(
            f"{target} already holds a catalogue (version {current}) that this one was not loaded "
            "from: saving would replace it and every write it holds. Save elsewhere, load that "
            "catalogue instead, or replace it on purpose (save(..., replace=True); `asen index "
            "build --replace` keeps a dated backup)"
        )

    # -- writing -------------------------------------------------------------------------------
    def save(
        self,
        directory: str | os.PathLike[str],
        snapshot: Snapshot,
        lock: DirectoryLock | None = None,
        replace: bool = False,
    ) -> Path:
        """Commit `snapshot` as the next version of `directory` under its lock (the caller's `lock`,
        the one this store holds, or taken for the save); refused by the staleness rule unless
        `replace`. Saving into the directory it was read from makes that directory its source."""
        target = Path(directory)
        if lock is not None and not lock.covers(target):
            raise ValueError(f"the lock passed to save is not a held lock of {target}")
        held = lock or (self.lock if self.lock is not None and self.lock.covers(target) else None)
        own = None if held is not None else DirectoryLock.acquire(target, "saving a snapshot", create=True)
        try:
            if not replace:
                self._check_may_replace(target)
            path = save_snapshot(target, snapshot, held or own)
        finally:
            if own is not None:
                own.release()
        if self.root is None or self.is_source(target):
            self.root, self.version, self.loaded_log_end = target, path.name, 0
        return path

    def open_log(self, check_writable: Callable[[], None]) -> None:
        """Log every write from now on to the log of the version this catalogue was read from.
        Takes the directory's lock if `load(writer=True)` did not (DirectoryLocked when another
        writer has it; StaleCatalogue when the directory changed since the load)."""
        if self.root is None or self.version is None:
            raise ValueError("open_log needs a catalogue loaded from a directory (FaissCatalogue.load)")
        check_writable()
        acquired = DirectoryLock.acquire(self.root, "writing the catalogue") if self.lock is None else None
        try:
            if acquired is not None:
                self.check_unchanged()
            log = WriteAheadLog(self.root, self.version)
        except BaseException:
            if acquired is not None:
                acquired.release()
            raise
        if acquired is not None:
            self.lock = acquired
        self.log, self.durable = log, True
        remove_stale_logs(self.root, self.version)

    def append(self, records: Callable[[], list[LogRecord]]) -> None:
        """Log a write before it is applied; a no-op until `open_log`."""
        if not self.durable:
            return
        if self.log is None:
            raise LogUnavailable(self.error)
        self.log.append(records())

    def checkpoint(self, snapshot: Snapshot) -> Path:
        """Commit `snapshot` (everything logged so far) as a new version and start its empty log. A
        crash at any point leaves a loadable, complete state."""
        if self.root is None or not self.durable:
            raise ValueError("checkpoint needs a catalogue with an open log (load, then open_log)")
        assert self.lock is not None
        path = save_snapshot(self.root, snapshot, self.lock)
        old = self.log
        self.version, self.loaded_log_end = path.name, 0
        try:
            new = WriteAheadLog(self.root, path.name)
        except OSError as exc:
            self.log = None
            self.error = (
                f"the snapshot {path.name} was committed but its write-ahead log could not be started "
                f"({exc}); writes are refused until a checkpoint succeeds"
            )
            raise
        finally:
            if old is not None:
                old.close()
        self.log = new  # swapped in one step: a write never sees the catalogue without a log
        remove_stale_logs(self.root, path.name)
        return path

    def refuse(self, reason: str) -> None:
        self.durable, self.log, self.error = True, None, reason

    @property
    def log_size(self) -> int:
        log = self.log
        return log.size if log is not None else 0

    @property
    def log_error(self) -> str | None:
        if not self.durable:
            return None
        if self.log is None:
            return self.error
        return self.log.broken

    def close(self) -> None:
        """Close the log (without compacting it) and release the lock."""
        if self.log is not None:
            self.log.close()
            self.log = None
            self.error = "the catalogue was closed"
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

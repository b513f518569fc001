"""Durable writes in the service: each `POST /items` / `DELETE /items/{id}` is appended to the
index's write-ahead log and fsynced before it is applied and acknowledged (`index/wal.py`); a
background task compacts the log into a new snapshot when it grows past `compact_log_bytes`, at
least every `compact_interval_s`, and once more at clean shutdown; after each compaction, uploaded
images that no item names any more (deleted or replaced items) are deleted.

Storage failures become JSON errors that say what happened: 507 `insufficient_storage` (disk or
quota full), 503 `storage_unavailable` (directory not writable, log unusable). The write is not
applied, earlier data stays as it was, and searches go on.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio

from asen_search.index import NO_SPACE_ERRNOS, Catalogue, LogUnavailable
from asen_search.service.api.errors import ApiError
from asen_search.service.api.prometheus import Metrics
from asen_search.service.catalogue.item_images import IMAGE_KEY, prune_uploads

UPLOAD_GRACE_S = 3600.0  # an unreferenced upload younger than this may belong to a write in flight

logger = logging.getLogger("asen.service")


def storage_error(exc: BaseException, what: str) -> ApiError:
    """The API error for a write that storage refused (`what`: "the write", "the image", ...)."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return ApiError(507, "insufficient_storage", f"{what} was not saved: no space left for the index "
                        f"({exc.strerror or exc}); nothing was changed and searches keep working")
    if isinstance(exc, LogUnavailable):
        return ApiError(503, "storage_unavailable", f"{what} was not saved: {exc}")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ApiError(503, "storage_unavailable", f"{what} was not saved: the index directory cannot be written "
                    f"({reason}); nothing was changed and searches keep working")


class Compactor:
    """Folds the write-ahead log into a snapshot, off the event loop, holding the service's write
    lock (searches continue; writes wait for it)."""

    def __init__(self, catalogue: Catalogue, write_lock: object, max_bytes: int, interval_s: float,
                 metrics: Metrics | None = None, index_dir: Path | None = None,
                 upload_grace_s: float = UPLOAD_GRACE_S) -> None:
        self.catalogue, self.write_lock, self.metrics = catalogue, write_lock, metrics
        self.index_dir, self.upload_grace_s = index_dir, upload_grace_s
        self.max_bytes, self.interval_s = max_bytes, interval_s
        self.wanted = anyio.Event()
        self.failures = 0

    def note_write(self) -> None:
        """After each write: ask for a compaction once the log is over its size."""
        if self.metrics is not None:
            self.metrics.log_bytes.set(self.catalogue.log_size)
        if self.catalogue.log_size > self.max_bytes:
            self.wanted.set()

    def compact_now(self) -> bool:
        """Compact if the log holds anything (or writes are refused for want of a log); blocking."""
        if self.catalogue.log_size == 0 and self.catalogue.log_error is None:
            return False
        start = time.perf_counter()
        with self.write_lock:  # type: ignore[attr-defined]
            before = self.catalogue.log_size
            try:
                version = self.catalogue.checkpoint()
            except Exception:
                if self.metrics is not None:
                    self.metrics.compactions.labels("failed").inc()
                raise
            logger.info("compacted %d log bytes into %s in %.2f s", before, getattr(version, "name", version),
                        time.perf_counter() - start)
            if self.index_dir is not None:  # the new snapshot no longer names the images of deleted items
                # under the write lock: no write can be between storing its image and logging its item
                pruned = prune_uploads(self.index_dir, self.catalogue.metadata_values(IMAGE_KEY),
                                       self.upload_grace_s)
                if pruned:
                    logger.info("deleted %d uploaded images no item names any more", pruned)
        if self.metrics is not None:
            self.metrics.compactions.labels("ok").inc()
            self.metrics.log_bytes.set(self.catalogue.log_size)
        return True

    async def run(self) -> None:
        """Forever: compact when asked or when the interval has passed; failures are logged and
        retried (with growing pauses) while writes keep going to the log."""
        while True:
            pause = self.interval_s if self.failures == 0 else min(self.interval_s, 5.0 * 2 ** self.failures)
            with anyio.move_on_after(pause):
                await self.wanted.wait()
            self.wanted = anyio.Event()
            try:
                await anyio.to_thread.run_sync(self.compact_now)
                self.failures = 0
            except Exception as exc:  # noqa: BLE001 - keep serving; the log still holds every write
                self.failures += 1
                logger.error("compaction failed (%s); the write-ahead log keeps every write, retrying", exc)

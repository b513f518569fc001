"""Durable writes in the service: each `POST /items` / `DELETE /items/{id}` is appended to the
index's write-ahead log and fsynced before it is applied and acknowledged (`index/wal.py`); a
background task compacts the log into a new snapshot when it grows past `compact_log_bytes`, at
least every `compact_interval_s`, and once more at clean shutdown; after each compaction, uploaded
images that no item names any more (deleted or replaced items) are deleted.

An engine that logs writes itself (Milvus) has no log of ours to compact: there the same tick
(every `compact_interval_s`, and at shutdown) only prunes the uploads, inside
`Catalogue.exclusive()` (the writer lease of every replica sharing the collection and the images
folder), so no replica's write lands between reading the references and deleting.

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
from asen_search.service.api.prometheus import Metrics
from asen_search.service.jobs.item_images import IMAGE_KEY, prune_uploads
from asen_search.service.operations.errors import ServiceError

UPLOAD_GRACE_S = 3600.0  # an unreferenced upload younger than this may belong to a write in flight
# Reading the references of a shared catalogue (Milvus) longer than this inside `exclusive()` skips the
# deletions: the Milvus writer lease that `exclusive()` holds lasts 30 s and is not renewed
# (index/milvus/lease.py), so past it another replica could be writing.
PRUNE_READ_BUDGET_S = 20.0

logger = logging.getLogger("asen.service")


def storage_error(exc: BaseException, what: str) -> ServiceError:
    """The API error for a write that storage refused (`what`: "the write", "the image", ...)."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return ServiceError(
            "insufficient_storage",
            f"{what} was not saved: no space left for the index "
            f"({exc.strerror or exc}); nothing was changed and searches keep working",
        )
    if isinstance(exc, LogUnavailable):
        return ServiceError("storage_unavailable", f"{what} was not saved: {exc}")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ServiceError(
        "storage_unavailable",
        f"{what} was not saved: the index directory cannot be written "
        f"({reason}); nothing was changed and searches keep working",
    )


def has_write_ahead_log(catalogue: Catalogue) -> bool:
    """Whether the catalogue's writes go to this project's write-ahead log (the FAISS directory),
    which the compactor folds into snapshots. An engine that logs writes itself (Milvus) keeps the
    interface's no-op `open_log` (index/interface.py), its `log_size` stays 0 and it is never
    compacted here. A capability of the interface rather than an engine class, so wrappers of a
    catalogue and other engines are told apart the same way."""
    open_log = getattr(getattr(catalogue, "open_log", None), "__func__", None)
    return open_log is not None and open_log is not Catalogue.open_log


class Compactor:
    """Folds the write-ahead log into a snapshot, off the event loop, holding the service's write
    lock (searches continue; writes wait for it). On an engine that logs writes itself (Milvus) it
    prunes the shared images folder on the same schedule instead (`prune_shared`)."""

    def __init__(
        self,
        catalogue: Catalogue,
        write_lock: object,
        max_bytes: int,
        interval_s: float,
        metrics: Metrics | None = None,
        index_dir: Path | None = None,
        upload_grace_s: float = UPLOAD_GRACE_S,
    ) -> None:
        self.catalogue, self.write_lock, self.metrics = catalogue, write_lock, metrics
        self.index_dir, self.upload_grace_s = index_dir, upload_grace_s
        self.max_bytes, self.interval_s = max_bytes, interval_s
        self.wanted = anyio.Event()
        self.failures = 0
        self.own_log = has_write_ahead_log(catalogue)

    def note_write(self) -> None:
        """After each write: ask for a compaction once the log is over its size."""
        if self.metrics is not None:
            self.metrics.log_bytes.set(self.catalogue.log_size)
        if self.catalogue.log_size > self.max_bytes:
            self.wanted.set()

    def compact_now(self) -> bool:
        """Compact if the log holds anything (or writes are refused for want of a log); blocking.
        On an engine that logs writes itself: prune the shared images folder (`prune_shared`), and
        False (nothing was compacted)."""
        if not self.own_log:
            self.prune_shared()
            return False
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
            logger.info(
                "compacted %d log bytes into %s in %.2f s",
                before,
                getattr(version, "name", version),
                time.perf_counter() - start,
            )
            if self.index_dir is not None:  # the new snapshot no longer names the images of deleted items
                # under the write lock: no write can be between storing its image and logging its item
                pruned = prune_uploads(
                    self.index_dir, self.catalogue.metadata_values(IMAGE_KEY), self.upload_grace_s
                )
                if pruned:
                    logger.info("deleted %d uploaded images no item names any more", pruned)
        if self.metrics is not None:
            self.metrics.compactions.labels("ok").inc()
            self.metrics.log_bytes.set(self.catalogue.log_size)
        return True

    def prune_shared(self) -> int:
        """Delete the uploads no item names any more, and older than the grace period, from the images
        root of a catalogue whose engine logs writes itself (Milvus: replicas share the folder);
        returns how many. Everything happens inside `catalogue.exclusive()` (this replica's write lock
        too): the writer lease of every replica is held from before the references are read until the
        last deletion, so no write of any replica lands in between. Best effort: a failure (another
        writer held the lease too long, Milvus unreachable) is logged and the next tick tries again."""
        if self.index_dir is None:  # uploads are not kept (Milvus without ASEN_IMAGES_DIR)
            return 0
        try:
            with self.write_lock, self.catalogue.exclusive():  # type: ignore[attr-defined]
                start = time.monotonic()
                referenced = self.catalogue.metadata_values(IMAGE_KEY)
                took = time.monotonic() - start
                if took > PRUNE_READ_BUDGET_S:
                    logger.warning(
                        "uploaded images not pruned: reading the references took %.1f s, longer than "
                        "the writer lease safely allows (%.0f s)",
                        took,
                        PRUNE_READ_BUDGET_S,
                    )
                    return 0
                pruned = prune_uploads(self.index_dir, referenced, self.upload_grace_s)
        except Exception as exc:  # noqa: BLE001 - best effort; an unpruned file only takes space
            logger.warning(
                "uploaded images not pruned this time (%s); trying again in %g s", exc, self.interval_s
            )
            return 0
        if pruned:
            logger.info("deleted %d uploaded images no item names any more", pruned)
        return pruned

    async def run(self) -> None:
        """Forever: compact when asked or when the interval has passed; failures are logged and
        retried (with growing pauses) while writes keep going to the log."""
        while True:
            pause = self.interval_s if self.failures == 0 else min(self.interval_s, 5.0 * 2**self.failures)
            with anyio.move_on_after(pause):
                await self.wanted.wait()
            self.wanted = anyio.Event()
            try:
                await anyio.to_thread.run_sync(self.compact_now)
                self.failures = 0
            except Exception as exc:  # noqa: BLE001 - keep serving; the log still holds every write
                self.failures += 1
                logger.error("compaction failed (%s); the write-ahead log keeps every write, retrying", exc)

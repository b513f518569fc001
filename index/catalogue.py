"""The public face of the index package: a catalogue of items searchable per attribute.

Each item has a string id, metadata (a JSON object) and one L2-normalised vector per attribute;
each attribute has its own FAISS index, all sharing the item's int64 key.

Concurrency: searches run in parallel (shared lock). Writes (add, upsert, remove), saves and
compactions are serialised by a writer mutex; a write appends and fsyncs its log record holding only
that mutex, so searches go on during the fsync, and takes the exclusive lock only to apply it.

Durability: ``load`` replays the save's write-ahead log (``index/wal.py``); after ``open_log``
every write is appended to that log and fsynced before it is applied, and ``checkpoint`` folds
the log into a new snapshot. One writer per directory (``index/dirlock.py``): ``load(...,
writer=True)`` takes the directory's lock before reading anything and holds it until ``close``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .attribute_index import AttributeIndex, SearchKnobs
from .composed import COMPOSED_CANDIDATES, Part, candidate_keys, check_parts, check_per_part, weighted_scores
from .dirlock import DirectoryLock
from .errors import CatalogueError, ReadOnlyCatalogue
from .ids import IdMap, check_id_batch, validate_id
from .metadata import FilterValue, MetadataStore, check_metadata
from .results import Item, RemoveResult, SearchResult
from .rwlock import RWLock
from .store import Snapshot, current_version, load_snapshot, save_snapshot, tidy_after_load
from .threshold import check_threshold
from .validation import check_filters_exclude, check_item_vectors, check_k, check_queries
from .wal import (
    LogRecord,
    LogUnavailable,
    WriteAheadLog,
    log_path,
    read_log,
    remove_stale_logs,
    split_write,
)


class StaleCatalogue(CatalogueError, RuntimeError):
    """The directory changed after this catalogue was loaded (another writer committed or logged
    writes since): opening its log would write over them. Load it again."""


class CatalogueIndex:
    """Per-attribute vector indexes + ids + metadata; see ``create`` and ``load``."""

    def __init__(self, snapshot: Snapshot, read_only: bool = False) -> None:
        """Use ``create`` or ``load``."""
        self._info = {k: v for k, v in snapshot.info.items() if k != "search_params"}
        self._attributes: list[str] = list(self._info["attributes"])
        self._ids = snapshot.ids
        self._metadata = snapshot.metadata
        self._indexes = snapshot.indexes
        self._read_only = read_only
        self._lock = RWLock()
        self._write_mutex = threading.Lock()  # one write, save or compaction at a time
        self._source: tuple[Path, str] | None = None  # (save root, version) this was loaded from
        self._loaded_log_end = 0  # bytes of the log replayed by load
        self._dir_lock: DirectoryLock | None = None  # held from load(writer=True) or open_log until close
        self._durable = False  # open_log was called: every write goes through the log
        self._log: WriteAheadLog | None = None
        self._log_error = ""
        exact_filter_max = snapshot.info.get("search_params", {}).get("exact_filter_max")
        for index in self._indexes:  # efSearch / nprobe travel inside the FAISS files
            if exact_filter_max is not None:
                index.exact_filter_max = int(exact_filter_max)

    @classmethod
    def create(cls, attributes: Sequence[str], dim: int, fingerprint: str, factory: str = "Flat") -> CatalogueIndex:
        """An empty catalogue of ``dim``-d vectors for ``attributes``, built by the model
        identified by ``fingerprint``; ``factory`` is a FAISS factory string (default exact)."""
        attributes = list(attributes)
        if not attributes or any(not isinstance(a, str) or not a for a in attributes):
            raise ValueError(f"attributes must be a non-empty list of non-empty names, got {attributes!r}")
        if len(set(attributes)) != len(attributes):
            raise ValueError(f"attribute names must be unique, got {attributes!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError("fingerprint must be a non-empty string identifying the model")
        indexes = [AttributeIndex.create(dim, factory) for _ in attributes]
        now = datetime.now(UTC).isoformat(timespec="seconds")
        info = {"fingerprint": fingerprint, "dim": dim, "attributes": attributes, "factory": factory, "created_at": now}
        return cls(Snapshot(info, IdMap(), MetadataStore(), indexes))

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        expected_fingerprint: str | None = None,
        mmap: bool = False,
        writer: bool = False,
    ) -> CatalogueIndex:
        """Load the last committed save and replay its write-ahead log. FingerprintMismatch if it
        was built by another model; ``mmap=True`` maps vectors from disk and makes the catalogue
        read-only (refused while the log holds writes not yet compacted into the snapshot).

        ``writer=True`` first takes the directory's writer lock (DirectoryLocked, naming the
        holder, when another writer has it; DirectoryUnwritable on a read-only location) and
        holds it until ``close``, so nothing can change the directory between the load and the
        writes. LogCorrupt (nothing changed) when the log is damaged before valid records."""
        root = Path(directory)
        if writer and mmap:
            raise ValueError("a memory-mapped catalogue is read-only: it cannot be loaded as the writer")
        lock = DirectoryLock.acquire(root, "writing the catalogue") if writer else None
        try:
            catalogue = cls._load(root, expected_fingerprint, mmap)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if lock is not None:
            catalogue._dir_lock = lock
            assert catalogue._source is not None
            tidy_after_load(root, catalogue._source[1])
        return catalogue

    @classmethod
    def _load(cls, root: Path, expected_fingerprint: str | None, mmap: bool) -> CatalogueIndex:
        snapshot, manifest = load_snapshot(root, expected_fingerprint, mmap)
        catalogue = cls(snapshot, read_only=mmap)
        catalogue._source = (root, manifest["version"])
        records, end, _ = read_log(log_path(root, manifest["version"]))
        catalogue._loaded_log_end = end
        if records and mmap:
            raise ReadOnlyCatalogue(
                f"{root} has {len(records)} logged writes not yet in its snapshot, and a memory-mapped catalogue "
                "cannot apply them: compact it first (`asen index compact --index DIR`, or load it without mmap, "
                "open_log() and checkpoint())"
            )
        for record in records:
            catalogue._replay(record)
        return catalogue

    # -- facts ---------------------------------------------------------------------------
    @property
    def attributes(self) -> list[str]:
        return list(self._attributes)

    @property
    def dim(self) -> int:
        return int(self._info["dim"])

    @property
    def fingerprint(self) -> str:
        return str(self._info["fingerprint"])

    @property
    def factory(self) -> str:
        return str(self._info["factory"])

    @property
    def read_only(self) -> bool:
        return self._read_only

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._ids

    def __repr__(self) -> str:
        return (
            f"CatalogueIndex({len(self)} items, attributes={self.attributes}, dim={self.dim}, factory={self.factory!r})"
        )

    def ids(self) -> list[str]:
        """All item ids, in the order they were last added or upserted."""
        with self._lock.read():
            return list(self._ids)

    def get(self, item_id: str) -> Item:
        with self._lock.read():
            return Item(item_id, dict(self._metadata.get(self._ids.key(item_id))))

    def metadata_values(self, field: str) -> set[Any]:
        """Every distinct value of metadata ``field`` over the catalogue (hashable values only)."""
        with self._lock.read():
            return {meta[field] for _, meta in self._metadata.items() if isinstance(meta.get(field), str | int | float)}

    def vector(self, item_id: str, attribute: str) -> np.ndarray:
        """The stored vector ``[dim]`` of one item for one attribute."""
        index = self._index(attribute)
        with self._lock.read():
            vectors = index.reconstruct(np.array([self._ids.key(item_id)]))
        return vectors[0]

    def iter_items(self, batch_size: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
        """Every item, `batch_size` at a time: (ids, vectors `[n, n_attributes, dim]`, metadata); for
        copying a catalogue to another backend."""
        ids = self.ids()
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            with self._lock.read():
                keys = np.array([self._ids.key(i) for i in chunk], dtype=np.int64)
                vectors = np.stack([index.reconstruct(keys) for index in self._indexes], axis=1)
                metas = [dict(self._metadata.get(int(k))) for k in keys]
            yield chunk, vectors, metas

    def _index(self, attribute: str) -> AttributeIndex:
        try:
            return self._indexes[self._attributes.index(attribute)]
        except ValueError:
            raise KeyError(f"unknown attribute {attribute!r}; known attributes: {self.attributes}") from None

    # -- writes --------------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add new items: vectors ``[n, n_attributes, dim]``; ValueError if an id is present."""
        self._write_items(ids, vectors, metadata, replace=False)

    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> None:
        """Add or replace items (vectors ``[n, n_attributes, dim]``). With ``metadata=None``
        replaced items keep their metadata and new ones get ``{}``."""
        self._write_items(ids, vectors, metadata, replace=True)

    def _write_items(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None, replace: bool
    ) -> None:
        checked_ids = check_id_batch(ids)
        batch = check_item_vectors(vectors, len(checked_ids), len(self._indexes), self.dim)
        metas = None if metadata is None else [check_metadata(m) for m in metadata]
        if metas is not None and len(metas) != len(checked_ids):
            raise ValueError(f"got {len(metas)} metadata entries for {len(checked_ids)} ids")
        with self._write_mutex:  # only writers change the catalogue: reads below need no lock
            self._check_writable()
            present = [i for i in checked_ids if i in self._ids]
            if present and not replace:
                raise ValueError(f"{len(present)} ids already in the catalogue (use upsert to replace): {present[:5]}")
            if not checked_ids:
                return
            if metas is None:
                old = {i: self._metadata.get(self._ids.key(i)) for i in present}
                metas = [old.get(i, {}) for i in checked_ids]
            self._append(lambda: split_write("upsert", checked_ids, batch, metas))  # searches go on meanwhile
            with self._lock.write():
                self._apply_upsert(checked_ids, batch, metas, present)

    def _apply_upsert(self, ids: list[str], batch: np.ndarray, metas: list[dict[str, Any]], present: list[str]) -> None:
        """Caller holds the write lock; ``present`` are the ids of ``ids`` already stored."""
        for a, index in enumerate(self._indexes):
            if not index.is_trained:
                index.train(np.ascontiguousarray(batch[:, a]))
        self._remove_present(present)
        keys = np.array([self._ids.assign(i) for i in ids], dtype=np.int64)
        for a, index in enumerate(self._indexes):
            index.add(keys, np.ascontiguousarray(batch[:, a]))
        for key, meta in zip(keys.tolist(), metas, strict=True):
            self._metadata.put(key, meta)

    def remove(self, ids: Sequence[str]) -> RemoveResult:
        """Remove items without a rebuild; ids not in the catalogue are reported as unknown."""
        requested = list(dict.fromkeys(validate_id(i) for i in ([ids] if isinstance(ids, str) else ids)))
        with self._write_mutex:
            self._check_writable()
            present = [i for i in requested if i in self._ids]
            if present:
                self._append(lambda: split_write("remove", present))
            with self._lock.write():
                self._remove_present(present)
        return RemoveResult(present, [i for i in requested if i not in set(present)])

    def _remove_present(self, item_ids: list[str]) -> None:
        """Caller holds the write lock; every id is present. Their keys are retired."""
        if not item_ids:
            return
        keys = np.array([self._ids.release(i) for i in item_ids], dtype=np.int64)
        for index in self._indexes:
            index.remove(keys)
        for key in keys.tolist():
            self._metadata.drop(key)

    def _replay(self, record: LogRecord) -> None:
        """Apply one logged write (loading: nobody else holds the catalogue yet)."""
        present = [i for i in record.ids if i in self._ids]
        if record.op == "remove":
            self._remove_present(present)
        else:
            assert record.vectors is not None
            batch = check_item_vectors(record.vectors, len(record.ids), len(self._indexes), self.dim)
            self._apply_upsert(list(record.ids), batch, [check_metadata(m) for m in record.metadata], present)

    def _append(self, records: Callable[[], list[LogRecord]]) -> None:
        """Log a write before it is applied (caller holds the writer mutex); no-op without a log."""
        if not self._durable:
            return
        if self._log is None:
            raise LogUnavailable(self._log_error)
        self._log.append(records())

    def compact(self) -> int:
        """Rebuild indexes that keep removed vectors as tombstones (HNSW); returns how many
        removed vectors were purged per attribute."""
        with self._write_mutex, self._lock.write():
            self._check_writable()
            return max((index.compact() for index in self._indexes), default=0)

    def _check_writable(self) -> None:
        if self._read_only:
            raise ReadOnlyCatalogue(
                "this catalogue was loaded with mmap=True and is read-only; load it without mmap to modify it"
            )

    # -- search --------------------------------------------------------------------------
    def set_search_params(
        self, *, efSearch: int | None = None, nprobe: int | None = None, exact_filter_max: int | None = None
    ) -> None:
        """Set HNSW ``efSearch`` / IVF ``nprobe`` (ValueError where they do not apply), and
        ``exact_filter_max``: approximate indexes answer filtered searches whose filter
        matches at most this many items exactly, over just those items (default 20000)."""
        knobs = SearchKnobs(efSearch=efSearch, nprobe=nprobe)
        if exact_filter_max is not None and (
            isinstance(exact_filter_max, bool) or not isinstance(exact_filter_max, int) or exact_filter_max < 0
        ):
            raise ValueError(f"exact_filter_max must be a non-negative integer, got {exact_filter_max!r}")
        with self._lock.write():
            for index in self._indexes:
                index.set_knobs(knobs)
                if exact_filter_max is not None:
                    index.exact_filter_max = exact_filter_max

    def search_params(self) -> dict[str, int]:
        """Current knobs, e.g. ``{"efSearch": 64, "exact_filter_max": 20000}``."""
        knobs = {k: v for k, v in asdict(self._indexes[0].knobs()).items() if v is not None}
        return {**knobs, "exact_filter_max": self._indexes[0].exact_filter_max}

    def search(
        self,
        query: np.ndarray,
        attribute: str,
        k: int,
        filters: Mapping[str, FilterValue] | None = None,
        exclude: Sequence[str] = (),
    ) -> list[SearchResult] | list[list[SearchResult]]:
        """Top ``k`` items by inner product with ``query`` ``[dim]`` (a list of results) or
        ``[n, dim]`` (a list of n lists), best first.

        ``filters`` ``{field: value | [values]}`` restricts candidates to items whose metadata
        matches every field (inside the FAISS scan); ``exclude`` ids are never returned.
        """
        batch, single = check_queries(query, self.dim)
        k = check_k(k)
        index = self._index(attribute)
        exclude = check_filters_exclude(filters, exclude)
        with self._lock.read():
            allowed = self._metadata.match(filters) if filters else None
            top = min(k, len(self._ids) if allowed is None else len(allowed))
            if top == 0:
                results: list[list[SearchResult]] = [[] for _ in range(len(batch))]
            else:
                scores, keys = index.search(batch, top, allowed, self._ids.keys_of(exclude))
                results = [self._results(s, ks) for s, ks in zip(scores, keys, strict=True)]
        return results[0] if single else results

    def _results(self, scores: np.ndarray, keys: np.ndarray) -> list[SearchResult]:
        return [SearchResult(self._ids.id_of(key), float(score), dict(self._metadata.get(key)))
                for score, key in zip(scores.tolist(), keys.tolist(), strict=True) if key >= 0]

    def search_range(self, query: np.ndarray, attribute: str, min_score: float, max_results: int,
                     filters: Mapping[str, FilterValue] | None = None,
                     exclude: Sequence[str] = ()) -> tuple[list[SearchResult], bool]:
        """Every item scoring at least ``min_score`` with ``query`` ``[dim]`` under ``attribute``, best first,
        at most ``max_results``, and whether that cap cut the list (how: AttributeIndex.search_range)."""
        batch, single = check_queries(query, self.dim)
        if not single:
            raise ValueError(f"search_range takes one query of shape [{self.dim}]")
        check_threshold(min_score, max_results)
        index = self._index(attribute)
        exclude = check_filters_exclude(filters, exclude)
        with self._lock.read():
            allowed = self._metadata.match(filters) if filters else None
            if not len(self._ids) or (allowed is not None and not len(allowed)):
                return [], False
            universe = None if index.exact else self._ids.all_keys()
            scores, keys, truncated = index.search_range(batch[0], float(min_score), max_results, allowed,
                                                         self._ids.keys_of(exclude), universe)
            return self._results(scores, keys), truncated

    def search_composed(self, parts: Sequence[Part], k: int, filters: Mapping[str, FilterValue] | None = None,
                        exclude: Sequence[str] = (), per_part: int | None = None) -> list[SearchResult]:
        """Top ``k`` by the weighted sum of per-attribute inner products, best first (index/composed.py):
        exact when every weighted part's index is Flat or no part is positive, else each part's top
        ``per_part`` (default COMPOSED_CANDIDATES) rescored exactly (also on Flat when it is given)."""
        k = check_k(k)
        parts = check_parts(parts, self._attributes, self.dim)
        per_part = check_per_part(per_part)
        exclude = check_filters_exclude(filters, exclude)
        active = [p for p in parts if p.weight]
        indexes = [self._index(p.attribute) for p in active]
        by_candidates = any(p.weight > 0 for p in active) and (per_part or not all(i.exact for i in indexes))
        with self._lock.read():
            allowed = self._metadata.match(filters) if filters else None
            blocked = self._ids.keys_of(exclude)
            if by_candidates:   # each part's candidates (index/composed.py), then the exact sum over them
                allowed = candidate_keys(active, indexes, max(per_part or COMPOSED_CANDIDATES, k), allowed, blocked)
            keys, total = weighted_scores(active, indexes, self._ids.all_keys, allowed)
            if len(blocked):
                total[np.isin(keys, blocked)] = -np.inf
            top = min(k, int(np.isfinite(total).sum()))
            if top == 0:
                return []
            best = np.argpartition(-total, top - 1)[:top] if top < len(total) else np.arange(len(total))
            best = best[np.lexsort((keys[best], -total[best]))]   # best first; ties by key (insertion order)
            return self._results(total[best], keys[best])

    def score_ids(self, query: np.ndarray, attribute: str, ids: Sequence[str]) -> dict[str, float]:
        """Exact inner products of ``query`` ``[dim]`` with the stored vectors of ``ids`` (for
        re-ranking a short list); KeyError if an id is not in the catalogue."""
        batch, single = check_queries(query, self.dim)
        if not single:
            raise ValueError(f"score_ids takes one query of shape [{self.dim}]")
        index = self._index(attribute)
        wanted = list(dict.fromkeys(ids))
        with self._lock.read():
            unknown = [i for i in wanted if i not in self._ids]
            if unknown:
                raise KeyError(f"unknown item ids: {unknown[:5]}")
            vectors = index.reconstruct(np.array([self._ids.key(i) for i in wanted], dtype=np.int64))
        return dict(zip(wanted, (vectors @ batch[0]).tolist(), strict=True))

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str], lock: DirectoryLock | None = None) -> Path:
        """Commit the catalogue atomically under ``directory``; returns the version written.
        Searches continue during a save; writes wait for it. Saving into the directory whose log
        is open is a ``checkpoint``. The save holds the directory's writer lock: ``lock`` when the
        caller holds it already, else it is taken for the save (DirectoryLocked when another
        writer, such as a server, has the directory)."""
        if self._durable and self._source is not None and Path(directory).resolve() == self._source[0].resolve():
            return self.checkpoint()
        with self._write_mutex, self._lock.read():
            return self._save_snapshot(Path(directory), lock)

    def _save_snapshot(self, directory: Path, lock: DirectoryLock | None = None) -> Path:
        """Caller holds the writer mutex."""
        info = {**self._info, "search_params": self.search_params()}
        if lock is None and self._dir_lock is not None and self._dir_lock.covers(directory):
            lock = self._dir_lock
        return save_snapshot(directory, Snapshot(info, self._ids, self._metadata, self._indexes), lock)

    def open_log(self) -> None:
        """From now on log every write to the write-ahead log of the save this catalogue was
        loaded from, fsynced before the write is applied. Takes the directory's writer lock if
        ``load(writer=True)`` did not: DirectoryLocked when another writer has it, StaleCatalogue
        when the directory changed since the load; OSError if the directory is not writable."""
        if self._source is None:
            raise ValueError("open_log needs a catalogue loaded from a directory (CatalogueIndex.load)")
        self._check_writable()
        root, version = self._source
        with self._write_mutex:
            acquired = None
            if self._dir_lock is None:
                acquired = DirectoryLock.acquire(root, "writing the catalogue")
            try:
                if acquired is not None:
                    self._check_unchanged(root, version)
                log = WriteAheadLog(root, version)
            except BaseException:
                if acquired is not None:
                    acquired.release()
                raise
            if acquired is not None:
                self._dir_lock = acquired
            with self._lock.write():
                self._log = log
                self._durable = True
        remove_stale_logs(root, version)

    def _check_unchanged(self, root: Path, version: str) -> None:
        """StaleCatalogue when the directory moved on after this catalogue was loaded without its
        lock (a compaction committed a new version, or writes were logged)."""
        now = current_version(root)
        if now != version:
            raise StaleCatalogue(f"{root} moved from {version} to {now} after this catalogue was loaded: load it "
                                 "again (with writer=True, which locks the directory before reading)")
        _, end, _ = read_log(log_path(root, version))
        if end != self._loaded_log_end:
            raise StaleCatalogue(f"{root}'s write-ahead log holds {end} bytes of writes, {self._loaded_log_end} "
                                 "when this catalogue was loaded: load it again (with writer=True)")

    def refuse_writes(self, reason: str) -> None:
        """Refuse every write from now on (LogUnavailable with ``reason``): for a catalogue whose
        log could not be opened, so that no write goes unlogged."""
        with self._lock.write():
            self._durable, self._log, self._log_error = True, None, reason

    @property
    def log_size(self) -> int:
        """Bytes in the open write-ahead log (0 without one): what a checkpoint would fold in."""
        log = self._log
        return log.size if log is not None else 0

    @property
    def log_error(self) -> str | None:
        """Why writes are refused (the log could not be opened or restored), else None."""
        if not self._durable:
            return None
        if self._log is None:
            return self._log_error
        return self._log.broken

    def checkpoint(self) -> Path:
        """Commit the catalogue as a new snapshot of its save directory and start an empty log;
        returns the new version. A crash at any point leaves a loadable, complete state (the old
        snapshot with its full log, or the new snapshot). Searches continue; writes wait."""
        if self._source is None or not self._durable:
            raise ValueError("checkpoint needs a catalogue with an open log (load, then open_log)")
        root = self._source[0]
        with self._write_mutex, self._lock.read():
            path = self._save_snapshot(root)
            old = self._log
            self._source = (root, path.name)
            try:
                new = WriteAheadLog(root, path.name)
            except OSError as exc:
                self._log = None
                self._log_error = (f"the snapshot {path.name} was committed but its write-ahead log could not be "
                                   f"started ({exc}); writes are refused until a checkpoint succeeds")
                raise
            finally:
                if old is not None:
                    old.close()
            self._log = new  # swapped in one step: a write never sees the catalogue without a log
            remove_stale_logs(root, path.name)
            return path

    def close(self) -> None:
        """Close the write-ahead log (without compacting it: see ``checkpoint``) and release the
        directory's writer lock."""
        with self._write_mutex, self._lock.write():
            if self._log is not None:
                self._log.close()
                self._log = None
                self._log_error = "the catalogue was closed"
            if self._dir_lock is not None:
                self._dir_lock.release()
                self._dir_lock = None

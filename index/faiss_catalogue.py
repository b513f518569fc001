"""The FAISS directory engine: the searchable catalogue in memory, persisted by its store
(index/directory.py). Each item has a string id, metadata (a JSON object) and one L2-normalised
vector per attribute; each attribute has its own FAISS index, all sharing the item's int64 key.

Concurrency: searches run in parallel (shared lock). Writes (add, upsert, remove), saves and
compactions are serialised by a writer mutex; a write appends and fsyncs its log record holding only
that mutex, so searches go on during the fsync, and takes the exclusive lock only to apply it.

Durability: ``load`` replays the save's write-ahead log (``index/wal.py``); after ``open_log``
every write is appended to that log and fsynced before it is applied, and ``checkpoint`` folds
the log into a new snapshot. One writer per directory (``index/dirlock.py``); a catalogue never
commits over writes it has not seen (the store's staleness rule).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .attribute_index import AttributeIndex, SearchKnobs
from .composed import COMPOSED_CANDIDATES, candidate_keys, weighted_scores
from .composed_parts import Part
from .directory import DirectoryStore, StaleCatalogue
from .dirlock import DirectoryLock
from .errors import InvalidInput, ItemExists, ReadOnlyCatalogue, UnknownItem
from .filters import Filter
from .ids import IdMap
from .interface import Batch, Catalogue, merged
from .metadata import MetadataStore
from .results import Item, RemoveResult, SearchResult
from .rwlock import RWLock
from .store import Snapshot
from .validation import check_item_vectors, check_metadata
from .wal import LogRecord, split_write

__all__ = ["FaissCatalogue", "StaleCatalogue"]


class FaissCatalogue(Catalogue):
    """Per-attribute vector indexes + ids + metadata; see ``create`` and ``load``."""

    def __init__(
        self, snapshot: Snapshot, read_only: bool = False, store: DirectoryStore | None = None
    ) -> None:
        """Use ``create`` or ``load``."""
        self._info = {k: v for k, v in snapshot.info.items() if k != "search_params"}
        self._attributes: list[str] = list(self._info["attributes"])
        self._idmap = snapshot.ids
        self._metadata = snapshot.metadata
        self._indexes = snapshot.indexes
        self._read_only = read_only
        self._lock = RWLock()
        self._write_mutex = threading.Lock()  # one write, save or compaction at a time
        self._store = store or DirectoryStore()
        exact_filter_max = snapshot.info.get("search_params", {}).get("exact_filter_max")
        for index in self._indexes:  # efSearch / nprobe travel inside the FAISS files
            if exact_filter_max is not None:
                index.exact_filter_max = int(exact_filter_max)

    @classmethod
    def create(
        cls, attributes: list[str] | tuple[str, ...], dim: int, fingerprint: str, factory: str = "Flat"
    ) -> FaissCatalogue:
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
        info = {
            "fingerprint": fingerprint,
            "dim": dim,
            "attributes": attributes,
            "factory": factory,
            "created_at": now,
        }
        return cls(Snapshot(info, IdMap(), MetadataStore(), indexes))

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        expected_fingerprint: str | None = None,
        mmap: bool = False,
        writer: bool = False,
    ) -> FaissCatalogue:
        """Load the last committed save and replay its write-ahead log. FingerprintMismatch if it
        was built by another model; ``mmap=True`` maps vectors from disk and makes the catalogue
        read-only (refused while the log holds writes not yet compacted into the snapshot).

        ``writer=True`` first takes the directory's writer lock (DirectoryLocked, naming the
        holder, when another writer has it; DirectoryUnwritable on a read-only location) and
        holds it until ``close``, so nothing can change the directory between the load and the
        writes. LogCorrupt (nothing changed) when the log is damaged before valid records."""
        store, snapshot, records = DirectoryStore.load(directory, expected_fingerprint, mmap, writer)
        try:
            if records and mmap:
                raise ReadOnlyCatalogue(
                    f"{directory} has {len(records)} logged writes not yet in its snapshot, and a memory-mapped "
                    "catalogue cannot apply them: compact it first (`asen index compact --index DIR`, or load it "
                    "without mmap, open_log() and checkpoint())"
                )
            catalogue = cls(snapshot, read_only=mmap, store=store)
            for record in records:
                catalogue._replay(record)
        except BaseException:
            store.release()
            raise
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

    @property
    def location(self) -> Path | None:
        """The index directory this catalogue was loaded from or saved to (None: in memory only)."""
        return self._store.root

    def __repr__(self) -> str:
        return f"FaissCatalogue({len(self)} items, attributes={self.attributes}, dim={self.dim}, factory={self.factory!r})"

    # -- reads ---------------------------------------------------------------------------
    def _count(self) -> int:
        return len(self._idmap)

    def _has(self, item_id: str) -> bool:
        return item_id in self._idmap

    def _ids(self) -> list[str]:
        with self._lock.read():
            return list(self._idmap)

    def _get(self, item_id: str) -> Item:
        with self._lock.read():
            return Item(item_id, dict(self._metadata.get(self._idmap.key(item_id))))

    def _metadata_values(self, field: str) -> set[Any]:
        with self._lock.read():
            return {
                meta[field]
                for _, meta in self._metadata.items()
                if isinstance(meta.get(field), str | int | float)
            }

    def _vector(self, item_id: str, attribute: int) -> np.ndarray:
        with self._lock.read():
            vectors = self._indexes[attribute].reconstruct(np.array([self._idmap.key(item_id)]))
        return vectors[0]

    def _iter_items(self, batch_size: int) -> Iterator[Batch]:
        ids = self._ids()
        for start in range(0, len(ids), batch_size):
            with self._lock.read():
                chunk = [
                    i for i in ids[start : start + batch_size] if i in self._idmap
                ]  # deleted since: skipped
                keys = np.array([self._idmap.key(i) for i in chunk], dtype=np.int64)
                vectors = np.stack([index.reconstruct(keys) for index in self._indexes], axis=1)
                metas = [dict(self._metadata.get(int(k))) for k in keys]
            yield chunk, vectors, metas

    # -- writes --------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._read_only:
            raise ReadOnlyCatalogue(
                "this catalogue was loaded with mmap=True and is read-only; load it without mmap to modify it"
            )

    def _write(
        self, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]] | None, replace: bool
    ) -> list[str]:
        with self._write_mutex:  # only writers change the catalogue: reads below need no lock
            present = [i for i in ids if i in self._idmap]
            if present and not replace:
                raise ItemExists(present)
            metas = metadata
            if metas is None:
                old = {i: self._metadata.get(self._idmap.key(i)) for i in present}
                metas = [old.get(i, {}) for i in ids]
            self._store.append(lambda: split_write("upsert", ids, vectors, metas))  # searches go on meanwhile
            with self._lock.write():
                self._apply_upsert(ids, vectors, metas, present)
            return present

    def _apply_upsert(
        self, ids: list[str], batch: np.ndarray, metas: list[dict[str, Any]], present: list[str]
    ) -> None:
        """Caller holds the write lock; ``present`` are the ids of ``ids`` already stored."""
        for a, index in enumerate(self._indexes):
            if not index.is_trained:
                index.train(np.ascontiguousarray(batch[:, a]))
        self._remove_present(present)
        keys = np.array([self._idmap.assign(i) for i in ids], dtype=np.int64)
        for a, index in enumerate(self._indexes):
            index.add(keys, np.ascontiguousarray(batch[:, a]))
        for key, meta in zip(keys.tolist(), metas, strict=True):
            self._metadata.put(key, meta)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The writer mutex: one process writes a directory, and in it every write takes this."""
        with self._write_mutex:
            yield

    def _update_metadata(self, item_id: str, changes: dict[str, Any]) -> Item:
        with self._write_mutex:
            key = self._idmap.key(item_id)
            meta = merged(self._metadata.get(key), changes)
            vectors = np.stack([index.reconstruct(np.array([key], np.int64))[0] for index in self._indexes])[
                None
            ]
            self._store.append(lambda: split_write("upsert", [item_id], vectors, [meta]))
            with self._lock.write():
                self._apply_upsert([item_id], vectors, [meta], [item_id])
        return Item(item_id, dict(meta))

    def _list_items(self, filters: Filter, limit: int, after: str | None) -> list[Item]:
        with self._lock.read():
            allowed = self._allowed(filters)
            keep = None if allowed is None else set(allowed.tolist())
            ids = self._idmap.ids_after(after, limit, keep)
            return [Item(i, dict(self._metadata.get(self._idmap.key(i)))) for i in ids]

    def _remove(self, ids: list[str]) -> RemoveResult:
        with self._write_mutex:
            present = [i for i in ids if i in self._idmap]
            if present:
                self._store.append(lambda: split_write("remove", present))
            with self._lock.write():
                self._remove_present(present)
        return RemoveResult(present, [i for i in ids if i not in set(present)])

    def _remove_present(self, item_ids: list[str]) -> None:
        """Caller holds the write lock; every id is present. Their keys are retired."""
        if not item_ids:
            return
        keys = np.array([self._idmap.release(i) for i in item_ids], dtype=np.int64)
        for index in self._indexes:
            index.remove(keys)
        for key in keys.tolist():
            self._metadata.drop(key)

    def _replay(self, record: LogRecord) -> None:
        """Apply one logged write (loading: nobody else holds the catalogue yet)."""
        present = [i for i in record.ids if i in self._idmap]
        if record.op == "remove":
            self._remove_present(present)
        else:
            assert record.vectors is not None
            batch = check_item_vectors(record.vectors, len(record.ids), len(self._indexes), self.dim)
            self._apply_upsert(list(record.ids), batch, [check_metadata(m) for m in record.metadata], present)

    def compact(self) -> int:
        """Rebuild indexes that keep removed vectors as tombstones (HNSW); returns how many
        removed vectors were purged per attribute."""
        with self._write_mutex, self._lock.write():
            self._check_writable()
            return max((index.compact() for index in self._indexes), default=0)

    # -- search --------------------------------------------------------------------------
    def _set_search_params(self, ef_search: int | None, nprobe: int | None) -> None:
        knobs = SearchKnobs(ef_search=ef_search, nprobe=nprobe)
        with self._lock.write():
            for index in self._indexes:
                index.set_knobs(knobs)

    def set_exact_filter_max(self, exact_filter_max: int) -> None:
        """Approximate indexes answer filtered searches whose filter matches at most this many items
        exactly, over just those items (default 20000)."""
        if (
            isinstance(exact_filter_max, bool)
            or not isinstance(exact_filter_max, int)
            or exact_filter_max < 0
        ):
            raise InvalidInput(f"exact_filter_max must be a non-negative integer, got {exact_filter_max!r}")
        with self._lock.write():
            for index in self._indexes:
                index.exact_filter_max = exact_filter_max

    def search_params(self) -> dict[str, int]:
        """Current knobs, e.g. ``{"ef_search": 64, "exact_filter_max": 20000}``."""
        knobs = {k: v for k, v in asdict(self._indexes[0].knobs()).items() if v is not None}
        return {**knobs, "exact_filter_max": self._indexes[0].exact_filter_max}

    def _allowed(self, filters: Filter) -> np.ndarray | None:
        """Keys the filter lets through (None: every item); caller holds the read lock."""
        return self._metadata.match(filters) if filters else None

    def _search(
        self, queries: np.ndarray, attribute: int, k: int, filters: Filter, exclude: list[str]
    ) -> list[list[SearchResult]]:
        index = self._indexes[attribute]
        with self._lock.read():
            allowed = self._allowed(filters)
            top = min(k, len(self._idmap) if allowed is None else len(allowed))
            if top == 0:
                return [[] for _ in range(len(queries))]
            scores, keys = index.search(queries, top, allowed, self._idmap.keys_of(exclude))
            return [self._results(s, ks) for s, ks in zip(scores, keys, strict=True)]

    def _results(self, scores: np.ndarray, keys: np.ndarray) -> list[SearchResult]:
        return [
            SearchResult(self._idmap.id_of(key), float(score), dict(self._metadata.get(key)))
            for score, key in zip(scores.tolist(), keys.tolist(), strict=True)
            if key >= 0
        ]

    def _search_range(
        self,
        query: np.ndarray,
        attribute: int,
        min_score: float,
        max_results: int,
        filters: Filter,
        exclude: list[str],
    ) -> tuple[list[SearchResult], bool, int | None]:
        """How: AttributeIndex.search_range (exact over Flat, an exact scan of approximate kinds)."""
        index = self._indexes[attribute]
        with self._lock.read():
            allowed = self._allowed(filters)
            if not len(self._idmap) or (allowed is not None and not len(allowed)):
                return [], False, 0
            universe = None if index.exact else self._idmap.all_keys()
            scores, keys, total = index.search_range(
                query, min_score, max_results, allowed, self._idmap.keys_of(exclude), universe
            )
            truncated = total is None or total > max_results
            return self._results(scores, keys), truncated, total

    def _search_composed(
        self, parts: list[Part], k: int, filters: Filter, exclude: list[str], per_part: int | None
    ) -> list[SearchResult]:
        """Exact when every weighted part's index is Flat or no part is positive, else each part's top
        ``per_part`` (default COMPOSED_CANDIDATES) rescored exactly (also on Flat when it is given)."""
        active = [p for p in parts if p.weight]
        indexes = [self._indexes[self._attributes.index(p.attribute)] for p in active]
        by_candidates = any(p.weight > 0 for p in active) and (per_part or not all(i.exact for i in indexes))
        with self._lock.read():
            allowed = self._allowed(filters)
            blocked = self._idmap.keys_of(exclude)
            if by_candidates:  # each part's candidates (index/composed.py), then the exact sum over them
                allowed = candidate_keys(
                    active, indexes, max(per_part or COMPOSED_CANDIDATES, k), allowed, blocked
                )
            keys, total = weighted_scores(active, indexes, self._idmap.all_keys, allowed)
            if len(blocked):
                total[np.isin(keys, blocked)] = -np.inf
            top = min(k, int(np.isfinite(total).sum()))
            if top == 0:
                return []
            best = np.argpartition(-total, top - 1)[:top] if top < len(total) else np.arange(len(total))
            best = best[np.lexsort((keys[best], -total[best]))]  # best first; ties by key (insertion order)
            return self._results(total[best], keys[best])

    def _score_ids(self, query: np.ndarray, attribute: int, ids: list[str]) -> dict[str, float]:
        with self._lock.read():
            unknown = [i for i in ids if i not in self._idmap]
            if unknown:
                raise UnknownItem(unknown[0])
            vectors = self._indexes[attribute].reconstruct(
                np.array([self._idmap.key(i) for i in ids], dtype=np.int64)
            )
        return dict(zip(ids, (vectors @ query).tolist(), strict=True))

    # -- persistence ---------------------------------------------------------------------
    def _snapshot(self) -> Snapshot:
        return Snapshot(
            {**self._info, "search_params": self.search_params()}, self._idmap, self._metadata, self._indexes
        )

    def save(
        self, directory: str | os.PathLike[str], lock: DirectoryLock | None = None, replace: bool = False
    ) -> Path:
        """Commit the catalogue atomically under ``directory``; returns the version written.
        Searches continue during a save; writes wait for it. Saving into the directory whose log
        is open is a ``checkpoint``. The save holds the directory's writer lock (``lock`` when the
        caller holds it already, else taken for the save: DirectoryLocked when another writer has
        it). A directory holding a catalogue this one has not fully seen is never written over:
        StaleCatalogue (it changed since this catalogue was loaded from it) or CatalogueExists
        (another catalogue), unless ``replace=True``."""
        if self._store.durable and self._store.is_source(directory):
            return self.checkpoint()
        with self._write_mutex, self._lock.read():
            return self._store.save(directory, self._snapshot(), lock, replace)

    def open_log(self) -> None:
        """From now on log every write to the write-ahead log of the save this catalogue was
        loaded from, fsynced before the write is applied. Takes the directory's writer lock if
        ``load(writer=True)`` did not: DirectoryLocked when another writer has it, StaleCatalogue
        when the directory changed since the load; OSError if the directory is not writable."""
        with self._write_mutex, self._lock.write():
            self._store.open_log(self._check_writable)

    def refuse_writes(self, reason: str) -> None:
        """Refuse every write from now on (LogUnavailable with ``reason``): for a catalogue whose
        log could not be opened, so that no write goes unlogged."""
        with self._lock.write():
            self._store.refuse(reason)

    @property
    def log_size(self) -> int:
        """Bytes in the open write-ahead log (0 without one): what a checkpoint would fold in."""
        return self._store.log_size

    @property
    def log_error(self) -> str | None:
        """Why writes are refused (the log could not be opened or restored), else None."""
        return self._store.log_error

    def checkpoint(self) -> Path:
        """Commit the catalogue as a new snapshot of its save directory and start an empty log;
        returns the new version. A crash at any point leaves a loadable, complete state (the old
        snapshot with its full log, or the new snapshot). Searches continue; writes wait."""
        with self._write_mutex, self._lock.read():
            return self._store.checkpoint(self._snapshot())

    def close(self) -> None:
        """Close the write-ahead log (without compacting it: see ``checkpoint``) and release the
        directory's writer lock."""
        with self._write_mutex, self._lock.write():
            self._store.close()

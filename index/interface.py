"""One catalogue front over two engines, the way qdrant-client keeps one `QdrantBase` over its local
and remote clients: `Catalogue` is the only class the service, the jobs and the tests talk to. Its
public methods check every input once (ids, vectors, metadata, filters, k, thresholds, composed
parts: index/validation.py, index/filters.py) and then call the engine's hooks (the methods whose
names start with `_`), which may assume their inputs are valid:

- `FaissCatalogue` (index/faiss_catalogue.py): the FAISS directory engine, embedded, the default;
- `MilvusCatalogue` (index/milvus/): a Milvus server or a Milvus Lite file.

Every engine refuses the same inputs with the same error (`InvalidInput` and its subclasses, each
with a `code`), and tests/index/test_contract.py runs one suite on every engine. What each engine
promises about writes (durability, add-if-absent, all-or-nothing, several writers) is in
docs/reliability.md, "Write semantics of each engine".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from .composed_parts import Part, check_parts, check_per_part
from .errors import InvalidInput, UnknownAttribute
from .filters import Filter, FilterValue, parse_filters
from .ids import check_id_batch
from .results import Item, ItemPage, RemoveResult, SearchResult
from .threshold import check_threshold
from .validation import (
    check_ids,
    check_item_vectors,
    check_k,
    check_key,
    check_metadata,
    check_queries,
    validate_id,
)

Filters = Mapping[str, FilterValue] | Filter | None


def merged(metadata: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata` with `changes` applied (a key set to None is removed), checked again as a whole."""
    out = {k: v for k, v in metadata.items() if k not in changes}
    out.update({k: v for k, v in changes.items() if v is not None})
    return check_metadata(out)


Batch = tuple[list[str], np.ndarray, list[dict[str, Any]]]  # ids, vectors [n, n_attributes, dim], metadata


class Catalogue(ABC):
    """Items with one vector per attribute and JSON metadata; exact or approximate inner-product
    search per attribute; durable writes (each engine says how)."""

    max_k: int | None = None  # the most results one search may ask for (an engine's limit), None: no limit

    # -- facts ---------------------------------------------------------------------------------
    @property
    @abstractmethod
    def attributes(self) -> list[str]: ...

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """The model that made the vectors (index/errors.py FingerprintMismatch)."""

    @property
    def read_only(self) -> bool:
        return False

    @property
    def log_size(self) -> int:
        """Bytes of writes not yet folded into a snapshot (0 where the engine keeps its own log)."""
        return 0

    @property
    def log_error(self) -> str | None:
        """Why writes are refused, or None."""
        return None

    def attribute_index(self, attribute: str) -> int:
        """The position of `attribute`; UnknownAttribute naming the known ones."""
        try:
            return self.attributes.index(attribute)
        except ValueError:
            raise UnknownAttribute(
                f"unknown attribute {attribute!r}; known attributes: {self.attributes}"
            ) from None

    # -- reads ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count()

    def __contains__(self, item_id: object) -> bool:
        try:
            return self._has(validate_id(item_id))
        except InvalidInput:
            return False

    def ids(self) -> list[str]:
        """Every item id (the FAISS engine: in the order they were last written)."""
        return self._ids()

    def iter_items(self, batch_size: int = 1000) -> Iterator[Batch]:
        """Every item, `batch_size` at a time: (ids, vectors `[n, n_attributes, dim]`, metadata)."""
        return self._iter_items(check_k(batch_size, what="batch_size"))

    def get(self, item_id: str) -> Item:
        """An item's metadata; UnknownItem when there is no such item."""
        return self._get(validate_id(item_id))

    def vector(self, item_id: str, attribute: str) -> np.ndarray:
        """The stored vector `[dim]` of one item for one attribute; UnknownItem when there is none."""
        return self._vector(validate_id(item_id), self.attribute_index(attribute))

    def metadata_values(self, field: str) -> set[Any]:
        """Every distinct scalar value of metadata `field` over the catalogue."""
        return self._metadata_values(check_key(field, "metadata field", InvalidInput))

    def list_items(self, filters: Filters = None, limit: int = 100, after: str | None = None) -> ItemPage:
        """Up to `limit` items the filter lets through, in id order (code points), after id `after`:
        a listing that pages by the last id it saw is stable under concurrent writes (an item that
        exists throughout is returned exactly once)."""
        limit = check_k(limit, what="limit")
        after = None if after is None else validate_id(after)
        items = self._list_items(parse_filters(filters), limit, after)
        return ItemPage(items, items[-1].id if len(items) == limit else None)

    # -- writes --------------------------------------------------------------------------------
    def add(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> None:
        """Add new items: vectors `[n, n_attributes, dim]`, one metadata object each (default {}).
        ItemExists, and nothing written, when an id is present."""
        self._checked_write(ids, vectors, metadata, replace=False)

    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> list[str]:
        """Add or replace items; with `metadata=None` replaced items keep their metadata and new ones
        get {}. Returns the ids that replaced an item."""
        return self._checked_write(ids, vectors, metadata, replace=True)

    def _checked_write(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None,
        replace: bool,
    ) -> list[str]:
        checked = check_id_batch(ids)
        batch = check_item_vectors(vectors, len(checked), len(self.attributes), self.dim)
        metas = None if metadata is None else [check_metadata(m) for m in metadata]
        if metas is not None and len(metas) != len(checked):
            raise InvalidInput(f"got {len(metas)} metadata entries for {len(checked)} ids")
        self._check_writable()
        return self._write(checked, batch, metas, replace) if checked else []

    @abstractmethod
    def exclusive(self) -> AbstractContextManager[None]:
        """Hold off every writer of this catalogue (every process, where the engine is shared) for work
        that must not interleave with writes, such as pruning files the items name."""

    def update_metadata(self, item_id: str, changes: Mapping[str, Any]) -> Item:
        """Change one item's metadata, not its vectors: each key of `changes` is set, a key set to None
        removed (a JSON merge patch of the top level). UnknownItem when there is no such item."""
        item_id = validate_id(item_id)
        checked = check_metadata(changes)
        self._check_writable()
        return self._update_metadata(item_id, checked)

    def remove(self, ids: Sequence[str] | str) -> RemoveResult:
        """Remove items; ids not in the catalogue are reported as unknown."""
        requested = check_ids(ids)
        self._check_writable()
        return self._remove(requested)

    # -- search --------------------------------------------------------------------------------
    def search(
        self, query: np.ndarray, attribute: str, k: int, filters: Filters = None, exclude: Sequence[str] = ()
    ) -> list[SearchResult] | list[list[SearchResult]]:
        """Top `k` items by inner product with `query` `[dim]` (a list of results) or `[n, dim]` (a
        list of n lists), best first, among the items `filters` lets through (index/filters.py),
        never one of `exclude`."""
        batch, single = check_queries(query, self.dim)
        k = check_k(k, self.max_k)
        a = self.attribute_index(attribute)
        results = self._search(batch, a, k, parse_filters(filters), check_ids(exclude, "exclude"))
        return results[0] if single else results

    def search_range(
        self,
        query: np.ndarray,
        attribute: str,
        min_score: float,
        max_results: int,
        filters: Filters = None,
        exclude: Sequence[str] = (),
    ) -> tuple[list[SearchResult], bool]:
        """Every item scoring at least `min_score` with `query` `[dim]`, best first, at most
        `max_results`, and whether that cap cut the list."""
        hits, truncated, _ = self.search_range_counted(
            query, attribute, min_score, max_results, filters, exclude
        )
        return hits, truncated

    def search_range_counted(
        self,
        query: np.ndarray,
        attribute: str,
        min_score: float,
        max_results: int,
        filters: Filters = None,
        exclude: Sequence[str] = (),
    ) -> tuple[list[SearchResult], bool, int | None]:
        """`search_range`, and how many items pass in all (None where the engine cannot tell without
        reading every one: an approximate index past its exact-scan size, Milvus when cut)."""
        vector = self._one_query(query, "search_range")
        check_threshold(min_score, max_results)
        return self._search_range(
            vector,
            self.attribute_index(attribute),
            float(min_score),
            max_results,
            parse_filters(filters),
            check_ids(exclude, "exclude"),
        )

    def search_composed(
        self,
        parts: Sequence[Part],
        k: int,
        filters: Filters = None,
        exclude: Sequence[str] = (),
        per_part: int | None = None,
    ) -> list[SearchResult]:
        """Top `k` by the weighted sum of per-attribute inner products (index/composed.py)."""
        k = check_k(k, self.max_k)
        checked = check_parts(parts, self.attributes, self.dim)
        return self._search_composed(
            checked, k, parse_filters(filters), check_ids(exclude, "exclude"), check_per_part(per_part)
        )

    def score_ids(self, query: np.ndarray, attribute: str, ids: Sequence[str]) -> dict[str, float]:
        """Exact inner products of `query` `[dim]` with the stored vectors of `ids` (for re-ranking a
        short list); UnknownItem (a KeyError) when an id is not in the catalogue."""
        vector = self._one_query(query, "score_ids")
        return self._score_ids(vector, self.attribute_index(attribute), check_ids(ids))

    def _one_query(self, query: np.ndarray, what: str) -> np.ndarray:
        batch, single = check_queries(query, self.dim)
        if not single:
            raise InvalidInput(f"{what} takes one query of shape [{self.dim}]")
        return batch[0]

    # -- search knobs --------------------------------------------------------------------------
    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """The approximate indexes' breadth: `ef_search` (HNSW), `nprobe` (IVF). InvalidInput where
        the catalogue's index kind has no such knob."""
        for name, value in (("ef_search", ef_search), ("nprobe", nprobe)):
            if value is not None:
                check_k(value, what=name)
        if ef_search is not None or nprobe is not None:
            self._set_search_params(ef_search, nprobe)

    @abstractmethod
    def search_params(self) -> dict[str, int]:
        """The search knobs in force, e.g. {"ef_search": 64}."""

    # -- lifecycle -----------------------------------------------------------------------------
    def open_log(self) -> None:  # noqa: B027 - a no-op where the engine logs writes itself (Milvus)
        """Start logging writes durably, where the engine keeps its own log (the FAISS directory)."""

    @abstractmethod
    def refuse_writes(self, reason: str) -> None:
        """Refuse every write from now on, saying `reason`."""

    @abstractmethod
    def checkpoint(self) -> object:
        """Make every acknowledged write part of the engine's durable state; returns what was written."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the engine's hooks (inputs checked) ---------------------------------------------------
    @abstractmethod
    def _count(self) -> int: ...
    @abstractmethod
    def _has(self, item_id: str) -> bool: ...
    @abstractmethod
    def _ids(self) -> list[str]: ...
    @abstractmethod
    def _iter_items(self, batch_size: int) -> Iterator[Batch]: ...
    @abstractmethod
    def _get(self, item_id: str) -> Item: ...
    @abstractmethod
    def _vector(self, item_id: str, attribute: int) -> np.ndarray: ...
    @abstractmethod
    def _metadata_values(self, field: str) -> set[Any]: ...
    @abstractmethod
    def _check_writable(self) -> None:
        """Raise why writes are refused (read-only, no log, refused), before any other work."""

    @abstractmethod
    def _write(
        self, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]] | None, replace: bool
    ) -> list[str]:
        """All of the items or none; `replace=False`: ItemExists (nothing written) when one is present.
        Returns the ids that were present (replaced)."""

    @abstractmethod
    def _remove(self, ids: list[str]) -> RemoveResult: ...
    @abstractmethod
    def _update_metadata(self, item_id: str, changes: dict[str, Any]) -> Item: ...
    @abstractmethod
    def _list_items(self, filters: Filter, limit: int, after: str | None) -> list[Item]: ...
    @abstractmethod
    def _search(
        self, queries: np.ndarray, attribute: int, k: int, filters: Filter, exclude: list[str]
    ) -> list[list[SearchResult]]: ...
    @abstractmethod
    def _search_range(
        self,
        query: np.ndarray,
        attribute: int,
        min_score: float,
        max_results: int,
        filters: Filter,
        exclude: list[str],
    ) -> tuple[list[SearchResult], bool, int | None]: ...
    @abstractmethod
    def _search_composed(
        self, parts: list[Part], k: int, filters: Filter, exclude: list[str], per_part: int | None
    ) -> list[SearchResult]: ...
    @abstractmethod
    def _score_ids(self, query: np.ndarray, attribute: int, ids: list[str]) -> dict[str, float]: ...
    @abstractmethod
    def _set_search_params(self, ef_search: int | None, nprobe: int | None) -> None: ...

"""The Milvus engine: a catalogue held in one Milvus collection, for catalogues past one machine and
for service replicas that share one catalogue. pymilvus is an optional dependency
(`pip install 'asen-search[milvus]'`); a Milvus Lite file (`milvus-lite:PATH.db`) needs no server.

Schema: the layout's key and vector fields (index/milvus/layouts.py), `meta` (JSON: the item's
metadata) and `terms` (JSON: what filters are evaluated on, index/milvus/expressions.py). The
model's fingerprint, the attribute names and the dimension are collection properties, checked at
load like the FAISS manifest.

Writes: one writer at a time across every process sharing the collection (a writer lease,
index/milvus/lease.py), so add-if-absent holds across replicas and writes never interleave; each
item is written by one request (all its vectors and metadata, or nothing). Durability is the
engine's: an insert acknowledged by Milvus is in its write-ahead log (a server: the message queue
and object storage; Lite: its local file). docs/reliability.md has the table of what each engine
promises.

Consistency: every read is `Strong` by default (read-your-writes across replicas: a write
acknowledged by one replica is seen by the next request to any other). On the embedded Milvus 2.3.5
server a search waited 400 ms at p50 under `Strong` against 63 ms under `Bounded` (docs/scale.md);
`?consistency=Bounded` on the location trades the first for the second.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np

from ..composed import COMPOSED_CANDIDATES, candidate_search, scan_search
from ..composed_parts import Part
from ..errors import FingerprintMismatch, IndexFormatError, InvalidInput, ItemExists, UnknownItem
from ..filters import Filter
from ..interface import Batch, Catalogue, merged
from ..results import Item, RemoveResult, SearchResult
from ..threshold import grow_until_below
from .expressions import TERMS_VERSION, chunks, filter_expression, join, literal, literal_list
from .layouts import LAYOUTS, Layout
from .lease import WriterLease, create_lease_collection
from .location import SEARCH_PARAMS, MilvusLocation, connect, disconnect

MAX_TOP_K = 16384  # Milvus's limit on k (and on offset + limit)
INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "DISKANN")
PAGE = 1000  # rows per query page when iterating the catalogue
_PROPS = ("asen.fingerprint", "asen.attributes", "asen.dim", "asen.index_type")
# which search knob each index type has
_KNOBS = {"HNSW": "ef_search", "IVF_FLAT": "nprobe", "IVF_SQ8": "nprobe", "DISKANN": "search_list"}


class MilvusCatalogue(Catalogue):
    """A catalogue held in one Milvus collection (see the module docstring)."""

    max_k = MAX_TOP_K

    def __init__(
        self,
        client: Any,
        location: MilvusLocation,
        attributes: list[str],
        dim: int,
        fingerprint: str,
        index_type: str,
        layout: str = "fields",
        terms_version: str | None = TERMS_VERSION,
    ) -> None:
        """Use `create` or `load`."""
        self._client, self.location = client, location
        self._attributes, self._dim, self._fingerprint, self._index_type = (
            attributes,
            dim,
            fingerprint,
            index_type,
        )
        self._layout: Layout = LAYOUTS[layout](len(attributes), terms_version)
        self._terms_version = terms_version
        self._search_params: dict[str, int] = {}
        for name, value in location.search:
            self._search_params[name] = value
        self._refused: str | None = None
        self._write_mutex = (
            threading.Lock()
        )  # one write of this process at a time; the lease: of all processes
        self._lease = WriterLease(client, location.collection)

    @property
    def layout(self) -> str:
        return self._layout.name

    # -- creating and loading ---------------------------------------------------------------
    @classmethod
    def create(
        cls,
        location: str | MilvusLocation,
        attributes: Sequence[str],
        dim: int,
        fingerprint: str,
        index_type: str = "FLAT",
        index_params: dict[str, Any] | None = None,
        layout: str = "fields",
    ) -> MilvusCatalogue:
        """A new, empty collection (ValueError if it exists)."""
        from pymilvus import DataType, MilvusClient

        where = location if isinstance(location, MilvusLocation) else MilvusLocation.parse(location)
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(LAYOUTS)}, got {layout!r}")
        if not attributes or len(set(attributes)) != len(attributes):
            raise ValueError(f"attributes must be distinct and non-empty, got {list(attributes)}")
        client = connect(where.uri)
        try:
            if client.has_collection(where.collection):
                raise ValueError(f"{where}: the collection exists already")
            plan = LAYOUTS[layout](len(attributes), TERMS_VERSION)
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            vector_fields = plan.add_fields(schema, dim, DataType)
            schema.add_field("meta", DataType.JSON)
            schema.add_field("terms", DataType.JSON)
            indexes = client.prepare_index_params()
            for name in vector_fields:
                schema.add_field(name, DataType.FLOAT_VECTOR, dim=dim)
                indexes.add_index(
                    field_name=name, index_type=index_type, metric_type="IP", params=dict(index_params or {})
                )
            # one shard: the rows of one write are one message, visible together
            client.create_collection(
                where.collection,
                schema=schema,
                index_params=indexes,
                consistency_level="Strong",
                num_shards=1,
            )
            client.alter_collection_properties(
                where.collection,
                properties={
                    "asen.fingerprint": fingerprint,
                    "asen.attributes": json.dumps(list(attributes)),
                    "asen.dim": str(dim),
                    "asen.index_type": index_type,
                    "asen.layout": layout,
                    "asen.terms": TERMS_VERSION,
                },
            )
            create_lease_collection(client, where.collection)
        except BaseException:
            disconnect(client, where.uri)
            raise
        return cls(client, where, list(attributes), dim, fingerprint, index_type, layout)

    @classmethod
    def load(cls, location: str | MilvusLocation, expected_fingerprint: str | None = None) -> MilvusCatalogue:
        """Open an existing collection; FingerprintMismatch if another model built it."""
        where = location if isinstance(location, MilvusLocation) else MilvusLocation.parse(location)
        client = connect(where.uri)
        try:
            if not client.has_collection(where.collection):
                raise FileNotFoundError(f"{where}: no such collection (make one with `asen index copy`)")
            client.load_collection(where.collection)
            props = client.describe_collection(where.collection).get("properties", {})
            if any(key not in props for key in _PROPS):
                raise IndexFormatError(
                    f"{where}: not a catalogue of this project (collection properties {sorted(props)})"
                )
            if expected_fingerprint is not None and props["asen.fingerprint"] != expected_fingerprint:
                raise FingerprintMismatch(str(where), props["asen.fingerprint"], expected_fingerprint)
            create_lease_collection(client, where.collection)  # collections made before the lease
            client.load_collection(where.collection + "_writers")
        except BaseException:
            disconnect(client, where.uri)
            raise
        return cls(
            client,
            where,
            json.loads(props["asen.attributes"]),
            int(props["asen.dim"]),
            props["asen.fingerprint"],
            props["asen.index_type"],
            props.get("asen.layout", "fields"),
            props.get("asen.terms"),
        )

    # -- what it is ----------------------------------------------------------------------------
    @property
    def attributes(self) -> list[str]:
        return list(self._attributes)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def __repr__(self) -> str:
        return (
            f"MilvusCatalogue({self.location}, attributes={self._attributes}, dim={self._dim}, {self.layout})"
        )

    @property
    def _collection(self) -> str:
        return self.location.collection

    def _query(
        self, expression: str, fields: list[str], strong: bool = False, **options: Any
    ) -> list[dict[str, Any]]:
        """Rows matching `expression`, read at the location's consistency (`strong`: always Strong, as
        the checks of a write under the lease must be, whatever the reads' level)."""
        level = "Strong" if strong else self.location.consistency
        rows: list[dict[str, Any]] = self._client.query(
            self._collection, filter=expression, output_fields=fields, consistency_level=level, **options
        )
        return rows

    # -- reads -----------------------------------------------------------------------------------
    def _count(self) -> int:
        rows = self._query(self._layout.one_row(), ["count(*)"])
        return int(rows[0]["count(*)"])

    def _has(self, item_id: str) -> bool:
        return bool(self._metas([item_id]))

    def _rows(
        self, ids: Sequence[str], fields: list[str], attribute: int | None = None, strong: bool = False
    ) -> list[dict[str, Any]]:
        """One row per item of `ids` that exists (of `attribute` in the rows layout)."""
        rows: list[dict[str, Any]] = []
        for run in chunks(ids):
            rows += self._query(
                self._layout.ids_filter(run, attribute),
                list(dict.fromkeys([self._layout.item_field, *fields])),
                strong,
            )
        return rows

    def _metas(self, ids: Sequence[str], strong: bool = False) -> dict[str, dict[str, Any]]:
        return {self._layout.id_of(row): row["meta"] for row in self._rows(ids, ["meta"], strong=strong)}

    def _vectors(self, ids: Sequence[str], attribute: int, strong: bool = False) -> dict[str, list[float]]:
        name = self._layout.vector_field(attribute)
        return {self._layout.id_of(row): row[name] for row in self._rows(ids, [name], attribute, strong)}

    def _pages(
        self, fields: list[str], batch_size: int = PAGE, expression: str = "", after: str | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Every item's row (the first attribute's in the rows layout) matching `expression`, in id
        order, a page at a time, from after id `after`. Keyset paging on the primary key with the
        server's iterator ordering (pymilvus's own iterator cannot quote every id)."""
        key = self._layout.item_field
        while True:
            cursor = "" if after is None else f"{key} > {literal(after)}"
            page = self._query(
                join(self._layout.one_row(), expression, cursor),
                list(dict.fromkeys([key, *fields])),
                limit=batch_size,
                iterator="True",
                reduce_stop_for_best="True",
            )
            page.sort(key=lambda row: self._layout.id_of(row))
            if page:
                yield page
            if len(page) < batch_size:
                return
            after = self._layout.id_of(page[-1])

    def _iter_items(self, batch_size: int) -> Iterator[Batch]:
        for page in self._pages(["meta"], batch_size):
            ids = [self._layout.id_of(row) for row in page]
            per_attribute = [self._vectors(ids, a) for a in range(len(self._attributes))]
            present = [
                i for i in ids if all(i in found for found in per_attribute)
            ]  # deleted meanwhile: skipped
            metas = {self._layout.id_of(row): dict(row["meta"]) for row in page}
            vectors = np.asarray([[found[i] for found in per_attribute] for i in present], dtype=np.float32)
            yield (
                present,
                vectors.reshape(len(present), len(self._attributes), self._dim),
                [metas[i] for i in present],
            )

    def _ids(self) -> list[str]:
        return [self._layout.id_of(row) for page in self._pages([]) for row in page]

    def _get(self, item_id: str) -> Item:
        meta = self._metas([item_id]).get(item_id)
        if meta is None:
            raise UnknownItem(item_id)
        return Item(item_id, dict(meta))

    def _metadata_values(self, field: str) -> set[Any]:
        return {
            row["meta"][field]
            for page in self._pages(["meta"])
            for row in page
            if isinstance(row["meta"].get(field), str | int | float)
        }

    def _vector(self, item_id: str, attribute: int) -> np.ndarray:
        found = self._vectors([item_id], attribute).get(item_id)
        if found is None:
            raise UnknownItem(item_id)
        return np.asarray(found, dtype=np.float32)

    # -- writes ------------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._refused is not None:
            from ..wal import LogUnavailable

            raise LogUnavailable(f"writes are refused: {self._refused}")

    def refuse_writes(self, reason: str) -> None:
        self._refused = reason

    def _write(
        self, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]] | None, replace: bool
    ) -> list[str]:
        with self._write_mutex, self._lease.held():
            present = self._metas(ids, strong=True)
            if present and not replace:
                raise ItemExists(sorted(present))
            metas = (
                metadata if metadata is not None else [dict(present[i]) if i in present else {} for i in ids]
            )
            rows = self._layout.entities(ids, vectors, metas)
            self._lease.check()
            if present:
                self._client.upsert(self._collection, rows)
            else:
                self._client.insert(self._collection, rows)
            return [i for i in ids if i in present]

    def _update_metadata(self, item_id: str, changes: dict[str, Any]) -> Item:
        with self._write_mutex, self._lease.held():
            meta = self._metas([item_id], strong=True).get(item_id)
            if meta is None:
                raise UnknownItem(item_id)
            new = merged(meta, changes)
            per_attribute = [
                self._vectors([item_id], a, strong=True)[item_id] for a in range(len(self._attributes))
            ]
            vectors = np.asarray(per_attribute, dtype=np.float32)[None]
            self._lease.check()
            self._client.upsert(self._collection, self._layout.entities([item_id], vectors, [new]))
        return Item(item_id, dict(new))

    def _list_items(self, filters: Filter, limit: int, after: str | None) -> list[Item]:
        expression = filter_expression(filters, self._terms_version)
        page = next(self._pages(["meta"], limit, expression, after), [])
        return [Item(self._layout.id_of(row), dict(row["meta"])) for row in page]

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """This process's write mutex and the writer lease of every process."""
        with self._write_mutex, self._lease.held():
            yield

    def _remove(self, ids: list[str]) -> RemoveResult:
        with self._write_mutex, self._lease.held():
            found = self._metas(ids, strong=True)
            present = [i for i in ids if i in found]
            for run in chunks(present):
                self._lease.check()
                self._client.delete(self._collection, filter=self._layout.delete_filter(run))
        return RemoveResult(present, [i for i in ids if i not in found])

    # -- search --------------------------------------------------------------------------------------
    def _set_search_params(self, ef_search: int | None, nprobe: int | None) -> None:
        wanted = {k: v for k, v in (("ef_search", ef_search), ("nprobe", nprobe)) if v is not None}
        own = _KNOBS.get(self._index_type)
        for name in wanted:
            if name != own:
                raise InvalidInput(
                    f"{name} applies to {'HNSW' if name == 'ef_search' else 'IVF'} indexes, not to "
                    f"this collection's {self._index_type}"
                )
        self._search_params.update(wanted)

    def search_params(self) -> dict[str, int]:
        return dict(self._search_params)

    def _expression(self, filters: Filter, exclude: Sequence[str], attribute: int | None = None) -> str:
        excluded = f"{self._layout.item_field} not in {literal_list(exclude)}" if exclude else ""
        return join(
            self._layout.one_row(attribute), filter_expression(filters, self._terms_version), excluded
        )

    def _search(
        self, queries: np.ndarray, attribute: int, k: int, filters: Filter, exclude: list[str]
    ) -> list[list[SearchResult]]:
        expression = self._expression(filters, exclude, attribute)
        params = {SEARCH_PARAMS[k]: v for k, v in self._search_params.items()}
        hits = self._client.search(
            self._collection,
            data=queries.tolist(),
            anns_field=self._layout.vector_field(attribute),
            limit=k,
            filter=expression,
            output_fields=[self._layout.item_field, "meta"],
            search_params={"metric_type": "IP", "params": params},
            consistency_level=self.location.consistency,
        )
        return [
            [
                SearchResult(self._layout.id_of(h), float(h["distance"]), dict(h["entity"]["meta"]))
                for h in row
            ]
            for row in hits
        ]

    def _score_ids(self, query: np.ndarray, attribute: int, ids: list[str]) -> dict[str, float]:
        if not ids:  # (an empty list of vectors has no second axis to multiply)
            return {}
        found = self._vectors(ids, attribute)
        unknown = [i for i in ids if i not in found]
        if unknown:
            raise UnknownItem(unknown[0])
        vectors = np.asarray([found[i] for i in ids], dtype=np.float32)
        return dict(zip(ids, (vectors @ query).tolist(), strict=True))

    def _search_range(
        self,
        query: np.ndarray,
        attribute: int,
        min_score: float,
        max_results: int,
        filters: Filter,
        exclude: list[str],
    ) -> tuple[list[SearchResult], bool, int | None]:
        """Growing top-k searches (index/threshold.py); Milvus's top-k limit also counts as cut."""

        def fetch(k: int) -> list[SearchResult]:
            return self._search(query[None], attribute, k, filters, exclude)[0]

        hits, truncated = grow_until_below(fetch, min_score, max_results, max(len(self), 1), limit=MAX_TOP_K)
        return hits, truncated, None if truncated else len(hits)

    def _search_composed(
        self, parts: list[Part], k: int, filters: Filter, exclude: list[str], per_part: int | None
    ) -> list[SearchResult]:
        """Each positive part's top `per_part` (default COMPOSED_CANDIDATES) from Milvus, rescored
        exactly; with no positive part, a scan of every item (index/composed.py)."""
        if any(p.weight > 0 for p in parts):
            return candidate_search(
                self, parts, k, filters, exclude, min(per_part or COMPOSED_CANDIDATES, MAX_TOP_K)
            )
        return scan_search(self, parts, k, filters, exclude)

    # -- durability: the engine's own -------------------------------------------------------------
    @property
    def log_error(self) -> str | None:
        return self._refused

    def checkpoint(self) -> str:
        """Seal what was written into the engine's segments (`flush`); returns the location."""
        self._client.flush(self._collection)
        return str(self.location)

    def drop(self) -> None:
        """Delete the collection (and its writer claims) and everything in it."""
        self._client.drop_collection(self._collection)
        self._client.drop_collection(self._collection + "_writers")

    def close(self) -> None:
        if self._client is not None:
            disconnect(self._client, self.location.uri)
            self._client = cast(Any, None)

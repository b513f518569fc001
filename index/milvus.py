"""The catalogue in Milvus: the interface of `CatalogueIndex`, for catalogues past one machine and for
service replicas that share one catalogue. pymilvus is an optional dependency
(`pip install 'asen-search[milvus]'`); a Milvus Lite file (`milvus-lite:PATH.db`) needs no server.

Schema: one collection per catalogue, one row per item: `id` (VARCHAR primary key), `meta` (JSON: the
item's metadata) and one FLOAT_VECTOR field per attribute (`v0`, `v1`, ...), each with its own index
(inner product). One row per item keeps an item's vectors and metadata one entity: an upsert or a
delete changes all of them at once, and a search returns the metadata with no second lookup. A Milvus
server allows 4 vector fields per collection unless `proxy.maxVectorFieldNum` is raised (up to 10):
docs/scale.md. The model's fingerprint, the attribute names and the dimension are collection
properties, checked at load like the FAISS manifest.

Consistency: every read is `Strong` by default (read-your-writes across replicas: a write acknowledged
by one replica is seen by the next request to any other). It has a price: on the embedded Milvus 2.3.5
server a search waited 400 ms at p50 under `Strong` against 63 ms under `Bounded` (docs/scale.md).
`?consistency=Bounded` on the location trades the first for the second: a search may then miss a
write made a moment earlier through another replica. Durability is the engine's: an insert acknowledged
by Milvus is in its write-ahead log (a server: the message queue and object storage; Lite: its local
file); this project keeps no log of its own on this backend.

Filters follow `index/metadata.py`: every field must match; a list of wanted values means any of
them; a metadata field holding a list matches when any element does. They are evaluated by Milvus on
a `terms` JSON field written beside the metadata (typed terms per field, `filter_terms`), because its
JSON comparisons treat `true` as `1` (measured on Milvus Lite).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .composed import COMPOSED_CANDIDATES, Part, candidate_search, check_parts, check_per_part, scan_search
from .errors import CatalogueError, FingerprintMismatch, IndexFormatError, UnknownItem
from .ids import MAX_ID_LENGTH, validate_id
from .metadata import FilterValue, check_metadata
from .results import Item, RemoveResult, SearchResult
from .threshold import check_threshold, grow_until_below
from .validation import check_filters_exclude, check_item_vectors, check_k, check_queries

SCHEME, LITE_SCHEME = "milvus://", "milvus-lite:"
DEFAULT_COLLECTION = "catalogue"
MAX_TOP_K = 16384  # Milvus's limit on k
INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "DISKANN")
LAYOUTS = ("fields", "rows")
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
SEARCH_PARAMS = ("ef", "nprobe", "search_list")
PAGE = 1000  # rows per query page when iterating the catalogue
_PROPS = ("asen.fingerprint", "asen.attributes", "asen.dim", "asen.index_type")


class MilvusUnavailable(CatalogueError, RuntimeError):
    """pymilvus is not installed, or the Milvus server cannot be reached."""


@dataclass(frozen=True)
class MilvusLocation:
    """Where a catalogue lives: a server URI (`http://host:port`) or a Milvus Lite file, the
    collection name, and the consistency level of every read."""

    uri: str
    collection: str
    consistency: str = "Strong"
    search: tuple[tuple[str, int], ...] = ()  # search parameters of the index type: ef, nprobe, search_list

    @staticmethod
    def parse(text: str) -> MilvusLocation:
        """`milvus://HOST:PORT/COLLECTION` or `milvus-lite:PATH.db[#COLLECTION]`, either followed by
        options: `?consistency=Strong|Bounded|Session|Eventually` (default Strong: see the module
        docstring) and the index type's search parameters, `ef=N` (HNSW), `nprobe=N` (IVF),
        `search_list=N` (DISKANN), joined by `&`."""
        text, _, query = text.partition("?")
        consistency, search = "Strong", []
        for option in filter(None, query.split("&")):
            key, _, value = option.partition("=")
            if key == "consistency" and value in CONSISTENCY_LEVELS:
                consistency = value
            elif key in SEARCH_PARAMS and value.isdigit() and int(value) > 0:
                search.append((key, int(value)))
            else:
                raise ValueError(f"{option!r}: the options are consistency={'|'.join(CONSISTENCY_LEVELS)} and "
                                 f"{', '.join(f'{k}=N' for k in SEARCH_PARAMS)} (N a positive integer)")
        where = MilvusLocation._parse(text)
        return MilvusLocation(where.uri, where.collection, consistency, tuple(search))

    @staticmethod
    def _parse(text: str) -> MilvusLocation:
        if text.startswith(SCHEME):
            hostport, _, collection = text[len(SCHEME):].partition("/")
            if not hostport or not collection or "/" in collection:
                raise ValueError(f"{text!r}: want milvus://HOST:PORT/COLLECTION")
            return MilvusLocation(f"http://{hostport}", collection)
        if text.startswith(LITE_SCHEME):
            path, _, collection = text[len(LITE_SCHEME):].partition("#")
            if not path.endswith(".db"):
                raise ValueError(f"{text!r}: a Milvus Lite file name ends in .db (milvus-lite:PATH.db#COLLECTION)")
            return MilvusLocation(path, collection or DEFAULT_COLLECTION)
        raise ValueError(f"{text!r} is not a Milvus location (milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db)")

    def __str__(self) -> str:
        options = ([] if self.consistency == "Strong" else [f"consistency={self.consistency}"]) + \
            [f"{k}={v}" for k, v in self.search]
        option = "?" + "&".join(options) if options else ""
        if self.uri.startswith("http://"):
            return f"{SCHEME}{self.uri[len('http://'):]}/{self.collection}{option}"
        return f"{LITE_SCHEME}{self.uri}#{self.collection}{option}"


def is_milvus(location: object) -> bool:
    return isinstance(location, str) and location.startswith((SCHEME, LITE_SCHEME))


_lite_users: dict[str, int] = {}  # Milvus Lite file -> open catalogues on it in this process
_lite_lock = threading.Lock()


def _client(uri: str) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusUnavailable("the Milvus backend needs pymilvus: pip install 'asen-search[milvus]'") from None
    try:
        client = MilvusClient(uri)
    except Exception as exc:  # pymilvus raises its own types, and grpc's, for an unreachable server
        raise MilvusUnavailable(f"cannot connect to Milvus at {uri}: {exc}") from None
    if not uri.startswith("http"):
        with _lite_lock:
            _lite_users[uri] = _lite_users.get(uri, 0) + 1
    return client


def _abandon(client: Any, uri: str) -> None:
    client.close()
    _release(uri)


def _release(uri: str) -> None:
    """After the last catalogue on a Milvus Lite file closes, stop its in-process engine, which
    holds the file's lock (another process may then open it)."""
    if uri.startswith("http"):
        return
    with _lite_lock:
        _lite_users[uri] -= 1
        last = _lite_users[uri] == 0
        if last:
            del _lite_users[uri]
    if last:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def _token(value: Any) -> str | None:
    """A scalar as a typed string term: `True` and `1` stay apart, `38` and `38.0` meet (as in
    `index/metadata.py`); None for a value that cannot be filtered on."""
    if value is None:
        return "z:"
    if isinstance(value, bool):
        return f"b:{value}"
    if isinstance(value, int | float):
        return f"n:{float(value)!r}"
    if isinstance(value, str):
        return f"s:{value}"
    return None


def filter_terms(metadata: Mapping[str, Any]) -> dict[str, list[str]]:
    """What filters match on, per field: the typed terms of a scalar, or of each scalar of a list.
    Stored beside the metadata (field `terms`), because Milvus's own JSON comparisons treat `true`
    as `1` and cannot compare with null."""
    terms: dict[str, list[str]] = {}
    for field, value in metadata.items():
        tokens = (_token(v) for v in (value if isinstance(value, list) else [value]))
        terms[field] = [token for token in tokens if token is not None]
    return terms


def filter_expression(filters: Mapping[str, FilterValue] | None, exclude: Sequence[str] = (), id_field: str = "id") -> str:
    """The Milvus boolean expression for `filters` (see the module docstring) and excluded ids."""
    clauses = []
    for field, wanted in (filters or {}).items():
        if not isinstance(field, str) or not field:
            raise ValueError(f"filter fields must be non-empty strings, got {field!r}")
        values = list(wanted) if isinstance(wanted, list | tuple | set | frozenset) else [wanted]
        tokens = []
        for value in values:
            if not (value is None or isinstance(value, str | int | float | bool)):
                raise ValueError(f"filter values must be str, int, float, bool or None, got {value!r}")
            tokens.append(_token(value))
        clauses.append(f"json_contains_any(terms[{json.dumps(field)}], {json.dumps(tokens)})" if tokens else "false")
    if exclude:
        clauses.append(f"{id_field} not in {json.dumps(list(exclude))}")
    return " and ".join(clauses)


class MilvusCatalogue:
    """A catalogue held in one Milvus collection (see the module docstring), in one of two layouts:
    `fields` (one row per item, one vector field per attribute; Milvus 2.4 and later) or `rows` (one
    row per item and attribute, with an `attribute` number; any Milvus from 2.3, no limit on
    attributes; metadata stored on every row). `attribute` is a plain field, not a partition key:
    on Milvus 2.3.5, rows written by upsert into a partition-key collection are not found by a filter
    on the key (measured: `attribute == 0` counted 0 of 2 upserted rows)."""

    def __init__(self, client: Any, location: MilvusLocation, attributes: list[str], dim: int, fingerprint: str,
                 index_type: str, layout: str = "fields") -> None:
        self._client, self.location = client, location
        self._attributes, self._dim, self._fingerprint, self._index_type = attributes, dim, fingerprint, index_type
        self.layout = layout
        self._search_params: dict[str, int] = dict(location.search)
        self._refused: str | None = None
        self._write_mutex = threading.Lock()  # add-if-absent and remove are read-then-write

    # -- creating and loading ---------------------------------------------------------------
    @classmethod
    def create(cls, location: str | MilvusLocation, attributes: Sequence[str], dim: int, fingerprint: str,
               index_type: str = "FLAT", index_params: Mapping[str, Any] | None = None,
               layout: str = "fields") -> MilvusCatalogue:
        """A new, empty collection (ValueError if it exists)."""
        from pymilvus import DataType, MilvusClient

        where = location if isinstance(location, MilvusLocation) else MilvusLocation.parse(location)
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if not attributes or len(set(attributes)) != len(attributes):
            raise ValueError(f"attributes must be distinct and non-empty, got {list(attributes)}")
        client = _client(where.uri)
        try:
            if client.has_collection(where.collection):
                raise ValueError(f"{where}: the collection exists already")
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=4 * MAX_ID_LENGTH + 8)
            if layout == "rows":
                schema.add_field("item", DataType.VARCHAR, max_length=4 * MAX_ID_LENGTH)
                schema.add_field("attribute", DataType.INT64)
            schema.add_field("meta", DataType.JSON)
            schema.add_field("terms", DataType.JSON)
            indexes = client.prepare_index_params()
            for name in (["v"] if layout == "rows" else [f"v{a}" for a in range(len(attributes))]):
                schema.add_field(name, DataType.FLOAT_VECTOR, dim=dim)
                indexes.add_index(field_name=name, index_type=index_type, metric_type="IP",
                                  params=dict(index_params or {}))
            client.create_collection(where.collection, schema=schema, index_params=indexes, consistency_level="Strong")
            client.alter_collection_properties(where.collection, properties={
                "asen.fingerprint": fingerprint, "asen.attributes": json.dumps(list(attributes)), "asen.dim": str(dim),
                "asen.index_type": index_type, "asen.layout": layout})
        except BaseException:
            _abandon(client, where.uri)
            raise
        return cls(client, where, list(attributes), dim, fingerprint, index_type, layout)

    @classmethod
    def load(cls, location: str | MilvusLocation, expected_fingerprint: str | None = None) -> MilvusCatalogue:
        """Open an existing collection; FingerprintMismatch if another model built it."""
        where = location if isinstance(location, MilvusLocation) else MilvusLocation.parse(location)
        client = _client(where.uri)
        try:
            if not client.has_collection(where.collection):
                raise FileNotFoundError(f"{where}: no such collection (make one with `asen index copy`)")
            client.load_collection(where.collection)
            props = client.describe_collection(where.collection).get("properties", {})
            if any(key not in props for key in _PROPS):
                raise IndexFormatError(f"{where}: not a catalogue of this project (collection properties {sorted(props)})")
            if expected_fingerprint is not None and props["asen.fingerprint"] != expected_fingerprint:
                raise FingerprintMismatch(str(where), props["asen.fingerprint"], expected_fingerprint)
        except BaseException:
            _abandon(client, where.uri)
            raise
        return cls(client, where, json.loads(props["asen.attributes"]), int(props["asen.dim"]),
                   props["asen.fingerprint"], props["asen.index_type"], props.get("asen.layout", "fields"))

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

    @property
    def read_only(self) -> bool:
        return False

    def __len__(self) -> int:
        rows = self._client.query(self.location.collection, filter=self._one_row_per_item(), output_fields=["count(*)"],
                                  consistency_level=self.location.consistency)
        return int(rows[0]["count(*)"])

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and bool(self._metas([item_id]))

    def __repr__(self) -> str:
        return f"MilvusCatalogue({self.location}, attributes={self._attributes}, dim={self._dim}, {self.layout})"

    # -- the two layouts ---------------------------------------------------------------------------
    @property
    def _item_key(self) -> str:
        """The field that holds an item's id."""
        return "item" if self.layout == "rows" else "id"

    def _one_row_per_item(self) -> str:
        """A filter that keeps one row per item ("" in the `fields` layout)."""
        return "attribute == 0" if self.layout == "rows" else ""

    def _attribute_index(self, attribute: str) -> int:
        try:
            return self._attributes.index(attribute)
        except ValueError:
            raise KeyError(f"unknown attribute {attribute!r}; known attributes: {self.attributes}") from None

    def _query(self, ids: Sequence[str], fields: list[str], attribute: int | None) -> list[dict[str, Any]]:
        """Rows of `ids` (one per item: attribute 0, or `attribute`, in the `rows` layout), a page of
        ids per request."""
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), PAGE):
            chunk = list(ids[start:start + PAGE])
            if self.layout == "rows":
                expression = f"attribute == {attribute or 0} and item in {json.dumps(chunk)}"
                rows += self._client.query(self.location.collection, filter=expression,
                                           output_fields=["item", *fields], consistency_level=self.location.consistency)
            else:
                rows += self._client.get(self.location.collection, ids=chunk, output_fields=fields,
                                         consistency_level=self.location.consistency)
        return rows

    def _metas(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {row[self._item_key]: row["meta"] for row in self._query(ids, ["meta"], None)}

    def _vectors(self, ids: Sequence[str], attribute: int) -> dict[str, list[float]]:
        name = "v" if self.layout == "rows" else f"v{attribute}"
        return {row[self._item_key]: row[name] for row in self._query(ids, [name], attribute)}

    def _entity_rows(self, ids: list[str], batch: np.ndarray, metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.layout == "rows":
            return [{"id": f"{a}:{i}", "item": i, "attribute": a, "meta": m, "terms": filter_terms(m),
                     "v": batch[n, a].tolist()}
                    for n, (i, m) in enumerate(zip(ids, metas)) for a in range(len(self._attributes))]
        return [{"id": i, "meta": m, "terms": filter_terms(m),
                 **{f"v{a}": batch[n, a].tolist() for a in range(len(self._attributes))}}
                for n, (i, m) in enumerate(zip(ids, metas))]

    def _pages(self, fields: list[str], batch_size: int = PAGE) -> Iterator[list[dict[str, Any]]]:
        """Every item's row (attribute 0 in the `rows` layout), a page at a time."""
        iterator = self._client.query_iterator(self.location.collection, batch_size=batch_size,
                                               filter=self._one_row_per_item(),
                                               output_fields=list(dict.fromkeys([self._item_key, *fields])),
                                               consistency_level=self.location.consistency)
        try:
            while page := iterator.next():
                yield page
        finally:
            iterator.close()

    # -- reads -----------------------------------------------------------------------------------
    def iter_items(self, batch_size: int = PAGE) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
        """Every item, a page at a time: (ids, vectors `[n, n_attributes, dim]`, metadata)."""
        for page in self._pages(["meta"], batch_size):
            ids = [row[self._item_key] for row in page]
            per_attribute = [self._vectors(ids, a) for a in range(len(self._attributes))]
            vectors = np.asarray([[found[i] for found in per_attribute] for i in ids], dtype=np.float32)
            yield ids, vectors.reshape(len(ids), len(self._attributes), self._dim), [dict(r["meta"]) for r in page]

    def ids(self) -> list[str]:
        """All item ids (in the engine's order, not insertion order)."""
        return [row[self._item_key] for page in self._pages([]) for row in page]

    def get(self, item_id: str) -> Item:
        meta = self._metas([item_id]).get(item_id)
        if meta is None:
            raise UnknownItem(item_id)
        return Item(item_id, dict(meta))

    def metadata_values(self, field: str) -> set[Any]:
        """Every distinct scalar value of metadata `field` (one pass over the collection)."""
        return {row["meta"][field] for page in self._pages(["meta"]) for row in page
                if isinstance(row["meta"].get(field), str | int | float)}

    def vector(self, item_id: str, attribute: str) -> np.ndarray:
        found = self._vectors([item_id], self._attribute_index(attribute)).get(item_id)
        if found is None:
            raise UnknownItem(item_id)
        return np.asarray(found, dtype=np.float32)

    # -- writes ------------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._refused is not None:
            raise CatalogueError(f"writes are refused: {self._refused}")

    def refuse_writes(self, reason: str) -> None:
        self._refused = reason

    def add(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add new items: vectors `[n, n_attributes, dim]`; ValueError if an id is present."""
        self._write(ids, vectors, metadata, replace=False)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray,
               metadata: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add or replace items; with `metadata=None` replaced items keep their metadata."""
        self._write(ids, vectors, metadata, replace=True)

    def _write(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None,
               replace: bool) -> None:
        checked = [validate_id(i) for i in ids]
        if len(set(checked)) != len(checked):
            raise ValueError("duplicate ids in one write")
        batch = check_item_vectors(vectors, len(checked), len(self._attributes), self._dim)
        metas = None if metadata is None else [check_metadata(m) for m in metadata]
        if metas is not None and len(metas) != len(checked):
            raise ValueError(f"{len(metas)} metadata entries for {len(checked)} ids")
        if not checked:
            return
        with self._write_mutex:
            self._check_writable()
            present = self._metas(checked)
            if present and not replace:
                raise ValueError(f"{len(present)} ids already in the catalogue (use upsert to replace): "
                                 f"{sorted(present)[:5]}")
            if metas is None:
                metas = [dict(present[i]) if i in present else {} for i in checked]
            rows = self._entity_rows(checked, batch, metas)
            if replace:
                self._client.upsert(self.location.collection, rows)
            else:
                self._client.insert(self.location.collection, rows)

    def remove(self, ids: Sequence[str]) -> RemoveResult:
        """Remove items; ids not in the catalogue are reported as unknown."""
        requested = list(dict.fromkeys(validate_id(i) for i in ([ids] if isinstance(ids, str) else ids)))
        with self._write_mutex:
            self._check_writable()
            found = self._metas(requested)
            present = [i for i in requested if i in found]
            if present and self.layout == "rows":
                self._client.delete(self.location.collection, filter=f"item in {json.dumps(present)}")
            elif present:
                self._client.delete(self.location.collection, ids=present)
        return RemoveResult(present, [i for i in requested if i not in found])

    # -- search --------------------------------------------------------------------------------------
    def set_search_params(self, **params: int) -> None:
        """Search parameters of the index type (`ef` for HNSW, `nprobe` for IVF, `search_list` for DISKANN)."""
        self._search_params = {k: int(v) for k, v in params.items()}

    def search_params(self) -> dict[str, int]:
        return dict(self._search_params)

    def search(self, query: np.ndarray, attribute: str, k: int, filters: Mapping[str, FilterValue] | None = None,
               exclude: Sequence[str] = ()) -> list[SearchResult] | list[list[SearchResult]]:
        """Top `k` items by inner product with `query` `[dim]` (a list) or `[n, dim]` (n lists), best
        first, among items matching `filters`, never one of `exclude`."""
        batch, single = check_queries(query, self._dim)
        k = check_k(k)
        if k > MAX_TOP_K:
            raise ValueError(f"k must be at most {MAX_TOP_K} on the Milvus backend, got {k}")
        exclude = check_filters_exclude(filters, exclude)
        a = self._attribute_index(attribute)
        expression = filter_expression(filters, exclude, self._item_key)
        if self.layout == "rows":
            expression = f"attribute == {a}" + (f" and {expression}" if expression else "")
        hits = self._client.search(self.location.collection, data=batch.tolist(),
                                   anns_field="v" if self.layout == "rows" else f"v{a}", limit=k, filter=expression,
                                   output_fields=list(dict.fromkeys([self._item_key, "meta"])),
                                   search_params={"metric_type": "IP", "params": self._search_params},
                                   consistency_level=self.location.consistency)
        results = [[SearchResult(h["entity"][self._item_key] if self.layout == "rows" else h["id"], float(h["distance"]),
                                 dict(h["entity"]["meta"])) for h in row] for row in hits]
        return results[0] if single else results

    def score_ids(self, query: np.ndarray, attribute: str, ids: Sequence[str]) -> dict[str, float]:
        """Exact inner products of `query` `[dim]` with the stored vectors of `ids`; KeyError if an
        id is not in the catalogue."""
        batch, single = check_queries(query, self._dim)
        if not single:
            raise ValueError(f"score_ids takes one query of shape [{self._dim}]")
        wanted = list(dict.fromkeys(ids))
        found = self._vectors(wanted, self._attribute_index(attribute))
        unknown = [i for i in wanted if i not in found]
        if unknown:
            raise KeyError(f"unknown item ids: {unknown[:5]}")
        vectors = np.asarray([found[i] for i in wanted], dtype=np.float32)
        return dict(zip(wanted, (vectors @ batch[0]).tolist(), strict=True))

    def search_range(self, query: np.ndarray, attribute: str, min_score: float, max_results: int,
                     filters: Mapping[str, FilterValue] | None = None,
                     exclude: Sequence[str] = ()) -> tuple[list[SearchResult], bool]:
        """Every item scoring at least `min_score`, best first, at most `max_results` (and whether the
        cap, or Milvus's top-k limit, cut the list): growing top-k searches (index/threshold.py)."""
        batch, single = check_queries(query, self._dim)
        if not single:
            raise ValueError(f"search_range takes one query of shape [{self._dim}]")
        check_threshold(min_score, max_results)

        def fetch(k: int) -> list[SearchResult]:
            return cast(list[SearchResult], self.search(batch[0], attribute, k, filters=filters, exclude=exclude))

        return grow_until_below(fetch, float(min_score), max_results, max(len(self), 1), limit=MAX_TOP_K)

    def search_composed(self, parts: Sequence[Part], k: int, filters: Mapping[str, FilterValue] | None = None,
                        exclude: Sequence[str] = (), per_part: int | None = None) -> list[SearchResult]:
        """Top `k` by the weighted sum of per-attribute inner products (index/composed.py): each
        positive part's top `per_part` (default COMPOSED_CANDIDATES) from Milvus, rescored exactly;
        with no positive part, a scan of every item."""
        k = check_k(k)
        parts = check_parts(parts, self._attributes, self._dim)
        exclude = check_filters_exclude(filters, exclude)
        if any(p.weight > 0 for p in parts):
            per_part = check_per_part(per_part) or COMPOSED_CANDIDATES
            return candidate_search(self, parts, k, filters, exclude, min(per_part, MAX_TOP_K))
        return scan_search(self, parts, k, filters, exclude)

    # -- the FAISS backend's durability hooks: the engine does this itself ------------------------------
    @property
    def log_size(self) -> int:
        return 0

    @property
    def log_error(self) -> str | None:
        return self._refused

    def open_log(self) -> None:
        """Nothing to open: Milvus logs every acknowledged write itself."""

    def checkpoint(self) -> str:
        """Seal what was written into the engine's segments (`flush`); returns the location."""
        self._client.flush(self.location.collection)
        return str(self.location)

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        self._client.drop_collection(self.location.collection)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            _release(self.location.uri)

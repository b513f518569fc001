"""One attribute's vectors: a FAISS inner-product index addressed by int64 keys.

Supported factory families (``faiss.index_factory`` strings, metric inner product):

- ``"Flat"``: exact search; wrapped in ``IndexIDMap2`` (keys, reconstruction, removal).
- ``"HNSW<M>[,Flat|SQ8|PQ..]"``: wrapped in ``IndexIDMap2``; HNSW cannot remove vectors, so
  removed keys become tombstones excluded at search time by an ``IDSelector`` until
  ``compact()`` rebuilds the graph.
- ``"IVF<nlist>,Flat|SQ8|PQ<m>"`` (optionally behind ``OPQ``/``PCA``): keys stored natively,
  a hash-table direct map makes vectors reconstructable and removable by key.

Filtered searches take the set of allowed keys and pass it to FAISS as an ``IDSelector``
(pre-filtering inside the index scan, never post-filtering a short list). Approximate indexes
can miss matches when the allowed set is a small part of the catalogue (the graph or the
probed lists hold too few of them), so allowed sets of at most ``exact_filter_max`` keys are
searched exactly over just those keys' stored vectors instead; and a query for which the
approximate filtered search still finds fewer than min(k, allowed) results is answered exactly
the same way, so a filter always returns min(k, matches) results.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np

from .errors import InvalidInput
from .results import SearchResult
from .threshold import grow_until_below

EXACT_FILTER_MAX = 20_000
SUBSET_BLOCK = 131_072  # stored vectors decoded at a time by an exact search over a subset
SCAN_QUERY_CHUNK = 64  # queries per pass of a Flat scan over the vectors
SCAN_ROW_BLOCK = 65_536  # stored vectors per matrix product: a [64, 65536] float32 score block (16 MiB)
RANGE_EF_FACTOR = 2  # HNSW threshold searches: efSearch >= 2 x the results asked for (docs/protection.md)
RANGE_SCAN_MAX = 2_000_000  # approximate indexes up to this size answer threshold searches by an exact scan
_SELECT_POOL = ThreadPoolExecutor(2, thread_name_prefix="asen-topk")  # top-k selection of a batch's rows


def _top_rows(scores: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Column positions and scores of the `want` best of each row, unordered."""
    if want >= scores.shape[1]:
        pos = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        return np.array(pos), scores
    pos = np.argpartition(-scores, want - 1, axis=1)[:, :want]
    return pos, np.take_along_axis(scores, pos, axis=1)


def _scan_top(vectors: np.ndarray, queries: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top `want` rows of `vectors` `[n, d]` by inner product with each query `[m, d]`,
    best first: positions `[m, want]` and scores `[m, want]`.

    One matrix-vector product for a single query (memory-bound: it reads the vectors once at the
    bandwidth of the machine); for a batch, matrix products over blocks of rows, each block's
    candidates selected in two threads (numpy's selection releases the GIL) and merged."""
    n = len(vectors)
    if len(queries) == 1:
        pos, top = _top_rows((vectors @ queries[0])[None], want)
    else:
        cand_pos, cand_scores = [], []
        for lo in range(0, n, SCAN_ROW_BLOCK):
            block = queries @ vectors[lo : lo + SCAN_ROW_BLOCK].T  # [m, b]
            mid, keep = (len(queries) + 1) // 2, min(want, block.shape[1])
            parts = list(_SELECT_POOL.map(_top_rows, (block[:mid], block[mid:]), (keep, keep)))
            cand_pos.append(np.concatenate([p for p, _ in parts]) + lo)
            cand_scores.append(np.concatenate([s for _, s in parts]))
        all_pos, all_scores = np.concatenate(cand_pos, axis=1), np.concatenate(cand_scores, axis=1)
        sel, top = _top_rows(all_scores, want)
        pos = np.take_along_axis(all_pos, sel, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(pos, order, axis=1), np.take_along_axis(top, order, axis=1)


_SUPPORTED = "'Flat', 'HNSW32' (or 'HNSW32,SQ8', ...), 'IVF1024,Flat', 'IVF1024,PQ16', 'OPQ16,IVF1024,PQ16'"


@dataclass(frozen=True)
class SearchKnobs:
    """Accuracy/speed knobs of approximate indexes (None where they do not apply)."""

    ef_search: int | None = None  # HNSW's efSearch
    nprobe: int | None = None


def _core(index: faiss.Index) -> Any:
    """The index doing the work, under any IndexIDMap2 / IndexPreTransform wrappers.

    The result does not own its memory: keep ``index`` alive while using it."""
    node = faiss.downcast_index(index)
    while isinstance(node, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
        node = faiss.downcast_index(node.index)
    return node


def _kind(core: faiss.Index, factory: str) -> str:
    if isinstance(core, faiss.IndexIVF):
        return "ivf"
    if isinstance(core, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(core, faiss.IndexFlat):
        return "flat"
    raise ValueError(
        f"unsupported FAISS factory {factory!r} ({type(core).__name__}); use one of {_SUPPORTED}"
    )


def _build(dim: int, factory: str) -> faiss.Index:
    """An empty index for ``factory``, wrapped so that it is addressed by int64 keys."""
    try:
        base = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise ValueError(f"invalid FAISS factory string {factory!r}: {detail}") from None
    core = _core(base)
    if _kind(core, factory) == "ivf":
        core.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # stubs lack DirectMap
        if isinstance(core, faiss.IndexIVFPQ):  # only serves polysemous search, which is unused
            # and costs ~10 s even on tiny data; the stubs omit this IndexIVFPQ field
            core.do_polysemous_training = False  # type: ignore[attr-defined]
        return base
    if isinstance(base, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        raise ValueError(f"factory {factory!r}: leave out 'IDMap'; keys are managed by this package")
    return faiss.IndexIDMap2(base)


def _min_training_points(index: faiss.Index) -> int:
    """Fewest vectors FAISS accepts to train ``index`` (0 when it needs no training)."""
    if index.is_trained:
        return 0
    need = 1
    node: Any = faiss.downcast_index(index)
    while node is not None:
        if isinstance(node, faiss.IndexIVF):
            need = max(need, node.nlist)
        pq = getattr(node, "pq", None)
        if isinstance(pq, faiss.ProductQuantizer):
            need = max(need, pq.ksub)
        inner = getattr(node, "index", None) or getattr(node, "storage", None)
        node = faiss.downcast_index(inner) if isinstance(inner, faiss.Index) else None
    return need


def _bitmap_selector(keys: np.ndarray) -> faiss.IDSelector:
    """An IDSelectorBitmap over keys ``[m]`` (keys are small dense counters, so this is compact)."""
    mask = np.zeros(int(keys.max()) + 1, dtype=bool)
    mask[keys] = True
    # the Python wrapper (class_wrappers.handle_IDSelectorSubset) also takes just the array; the stubs
    # only model the SWIG (n, bitmap) constructor
    return faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))  # type: ignore[call-arg, arg-type]


def _empty_result(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


class AttributeIndex:
    """Vectors ``[dim]`` of one attribute, keyed by int64; not thread-safe on its own."""

    def __init__(self, index: faiss.Index, factory: str, tombstones: np.ndarray | None = None) -> None:
        self.factory = factory
        self._attach(index)
        self._tombstones = np.unique(np.asarray(tombstones if tombstones is not None else [], np.int64))
        self.exact_filter_max = EXACT_FILTER_MAX

    def _attach(self, index: faiss.Index) -> None:
        # typed Any: FAISS's bundled stubs do not model the subclasses' attributes (the cast stops
        # mypy from narrowing the attribute back to faiss.Index on this assignment)
        self._index: Any = cast(Any, index)
        self._core: Any = _core(index)
        self.kind = _kind(self._core, self.factory)
        # exact = plain flat scan in the original space (no PCA/OPQ transform in front)
        self.exact = self.kind == "flat" and isinstance(
            faiss.downcast_index(self._index.index), faiss.IndexFlat
        )

    @classmethod
    def create(cls, dim: int, factory: str = "Flat") -> AttributeIndex:
        return cls(_build(dim, factory), factory)

    @classmethod
    def read(
        cls, path: Path, dim: int, factory: str, tombstones: np.ndarray, mmap: bool = False
    ) -> AttributeIndex:
        """Load from ``path``; ``mmap`` maps the vectors read-only (the index must then never be
        written: FAISS aborts the process on a write to a mapped index)."""
        flags = 0
        if mmap:  # IVF maps its inverted lists, the others their flat code arrays
            empty = _build(dim, factory)
            is_ivf = _kind(_core(empty), factory) == "ivf"
            flags = faiss.IO_FLAG_MMAP if is_ivf else faiss.IO_FLAG_MMAP_IFC
        index = cls(faiss.read_index(str(path), flags), factory, tombstones)
        if index.dim != dim:
            raise ValueError(f"{path} holds {index.dim}-d vectors, expected {dim}")
        return index

    def write(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def min_training_points(self) -> int:
        return _min_training_points(self._index)

    @property
    def tombstones(self) -> np.ndarray:
        """Removed keys ``[t]`` still inside an HNSW graph (empty for other kinds)."""
        return self._tombstones

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._tombstones)

    def train(self, vectors: np.ndarray) -> None:
        """Train on ``vectors`` ``[n, dim]``; ValueError if there are too few."""
        need = self.min_training_points
        if len(vectors) < need:
            raise ValueError(
                f"index {self.factory!r} must be trained before use: the first batch added needs "
                f"at least {need} items (FAISS recommends ~{39 * need}), got {len(vectors)}; "
                f"add a larger first batch or use 'Flat' for a small catalogue"
            )
        try:
            self._index.train(vectors)
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()[-1]
            raise ValueError(
                f"training index {self.factory!r} on {len(vectors)} items failed: {detail}"
            ) from None

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors ``[n, dim]`` under new keys ``[n]``."""
        assert self.is_trained, "train() before add()"
        self._index.add_with_ids(vectors, keys)

    def remove(self, keys: np.ndarray) -> None:
        """Remove keys ``[n]`` (all present): natively, or as tombstones for HNSW."""
        if self.kind == "ivf":  # the hash-table direct map only accepts an IDSelectorArray
            removed = self._index.remove_ids(faiss.IDSelectorArray(keys))
        elif self.kind == "flat":
            removed = self._index.remove_ids(faiss.IDSelectorBatch(keys))
        else:
            self._tombstones = np.union1d(self._tombstones, keys)
            return
        assert removed == len(keys), (removed, len(keys))

    def reconstruct(self, keys: np.ndarray) -> np.ndarray:
        """Stored vectors ``[n, dim]`` of live keys ``[n]`` (decoded, so approximate for PQ/SQ)."""
        vectors: np.ndarray = self._index.reconstruct_batch(np.ascontiguousarray(keys, dtype=np.int64))
        return vectors

    def live_keys(self) -> np.ndarray:
        """Every live key ``[n]`` (IDMap-wrapped kinds only)."""
        assert self.kind != "ivf"
        return np.setdiff1d(faiss.vector_to_array(self._index.id_map), self._tombstones)

    def compact(self) -> int:
        """Rebuild without tombstoned vectors; returns how many were purged."""
        purged = len(self._tombstones)
        if not purged:
            return 0
        keys = self.live_keys()
        vectors = self.reconstruct(keys)
        rebuilt = _build(self.dim, self.factory)
        if not rebuilt.is_trained:  # train on everything stored, removed items included
            rebuilt.train(self.reconstruct(faiss.vector_to_array(self._index.id_map)))
        if len(keys):
            rebuilt.add_with_ids(vectors, keys)
        knobs = self.knobs()
        self._attach(rebuilt)
        self._tombstones = np.empty(0, dtype=np.int64)
        self.set_knobs(knobs)
        return purged

    def knobs(self) -> SearchKnobs:
        if self.kind == "hnsw":
            return SearchKnobs(ef_search=int(self._core.hnsw.efSearch))
        if self.kind == "ivf":
            return SearchKnobs(nprobe=int(self._core.nprobe))
        return SearchKnobs()

    def set_knobs(self, knobs: SearchKnobs) -> None:
        """Set ef_search (HNSW's efSearch) / nprobe (IVF); InvalidInput for a knob this kind lacks."""
        for name, kind in (("ef_search", "hnsw"), ("nprobe", "ivf")):
            value = getattr(knobs, name)
            if value is None:
                continue
            if self.kind != kind:
                raise InvalidInput(f"{name} applies to {kind.upper()} indexes, not to {self.factory!r}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        if knobs.ef_search is not None:
            self._core.hnsw.efSearch = knobs.ef_search
        if knobs.nprobe is not None:
            self._core.nprobe = min(knobs.nprobe, self._core.nlist)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product for queries ``[n, dim]``: scores ``[n, k]``, keys ``[n, k]``.

        ``allowed`` (keys ``[m]``, None = all) restricts the search; ``excluded`` keys and
        tombstones are never returned. Missing results are key -1, score -inf. ``ef``: HNSW's
        efSearch for this search, at least the index's own.
        """
        blocked = self._tombstones
        if excluded is not None and len(excluded):
            blocked = np.union1d(blocked, excluded)
        selector: faiss.IDSelector | None = None
        if allowed is None and self.exact:
            return self._scan(queries, k, blocked)
        if allowed is not None:
            allowed = np.setdiff1d(allowed, blocked) if len(blocked) else allowed
            if not len(allowed):
                return _empty_result(len(queries), k)
            if not self.exact and len(allowed) <= self.exact_filter_max:
                return self._search_subset(queries, k, allowed)
            selector = _bitmap_selector(allowed)
        elif len(blocked):
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(blocked))
        scores, keys = self._index.search(queries, k, params=self._params(selector, ef))
        if allowed is not None and not self.exact:
            # a filter keeps its promise: min(k, matches) results. Where the graph or the probed
            # lists held too few matches, that query is answered exactly over the matching items.
            short = np.flatnonzero((keys >= 0).sum(axis=1) < min(k, len(allowed)))
            if len(short):
                scores[short], keys[short] = self._search_subset(queries[short], k, allowed)
        return scores, keys

    def search_range(
        self,
        query: np.ndarray,
        min_score: float,
        max_results: int,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        universe: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, int | None]:
        """Every stored vector scoring at least ``min_score`` with ``query`` ``[dim]``, best first (ties
        by key), at most ``max_results``: scores ``[m]``, keys ``[m]``, and how many pass in all (None
        when the growing top-k searches were cut before the last one passing).

        Exact Flat: FAISS's range search (filters and exclusions as an IDSelector). Approximate kinds
        holding at most RANGE_SCAN_MAX items: exact too, a scan of their decoded stored vectors (the
        live keys are ``universe``): a threshold search is about not missing anything, and graph or
        list searches do miss (measured: docs/protection.md). Larger ones: top-k searches of growing k
        (index/threshold.py), HNSW's efSearch raised to RANGE_EF_FACTOR x k."""
        blocked = self._tombstones if excluded is None else np.union1d(self._tombstones, excluded)
        if not self.exact and universe is not None and len(universe) <= RANGE_SCAN_MAX:
            keys = universe if allowed is None else allowed
            keys = np.setdiff1d(keys, blocked) if len(blocked) else keys
            scores = self.score_keys(np.ascontiguousarray(query, dtype=np.float32), keys)
            keep = np.flatnonzero(scores >= np.float32(min_score))
            scores, keys = scores[keep], keys[keep]
            order = np.lexsort((keys, -scores))
            return scores[order][:max_results], keys[order][:max_results], len(order)
        if not self.exact:

            def fetch(k: int) -> list[SearchResult]:
                scores, keys = self.search(query[None], k, allowed, excluded, ef=RANGE_EF_FACTOR * k)
                return [
                    SearchResult(str(key), float(score), {})
                    for score, key in zip(scores[0], keys[0])
                    if key >= 0
                ]

            hits, truncated = grow_until_below(fetch, min_score, max_results, len(self))
            return (
                np.array([h.score for h in hits], dtype=np.float32),
                np.array([int(h.id) for h in hits], np.int64),
                None if truncated else len(hits),
            )
        selector: faiss.IDSelector | None = None
        if allowed is not None:
            allowed = np.setdiff1d(allowed, blocked) if len(blocked) else allowed
            if not len(allowed):
                return np.empty(0, np.float32), np.empty(0, np.int64), 0
            selector = _bitmap_selector(allowed)
        elif len(blocked):
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(blocked))
        # FAISS keeps inner products strictly above the radius: the float32 just below min_score
        radius = float(np.nextafter(np.float32(min_score), np.float32(-np.inf)))
        lims, scores, keys = self._index.range_search(
            np.ascontiguousarray(query[None], dtype=np.float32), radius, params=self._params(selector)
        )
        scores, keys = scores[lims[0] : lims[1]], keys[lims[0] : lims[1]]
        order = np.lexsort((keys, -scores))
        return scores[order][:max_results], keys[order][:max_results], len(order)

    def _scan(self, queries: np.ndarray, k: int, blocked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` over a Flat index's stored vectors as one BLAS product per chunk of
        queries, skipping ``blocked`` keys.

        Our own scan, not ``IndexFlatIP.search``: FAISS gives a single query one thread and its own
        inner-product loop, and collects batched results through heaps; a matrix-vector product
        over the same memory (read in place, no copy) is 1.5-1.8x faster for one query and several
        times faster for a batch (measured: docs/performance.md, bench/perf.py)."""
        out_scores, out_keys = _empty_result(len(queries), k)
        keys, vectors = self.flat_view()
        n = len(keys)
        if n == 0 or k < 1:
            return out_scores, out_keys
        want = min(k + len(blocked), n)  # blocked keys may take places in the top k
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        for start in range(0, len(queries), SCAN_QUERY_CHUNK):
            chunk = queries[start : start + SCAN_QUERY_CHUNK]
            top, top_scores = _scan_top(vectors, chunk, want)
            top_keys = keys[top]
            for row in range(len(chunk)):
                row_keys, row_scores = top_keys[row], top_scores[row]
                if len(blocked):
                    keep = ~np.isin(row_keys, blocked)
                    row_keys, row_scores = row_keys[keep], row_scores[keep]
                m = min(k, len(row_keys))
                out_keys[start + row, :m], out_scores[start + row, :m] = row_keys[:m], row_scores[:m]
        return out_scores, out_keys

    def flat_view(self) -> tuple[np.ndarray, np.ndarray]:
        """An exact Flat index's keys ``[n]`` and stored vectors ``[n, dim]``, read in place: views
        valid only until the next write (hold the catalogue's read lock while using them)."""
        assert self.exact, "flat_view is for exact Flat indexes"
        flat: Any = faiss.downcast_index(self._index.index)
        n, d = int(flat.ntotal), self.dim
        if n == 0:
            return np.empty(0, dtype=np.int64), np.empty((0, d), dtype=np.float32)
        return (
            faiss.rev_swig_ptr(self._index.id_map.data(), n),
            faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d),
        )

    def score_keys(self, query: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Inner products ``[n]`` of ``query`` ``[dim]`` with the stored vectors of live ``keys`` ``[n]``
        (decoded a block at a time)."""
        out = np.empty(len(keys), dtype=np.float32)
        for lo in range(0, len(keys), SUBSET_BLOCK):
            out[lo : lo + SUBSET_BLOCK] = self.reconstruct(keys[lo : lo + SUBSET_BLOCK]) @ query
        return out

    def _params(self, selector: faiss.IDSelector | None, ef: int | None = None) -> faiss.SearchParameters:
        """Fresh per call: IndexIDMap temporarily rewrites ``params.sel`` during a search."""
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]  # missing from the stubs
                efSearch=max(int(self._core.hnsw.efSearch), ef or 0)
            )
        elif self.kind == "ivf":
            # the Python wrapper (class_wrappers.handle_SearchParameters) takes field values as keywords;
            # the stubs only model the bare SWIG constructor
            params = faiss.SearchParametersIVF(nprobe=int(self._core.nprobe))  # type: ignore[call-arg]
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        return params

    def _search_subset(self, queries: np.ndarray, k: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` among the stored vectors of ``keys`` only (decoded a block at a time)."""
        top = min(k, len(keys))
        found_scores, found_keys = [], []
        for lo in range(0, len(keys), SUBSET_BLOCK):
            block = keys[lo : lo + SUBSET_BLOCK]
            scores, positions = faiss.knn(
                queries, self.reconstruct(block), min(top, len(block)), metric=faiss.METRIC_INNER_PRODUCT
            )
            found_scores.append(scores)
            found_keys.append(np.where(positions >= 0, block[np.maximum(positions, 0)], -1))
        all_scores, all_keys = np.concatenate(found_scores, axis=1), np.concatenate(found_keys, axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, :top]
        out_scores, out_keys = _empty_result(len(queries), k)
        out_scores[:, :top] = np.take_along_axis(all_scores, order, axis=1)
        out_keys[:, :top] = np.take_along_axis(all_keys, order, axis=1)
        return out_scores, out_keys

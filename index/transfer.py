"""Opening a catalogue by its location, whatever the backend, and copying one into another (a FAISS
directory into a Milvus collection for replicas, or back)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .catalogue import CatalogueIndex
from .interface import Catalogue
from .milvus import MilvusCatalogue, is_milvus


def open_catalogue(location: str | Path, expected_fingerprint: str | None = None, writer: bool = False) -> Catalogue:
    """A Milvus location (`milvus://...`, `milvus-lite:...`) or an index directory."""
    if isinstance(location, str) and is_milvus(location):
        return MilvusCatalogue.load(location, expected_fingerprint)
    return CatalogueIndex.load(location, expected_fingerprint=expected_fingerprint, writer=writer)


def copy_catalogue(source: Catalogue, destination: str | Path, index_type: str | None = None, batch_size: int = 1000,
                   progress: Callable[[int], object] = lambda n: None, layout: str = "fields") -> Catalogue:
    """Every item of `source` (vectors, metadata) into a new catalogue at `destination`, which must
    not exist: a Milvus collection (`index_type`: FLAT, HNSW, IVF_SQ8 ...; default FLAT) or an index
    directory (`index_type`: a FAISS factory string; default Flat). `layout`: the Milvus layout
    (`fields`, or `rows` for Milvus before 2.4). `progress(n)` after each batch."""
    target: Catalogue
    if isinstance(destination, str) and is_milvus(destination):
        target = MilvusCatalogue.create(destination, source.attributes, source.dim, source.fingerprint,
                                        index_type or "FLAT", layout=layout)
    else:
        if Path(destination).exists() and any(Path(destination).iterdir()):
            raise ValueError(f"{destination} exists and is not empty")
        target = CatalogueIndex.create(source.attributes, source.dim, source.fingerprint, index_type or "Flat")
    for ids, vectors, metadata in source.iter_items(batch_size):
        target.add(ids, vectors, metadata)
        progress(len(ids))
    if isinstance(target, CatalogueIndex):
        target.save(destination)
    else:
        target.checkpoint()
    return target

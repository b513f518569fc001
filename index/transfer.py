"""Opening a catalogue by its location, whatever the backend, and filling a new one from batches of
items: a copy of another catalogue (a FAISS directory into a Milvus collection for replicas, or
back), or the shards of a distributed encoding."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .catalogue import CatalogueIndex
from .interface import Catalogue
from .milvus import MilvusCatalogue, is_milvus

Batch = tuple[list[str], np.ndarray, list[dict[str, Any]]]  # ids, vectors [n, n_attributes, dim], metadata


def open_catalogue(location: str | Path, expected_fingerprint: str | None = None, writer: bool = False) -> Catalogue:
    """A Milvus location (`milvus://...`, `milvus-lite:...`) or an index directory."""
    if isinstance(location, str) and is_milvus(location):
        return MilvusCatalogue.load(location, expected_fingerprint)
    return CatalogueIndex.load(location, expected_fingerprint=expected_fingerprint, writer=writer)


def fill_catalogue(destination: str | Path, attributes: Sequence[str], dim: int, fingerprint: str,
                   batches: Iterable[Batch], index_type: str | None = None, layout: str = "fields",
                   progress: Callable[[int], object] = lambda n: None) -> Catalogue:
    """A new catalogue at `destination`, which must not exist: a Milvus collection (`index_type`:
    FLAT, HNSW, IVF_SQ8 ...; default FLAT; `layout`: fields, or rows for Milvus before 2.4) or an
    index directory (`index_type`: a FAISS factory string; default Flat), holding every batch.
    `progress(n)` after each batch."""
    target: Catalogue
    if isinstance(destination, str) and is_milvus(destination):
        target = MilvusCatalogue.create(destination, attributes, dim, fingerprint, index_type or "FLAT", layout=layout)
    else:
        if Path(destination).exists() and any(Path(destination).iterdir()):
            raise ValueError(f"{destination} exists and is not empty")
        target = CatalogueIndex.create(attributes, dim, fingerprint, index_type or "Flat")
    for ids, vectors, metadata in batches:
        if ids:
            target.add(ids, vectors, metadata)
        progress(len(ids))
    if isinstance(target, CatalogueIndex):
        target.save(destination)
    else:
        target.checkpoint()
    return target


def copy_catalogue(source: Catalogue, destination: str | Path, index_type: str | None = None, batch_size: int = 1000,
                   progress: Callable[[int], object] = lambda n: None, layout: str = "fields") -> Catalogue:
    """Every item of `source` (vectors, metadata) into a new catalogue at `destination` (see
    `fill_catalogue`)."""
    return fill_catalogue(destination, source.attributes, source.dim, source.fingerprint,
                          source.iter_items(batch_size), index_type, layout, progress)

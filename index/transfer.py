"""Opening a catalogue by its location, whatever the engine (the one way the server, `asen check`,
`asen scan`, the copy and the loaders open one), and filling a new one from batches of items: a copy
of another catalogue (an index directory into a Milvus collection for replicas, or back), or the
shards of a distributed encoding."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .errors import CatalogueExists
from .faiss_catalogue import FaissCatalogue
from .interface import Batch, Catalogue
from .milvus.location import is_milvus


def open_catalogue(
    location: str | Path, expected_fingerprint: str | None = None, writer: bool = False, mmap: bool = False
) -> Catalogue:
    """The catalogue at `location`: a Milvus location (`milvus://...`, `milvus-lite:...`) or an index
    directory. `writer` takes an index directory's writer lock (a Milvus collection has a writer
    lease per write instead); `mmap` maps an index directory's vectors read-only."""
    if isinstance(location, str) and is_milvus(location):
        if mmap:
            raise ValueError("memory-mapping applies to index directories, not to a Milvus collection")
        from .milvus import MilvusCatalogue

        return MilvusCatalogue.load(location, expected_fingerprint)
    return FaissCatalogue.load(location, expected_fingerprint=expected_fingerprint, writer=writer, mmap=mmap)


def new_catalogue(
    destination: str | Path,
    attributes: Sequence[str],
    dim: int,
    fingerprint: str,
    index_type: str | None = None,
    layout: str = "fields",
) -> Catalogue:
    """An empty catalogue that will live at `destination` (which must not hold one): a Milvus
    collection (`index_type`: FLAT, HNSW, IVF_SQ8 ...; default FLAT; `layout`: fields, or rows for
    Milvus before 2.4) or an index directory (`index_type`: a FAISS factory string; default Flat),
    written there by `commit_new`."""
    if isinstance(destination, str) and is_milvus(destination):
        from .milvus import MilvusCatalogue

        return MilvusCatalogue.create(
            destination, attributes, dim, fingerprint, index_type or "FLAT", layout=layout
        )
    if Path(destination).exists() and any(p.name != "LOCK" for p in Path(destination).iterdir()):
        raise CatalogueExists(f"{destination} exists and is not empty: give a new directory")
    return FaissCatalogue.create(list(attributes), dim, fingerprint, index_type or "Flat")


def commit_new(catalogue: Catalogue, destination: str | Path) -> None:
    """Make a catalogue from `new_catalogue` durable at its destination."""
    if isinstance(catalogue, FaissCatalogue):
        catalogue.save(destination)
    else:
        catalogue.checkpoint()


def fill_catalogue(
    destination: str | Path,
    attributes: Sequence[str],
    dim: int,
    fingerprint: str,
    batches: Iterable[Batch],
    index_type: str | None = None,
    layout: str = "fields",
    progress: Callable[[int], object] = lambda n: None,
) -> Catalogue:
    """A new catalogue at `destination` (see `new_catalogue`) holding every batch; `progress(n)`
    after each batch."""
    target = new_catalogue(destination, attributes, dim, fingerprint, index_type, layout)
    try:
        for ids, vectors, metadata in batches:
            if ids:
                target.add(ids, vectors, metadata)
            progress(len(ids))
        commit_new(target, destination)
    except BaseException:
        target.close()
        raise
    return target


def copy_catalogue(
    source: Catalogue,
    destination: str | Path,
    index_type: str | None = None,
    batch_size: int = 1000,
    progress: Callable[[int], object] = lambda n: None,
    layout: str = "fields",
    carry: Callable[[Batch], Batch] = lambda batch: batch,
) -> Catalogue:
    """Every item of `source` (vectors, metadata) into a new catalogue at `destination` (see
    `fill_catalogue`); `carry` may rewrite each batch on the way (the service's uploaded images)."""
    return fill_catalogue(
        destination,
        source.attributes,
        source.dim,
        source.fingerprint,
        (carry(batch) for batch in source.iter_items(batch_size)),
        index_type,
        layout,
        progress,
    )

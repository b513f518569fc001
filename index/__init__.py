"""The catalogue: items searchable per attribute, behind one front (`Catalogue`,
index/interface.py) over two engines: the FAISS directory (`FaissCatalogue`, the default) and Milvus
(`MilvusCatalogue`, index/milvus/). numpy + faiss only (never torch)::

    cat = FaissCatalogue.create(["colour", "sleeve"], dim=128, fingerprint=model_fingerprint)
    cat.add(ids, vectors, metadata)            # vectors: float32 [n, n_attributes, dim]
    hits = cat.search(q, "colour", k=10, filters={"category": ["dress", "skirt"], "price": {"lt": 50}})
    cat.save("var/index")
    cat = open_catalogue("var/index", expected_fingerprint=model_fingerprint)   # or milvus://HOST:PORT/NAME
"""

from .attribute_index import AttributeIndex, SearchKnobs
from .composed import COMPOSED_CANDIDATES
from .composed_parts import Part
from .directory import StaleCatalogue
from .dirlock import DirectoryLock, DirectoryLocked, DirectoryUnwritable
from .errors import (
    CatalogueBusy,
    CatalogueError,
    CatalogueExists,
    FingerprintMismatch,
    IndexFormatError,
    InvalidFilters,
    InvalidInput,
    InvalidItemId,
    InvalidMetadata,
    InvalidVectors,
    ItemExists,
    ReadOnlyCatalogue,
    UnknownAttribute,
    UnknownItem,
)
from .faiss_catalogue import FaissCatalogue
from .filters import Filter, parse_filters
from .interface import Catalogue
from .repair import RepairReport, repair_log
from .results import Item, ItemPage, RemoveResult, SearchResult
from .store import FORMAT_VERSION, read_manifest
from .transfer import open_catalogue
from .validation import MAX_ID_LENGTH, validate_id
from .wal import NO_SPACE_ERRNOS, LogCorrupt, LogUnavailable, RecordTooLarge

__all__ = [
    "COMPOSED_CANDIDATES",
    "FORMAT_VERSION",
    "MAX_ID_LENGTH",
    "NO_SPACE_ERRNOS",
    "AttributeIndex",
    "Catalogue",
    "CatalogueBusy",
    "CatalogueError",
    "CatalogueExists",
    "FaissCatalogue",
    "DirectoryLock",
    "DirectoryLocked",
    "DirectoryUnwritable",
    "Filter",
    "FingerprintMismatch",
    "IndexFormatError",
    "InvalidFilters",
    "InvalidInput",
    "InvalidItemId",
    "InvalidMetadata",
    "InvalidVectors",
    "Item",
    "ItemExists",
    "ItemPage",
    "LogCorrupt",
    "LogUnavailable",
    "Part",
    "RecordTooLarge",
    "RemoveResult",
    "RepairReport",
    "ReadOnlyCatalogue",
    "SearchKnobs",
    "SearchResult",
    "StaleCatalogue",
    "UnknownAttribute",
    "UnknownItem",
    "open_catalogue",
    "parse_filters",
    "read_manifest",
    "repair_log",
    "validate_id",
]

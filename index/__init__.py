"""Per-attribute vector indexes for the catalogue: numpy + faiss only (never torch).

``CatalogueIndex`` is the entry point::

    cat = CatalogueIndex.create(["colour", "sleeve"], dim=128, fingerprint=model_fingerprint)
    cat.add(ids, vectors, metadata)            # vectors: float32 [n, n_attributes, dim]
    hits = cat.search(q, "colour", k=10, filters={"category": ["dress", "skirt"]})
    cat.save("var/index")
    cat = CatalogueIndex.load("var/index", expected_fingerprint=model_fingerprint)
"""

from .attribute_index import AttributeIndex, SearchKnobs
from .catalogue import CatalogueIndex, StaleCatalogue
from .composed import COMPOSED_CANDIDATES, Part
from .dirlock import DirectoryLock, DirectoryLocked, DirectoryUnwritable
from .errors import (
    CatalogueBusy,
    CatalogueError,
    FingerprintMismatch,
    IndexFormatError,
    ReadOnlyCatalogue,
    UnknownItem,
)
from .ids import MAX_ID_LENGTH, validate_id
from .interface import Catalogue
from .repair import RepairReport, repair_log
from .results import Item, RemoveResult, SearchResult
from .store import FORMAT_VERSION, read_manifest
from .wal import NO_SPACE_ERRNOS, LogCorrupt, LogUnavailable, RecordTooLarge

__all__ = [
    "COMPOSED_CANDIDATES",
    "Part",
    "FORMAT_VERSION",
    "MAX_ID_LENGTH",
    "NO_SPACE_ERRNOS",
    "AttributeIndex",
    "Catalogue",
    "CatalogueBusy",
    "CatalogueError",
    "CatalogueIndex",
    "DirectoryLock",
    "DirectoryLocked",
    "DirectoryUnwritable",
    "FingerprintMismatch",
    "IndexFormatError",
    "Item",
    "LogCorrupt",
    "LogUnavailable",
    "RecordTooLarge",
    "RepairReport",
    "ReadOnlyCatalogue",
    "RemoveResult",
    "SearchKnobs",
    "SearchResult",
    "StaleCatalogue",
    "UnknownItem",
    "read_manifest",
    "repair_log",
    "validate_id",
]

"""The Milvus engine of the catalogue front (index/interface.py): `MilvusCatalogue` on a Milvus server
or a Milvus Lite file. pymilvus is optional (`pip install 'asen-search[milvus]'`) and imported only
when a catalogue is opened."""

from .catalogue import INDEX_TYPES, MAX_TOP_K, MilvusCatalogue
from .expressions import filter_expression, filter_terms
from .layouts import LAYOUTS
from .location import LITE_SCHEME, SCHEME, MilvusLocation, MilvusUnavailable, is_milvus

__all__ = [
    "INDEX_TYPES",
    "LAYOUTS",
    "LITE_SCHEME",
    "MAX_TOP_K",
    "SCHEME",
    "MilvusCatalogue",
    "MilvusLocation",
    "MilvusUnavailable",
    "filter_expression",
    "filter_terms",
    "is_milvus",
]

"""The two ways a catalogue is laid out in one Milvus collection.

- `FieldsLayout` (`fields`): one row per item, primary key `id`, one FLOAT_VECTOR field per
  attribute (`v0`, `v1`, ...). An item is one entity: a write or a delete changes all its vectors
  and its metadata at once. Milvus 2.4 and later (a server allows 4 vector fields per collection
  unless `proxy.maxVectorFieldNum` is raised, up to 10: docs/scale.md).
- `RowsLayout` (`rows`): one row per item and attribute (primary key `<attribute>:<id>`, fields
  `item` and `attribute`, one vector field `v`), the metadata on every row. Any Milvus from 2.3, any
  number of attributes. An item's rows are written in one request to a one-shard collection, so they
  become visible together. `attribute` is a plain field, not a partition key: on Milvus 2.3.5, rows
  written by upsert into a partition-key collection are not found by a filter on the key (measured:
  `attribute == 0` counted 0 of 2 upserted rows).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..validation import MAX_ID_LENGTH
from .expressions import filter_terms, join, literal_list


class Layout(ABC):
    name: str
    item_field: str  # the field holding an item's id

    def __init__(self, n_attributes: int, terms_version: str | None) -> None:
        self.n_attributes, self.terms_version = n_attributes, terms_version

    @abstractmethod
    def add_fields(self, schema: Any, dim: int, data_type: Any) -> list[str]:
        """Add the layout's own fields to `schema`; returns the vector fields to index."""

    @abstractmethod
    def entities(
        self, ids: list[str], vectors: np.ndarray, metas: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The rows of items `ids` (vectors `[n, n_attributes, dim]`)."""

    @abstractmethod
    def vector_field(self, attribute: int) -> str: ...

    @abstractmethod
    def one_row(self, attribute: int | None = None) -> str:
        """A filter keeping one row per item (of `attribute`, default the first)."""

    def id_of(self, row: dict[str, Any]) -> str:
        """The item id of a query row or a search hit."""
        return str(row.get(self.item_field, row.get("entity", {}).get(self.item_field)))

    def ids_filter(self, ids: list[str], attribute: int | None = None) -> str:
        return join(self.one_row(attribute), f"{self.item_field} in {literal_list(ids)}")

    def delete_filter(self, ids: list[str]) -> str:
        """Every row of items `ids`."""
        return f"{self.item_field} in {literal_list(ids)}"

    def _terms(self, meta: dict[str, Any]) -> dict[str, Any]:
        return filter_terms(meta, self.terms_version)


class FieldsLayout(Layout):
    name, item_field = "fields", "id"

    def add_fields(self, schema: Any, dim: int, data_type: Any) -> list[str]:
        schema.add_field("id", data_type.VARCHAR, is_primary=True, max_length=4 * MAX_ID_LENGTH + 8)
        return [f"v{a}" for a in range(self.n_attributes)]

    def entities(
        self, ids: list[str], vectors: np.ndarray, metas: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return [
            {
                "id": i,
                "meta": m,
                "terms": self._terms(m),
                **{f"v{a}": vectors[n, a].tolist() for a in range(self.n_attributes)},
            }
            for n, (i, m) in enumerate(zip(ids, metas))
        ]

    def vector_field(self, attribute: int) -> str:
        return f"v{attribute}"

    def one_row(self, attribute: int | None = None) -> str:
        return ""


class RowsLayout(Layout):
    name, item_field = "rows", "item"

    def add_fields(self, schema: Any, dim: int, data_type: Any) -> list[str]:
        schema.add_field("id", data_type.VARCHAR, is_primary=True, max_length=4 * MAX_ID_LENGTH + 8)
        schema.add_field("item", data_type.VARCHAR, max_length=4 * MAX_ID_LENGTH)
        schema.add_field("attribute", data_type.INT64)
        return ["v"]

    def entities(
        self, ids: list[str], vectors: np.ndarray, metas: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return [
            {
                "id": f"{a}:{i}",
                "item": i,
                "attribute": a,
                "meta": m,
                "terms": terms,
                "v": vectors[n, a].tolist(),
            }
            for n, (i, m) in enumerate(zip(ids, metas))
            for terms in [self._terms(m)]
            for a in range(self.n_attributes)
        ]

    def vector_field(self, attribute: int) -> str:
        return "v"

    def one_row(self, attribute: int | None = None) -> str:
        return f"attribute == {attribute or 0}"


LAYOUTS: dict[str, type[Layout]] = {"fields": FieldsLayout, "rows": RowsLayout}

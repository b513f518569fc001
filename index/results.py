"""Small immutable values returned by the catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SearchResult:
    """One hit: the item's id, its inner-product score with the query, its metadata."""

    id: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Item:
    id: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class RemoveResult:
    """Ids that were removed, and requested ids that were not in the catalogue."""

    removed: list[str]
    unknown: list[str]


@dataclass(frozen=True)
class ItemPage:
    """A page of a listing: its items, and the id to list after for the next page (None: the last)."""

    items: list[Item]
    next_after: str | None

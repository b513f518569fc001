"""Per-item metadata of the FAISS directory engine, with the indexes that turn a parsed filter
(index/filters.py) into key sets: field -> term -> keys for equality, field -> number -> keys for
ranges, field -> keys for presence."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .filters import Condition, Filter, FilterValue, Term, number_of, parse_filters, terms_of
from .validation import check_metadata

__all__ = ["FilterValue", "MetadataStore", "check_metadata"]


class MetadataStore:
    """Metadata by key, and the inverted indexes filters are evaluated with."""

    def __init__(self) -> None:
        self._by_key: dict[int, dict[str, Any]] = {}
        self._inverted: dict[str, dict[Term, set[int]]] = {}
        self._numbers: dict[str, dict[float, set[int]]] = {}
        self._present: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: int) -> dict[str, Any]:
        return self._by_key[key]

    def put(self, key: int, metadata: dict[str, Any]) -> None:
        """Store already-checked metadata for a key not yet present."""
        assert key not in self._by_key, key
        self._by_key[key] = metadata
        for field, value in metadata.items():
            self._present.setdefault(field, set()).add(key)
            postings = self._inverted.setdefault(field, {})
            for term in terms_of(value):
                postings.setdefault(term, set()).add(key)
            number = number_of(value)
            if number is not None:
                self._numbers.setdefault(field, {}).setdefault(number, set()).add(key)

    def drop(self, key: int) -> dict[str, Any]:
        """Remove a key's metadata from the store and the indexes."""
        metadata = self._by_key.pop(key)
        for field, value in metadata.items():
            _discard(self._present, field, key)
            postings = self._inverted[field]
            for term in terms_of(value):
                _discard(postings, term, key)
            number = number_of(value)
            if number is not None:
                _discard(self._numbers[field], number, key)
        return metadata

    def match(self, filters: Filter | dict[str, FilterValue]) -> np.ndarray:
        """Keys ``[m]`` int64 (ascending) of the items the filter lets through (index/filters.py)."""
        result: set[int] | None = None
        for condition in parse_filters(filters).ordered():
            if condition.negative:
                base = set(self._by_key) if result is None else result
                result = base - self._keys(condition)
            else:
                found = self._keys(condition)
                result = found if result is None else result & found
            if not result:
                break
        keys = np.fromiter(result if result is not None else self._by_key, dtype=np.int64)
        keys.sort()
        return keys

    def _keys(self, condition: Condition) -> set[int]:
        """The keys meeting `condition`, or for a negative one the keys it excludes."""
        field = condition.field
        if condition.op == "exists":
            return set(self._present.get(field, ()))
        if condition.op == "range":
            numbers = self._numbers.get(field, {})
            return set().union(*(keys for number, keys in numbers.items() if condition.in_range(number)))
        postings = self._inverted.get(field, {})
        return set().union(*(postings.get(t, set()) for t in condition.terms))

    def items(self) -> Iterable[tuple[int, dict[str, Any]]]:
        return self._by_key.items()


def _discard(postings: dict[Any, set[int]], term: Any, key: int) -> None:
    keys = postings.get(term)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del postings[term]

"""Per-item metadata plus an inverted index (field -> value -> keys) for filtered search."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

Scalar = str | int | float | bool | None
FilterValue = Scalar | list[Scalar] | tuple[Scalar, ...] | set[Scalar]


def _term(value: Scalar) -> tuple[bool, Scalar]:
    """Hashable term for a scalar; keeps ``True`` and ``1`` apart."""
    return (isinstance(value, bool), value)


def _terms(value: Any) -> list[tuple[bool, Scalar]]:
    """Indexable terms of a metadata value: the scalar itself, or each scalar of a list."""
    if isinstance(value, list):
        return [_term(v) for v in value if v is None or isinstance(v, (str, int, float, bool))]
    if value is None or isinstance(value, (str, int, float, bool)):
        return [_term(value)]
    return []


def check_metadata(metadata: object) -> dict[str, Any]:
    """A JSON object with string keys; returned as an independent copy."""
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    if any(not isinstance(field, str) for field in metadata):
        raise ValueError("metadata keys must be strings")
    try:
        text = json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from None
    copy: dict[str, Any] = json.loads(text)
    return copy


class MetadataStore:
    """Metadata by key and the inverted index used to turn filters into key sets."""

    def __init__(self) -> None:
        self._by_key: dict[int, dict[str, Any]] = {}
        self._inverted: dict[str, dict[tuple[bool, Scalar], set[int]]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: int) -> dict[str, Any]:
        return self._by_key[key]

    def put(self, key: int, metadata: dict[str, Any]) -> None:
        """Store already-checked metadata for a key not yet present."""
        assert key not in self._by_key, key
        self._by_key[key] = metadata
        for field, value in metadata.items():
            postings = self._inverted.setdefault(field, {})
            for term in _terms(value):
                postings.setdefault(term, set()).add(key)

    def drop(self, key: int) -> dict[str, Any]:
        """Remove a key's metadata from the store and the inverted index."""
        metadata = self._by_key.pop(key)
        for field, value in metadata.items():
            postings = self._inverted[field]
            for term in _terms(value):
                keys = postings.get(term)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del postings[term]
        return metadata

    def match(self, filters: Mapping[str, FilterValue]) -> np.ndarray:
        """Keys ``[m]`` int64 (ascending) of items matching every filter.

        A filter is ``field: value`` (equality) or ``field: [v1, v2, ...]`` (any of them). A
        metadata field holding a list matches when any of its elements matches.
        """
        result: set[int] | None = None
        for field, wanted in filters.items():
            values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
            postings = self._inverted.get(field, {})
            matched: set[int] = set()
            for value in values:
                if not (value is None or isinstance(value, (str, int, float, bool))):
                    raise ValueError(f"filter values must be str, int, float, bool or None, got {value!r}")
                matched |= postings.get(_term(value), set())
            result = matched if result is None else result & matched
            if not result:
                break
        keys = np.fromiter(result or (), dtype=np.int64)
        keys.sort()
        return keys

    def items(self) -> Iterable[tuple[int, dict[str, Any]]]:
        return self._by_key.items()

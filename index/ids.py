"""Stable mapping between the catalogue's string ids and FAISS int64 keys.

Keys are handed out by a counter that only grows, so a key that belonged to a removed (or
replaced) item is never given to another item: a stale key can never point at the wrong item.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from .errors import InvalidItemId, UnknownItem
from .validation import MAX_ID_LENGTH, validate_id

__all__ = ["MAX_ID_LENGTH", "IdMap", "check_id_batch", "validate_id"]


class IdMap:
    """Two-way map ``str id <-> int64 key`` with a never-decreasing key counter."""

    def __init__(self, pairs: Iterable[tuple[str, int]] = (), next_key: int = 0) -> None:
        self._key_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        for item_id, key in pairs:
            self._key_of[item_id] = int(key)
            self._id_of[int(key)] = item_id
        if len(self._id_of) != len(self._key_of):
            raise ValueError("id map has duplicate keys")
        self._next = max(int(next_key), max(self._id_of, default=-1) + 1)
        self._sorted = sorted(self._key_of)  # the ids in code-point order, for listing with a cursor

    def __len__(self) -> int:
        return len(self._key_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._key_of

    def __iter__(self) -> Iterator[str]:
        """Ids in the order their current keys were assigned (last add or upsert)."""
        return iter(sorted(self._key_of, key=self._key_of.__getitem__))

    @property
    def next_key(self) -> int:
        """The key the next new item will get (one more than any key ever handed out)."""
        return self._next

    def assign(self, item_id: str) -> int:
        """Give ``item_id`` (not currently mapped) a fresh key and return it."""
        assert item_id not in self._key_of, item_id
        key = self._next
        self._next += 1
        self._key_of[item_id] = key
        self._id_of[key] = item_id
        bisect.insort(self._sorted, item_id)
        return key

    def release(self, item_id: str) -> int:
        """Forget ``item_id`` and return its key; the key is retired, never reused."""
        key = self._key_of.pop(item_id)
        del self._id_of[key]
        del self._sorted[bisect.bisect_left(self._sorted, item_id)]
        return key

    def ids_after(self, after: str | None, limit: int, keep: set[int] | None = None) -> list[str]:
        """Up to `limit` ids after `after` in code-point order (the first ones when None), only those
        whose key is in `keep` when given."""
        start = 0 if after is None else bisect.bisect_right(self._sorted, after)
        if keep is None:
            return self._sorted[start : start + limit]
        found: list[str] = []
        for position in range(start, len(self._sorted)):
            if self._key_of[self._sorted[position]] in keep:
                found.append(self._sorted[position])
                if len(found) == limit:
                    break
        return found

    def key(self, item_id: str) -> int:
        """The key of ``item_id``; KeyError if it is not in the catalogue."""
        try:
            return self._key_of[item_id]
        except KeyError:
            raise UnknownItem(item_id) from None

    def get_key(self, item_id: str) -> int | None:
        return self._key_of.get(item_id)

    def keys_of(self, item_ids: Iterable[str]) -> np.ndarray:
        """Keys ``[n]`` int64 of ids that are present; unknown ids are skipped."""
        keys = [self._key_of[i] for i in item_ids if i in self._key_of]
        return np.asarray(keys, dtype=np.int64)

    def id_of(self, key: int) -> str:
        return self._id_of[int(key)]

    def all_keys(self) -> np.ndarray:
        """Every live key ``[n]`` int64, ascending."""
        return np.fromiter(sorted(self._id_of), dtype=np.int64, count=len(self._id_of))

    def pairs(self) -> list[tuple[str, int]]:
        """``(id, key)`` pairs in key order, for persistence."""
        return sorted(self._key_of.items(), key=lambda pair: pair[1])


def check_id_batch(ids: Sequence[str]) -> list[str]:
    """Valid ids, none twice in the batch (TypeError for a lone str, ValueError otherwise)."""
    if isinstance(ids, str):
        raise InvalidItemId("pass a sequence of ids, not a single str")
    checked = [validate_id(item_id) for item_id in ids]
    if len(set(checked)) != len(checked):
        dupes = sorted(i for i, n in Counter(checked).items() if n > 1)
        raise InvalidItemId(f"duplicate ids in one batch: {dupes[:5]}")
    return checked

"""Checks on vectors and queries at the package boundary (shapes, dtype, finiteness)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _as_float32(array: object, what: str) -> np.ndarray:
    arr = np.asarray(array)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what} must be a floating-point array (float32), got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def check_item_vectors(vectors: object, n_items: int, n_attr: int, dim: int) -> np.ndarray:
    """Validate item vectors; returns C-contiguous float32 ``[n_items, n_attr, dim]``."""
    arr = _as_float32(vectors, "vectors")
    expected = (n_items, n_attr, dim)
    if arr.shape != expected:
        raise ValueError(
            f"vectors must have shape [n_items, n_attributes, dim] = {list(expected)}, got {list(arr.shape)}"
        )
    return arr


def check_queries(query: object, dim: int) -> tuple[np.ndarray, bool]:
    """Validate a query ``[dim]`` or a batch ``[n, dim]``.

    Returns the batch as float32 ``[n, dim]`` and whether the input was a single vector.
    """
    arr = _as_float32(query, "query vectors")
    single = arr.ndim == 1
    batch = arr[None, :] if single else arr
    if batch.ndim != 2 or batch.shape[1] != dim or batch.shape[0] == 0:
        raise ValueError(f"query must have shape [{dim}] or [n, {dim}] (n >= 1), got {list(arr.shape)}")
    return batch, single


def check_k(k: object) -> int:
    """``k`` must be a positive int."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_filters_exclude(filters: object, exclude: str | Sequence[str]) -> list[str]:
    """ValueError unless `filters` is None or a mapping; the excluded ids as a list (one id given
    as a str is one id, not its characters)."""
    if filters is not None and not isinstance(filters, Mapping):
        raise ValueError(f"filters must be a dict of field -> value(s), got {type(filters).__name__}")
    return [exclude] if isinstance(exclude, str) else list(exclude)

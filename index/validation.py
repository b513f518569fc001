"""Checks on everything sent to a catalogue, made once by the catalogue front (index/interface.py)
before any engine sees it, so that every engine refuses the same inputs with the same error:
item ids, vectors, queries, metadata, text and numbers (filters: index/filters.py)."""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InvalidInput, InvalidItemId, InvalidMetadata, InvalidVectors

MAX_ID_LENGTH = 512
MAX_KEY_LENGTH = 256  # a metadata key or a filter's field name
MAX_METADATA_BYTES = 65_536  # an item's metadata as compact UTF-8 JSON: what a Milvus JSON field holds
MAX_METADATA_DEPTH = 16  # nested objects and lists
# Every number (an integer or a float, however it is written) lies strictly within +-2**63: engines
# store JSON integers in 64 bits, and one bound for both kinds means 1e19 and 10000000000000000000 are
# refused alike (an OpenAPI schema, which cannot tell how a number is spelled, says the same).
NUMBER_BOUND = 2**63
_TEXT_CONTROLS_ALLOWED = frozenset("\t\n\r")


def check_text(text: str, what: str, controls: bool = False, error: type[InvalidInput] = InvalidInput) -> str:
    """`text` unless it holds a lone surrogate (not Unicode: no engine can store it) or a control
    character (allowed, with `controls`, only tab, newline and carriage return)."""
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cs":
            raise error(
                f"{what} {text[:40]!r} contains a lone surrogate ({char!r} at position {position}): "
                "not valid Unicode text"
            )
        if category == "Cc" and not (controls and char in _TEXT_CONTROLS_ALLOWED):
            allowed = "; only tab, newline and carriage return are allowed" if controls else ""
            raise error(
                f"{what} {text[:40]!r} contains a control character ({char!r} at position {position})"
                + (allowed or "; NUL, newlines, tabs and other control characters are not allowed")
            )
    return text


def validate_id(item_id: object) -> str:
    """``item_id`` if it is a usable item id, else InvalidItemId saying why: a non-empty str of at
    most MAX_ID_LENGTH characters, no control characters, valid Unicode."""
    if not isinstance(item_id, str):
        raise InvalidItemId(f"item ids must be str, got {type(item_id).__name__}: {item_id!r}")
    if not item_id:
        raise InvalidItemId("item id must not be empty")
    if len(item_id) > MAX_ID_LENGTH:
        raise InvalidItemId(
            f"item id is {len(item_id)} characters long; the maximum is {MAX_ID_LENGTH}: {item_id[:40]!r}..."
        )
    return check_text(item_id, "item id", error=InvalidItemId)


def check_number(value: int | float, what: str, error: type[InvalidInput] = InvalidInput) -> int | float:
    """A finite number of magnitude below 2**63 (an integer: what 64 bits hold; a float: the same
    bound, so that how a number is written never changes whether it is taken)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{what}: {value!r} is not a finite number")
    if not -NUMBER_BOUND < value < NUMBER_BOUND:
        shown = (
            str(value)
            if isinstance(value, float)
            else f"{str(value)[:30]}{'...' if len(str(value)) > 30 else ''}"
        )
        raise error(
            f"{what}: {shown} is out of range: numbers lie strictly between -2**63 and 2**63 "
            f"(integers -{NUMBER_BOUND - 1} to {NUMBER_BOUND - 1})"
        )
    return value


def check_key(key: object, what: str, error: type[InvalidInput]) -> str:
    if not isinstance(key, str):
        raise error(f"{what} must be strings, got {type(key).__name__}: {key!r}")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise error(f"{what} must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}: {key[:40]!r}")
    return check_text(key, what, error=error)


def _check_json_value(value: object, path: str, depth: int) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int | float):
        check_number(value, f"metadata {path}", InvalidMetadata)
    elif isinstance(value, str):
        check_text(value, f"metadata {path}", controls=True, error=InvalidMetadata)
    elif isinstance(value, Mapping | list | tuple):
        if depth >= MAX_METADATA_DEPTH:
            raise InvalidMetadata(f"metadata {path} nests deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(value, Mapping):
            for key, inner in value.items():
                _check_json_value(
                    inner, f"{path}.{check_key(key, 'metadata keys', InvalidMetadata)}", depth + 1
                )
        else:
            for n, inner in enumerate(value):
                _check_json_value(inner, f"{path}[{n}]", depth + 1)
    else:
        raise InvalidMetadata(
            f"metadata {path} is a {type(value).__name__}: values must be JSON (str, number, "
            "bool, null, lists and objects of them)"
        )


def check_metadata(metadata: object) -> dict[str, Any]:
    """A JSON object within the limits (keys, depth, size, numbers of magnitude below 2**63,
    finite, valid text); returned as an independent copy. InvalidMetadata says what is wrong."""
    if not isinstance(metadata, Mapping):
        raise InvalidMetadata(f"metadata must be a JSON object, got {type(metadata).__name__}")
    _check_json_value(metadata, "$", 0)
    text = json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadata(f"metadata is {size} bytes of JSON; the maximum is {MAX_METADATA_BYTES}")
    copy: dict[str, Any] = json.loads(text)
    return copy


def _as_float32(array: object, what: str) -> np.ndarray:
    try:
        arr = np.asarray(array)
    except (TypeError, ValueError) as exc:
        raise InvalidVectors(f"{what} must be an array of numbers: {exc}") from None
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidVectors(f"{what} must be a floating-point array (float32), got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidVectors(f"{what} contain NaN or infinite values (or values beyond float32)")
    return arr


def check_item_vectors(vectors: object, n_items: int, n_attr: int, dim: int) -> np.ndarray:
    """Validate item vectors; returns C-contiguous float32 ``[n_items, n_attr, dim]``."""
    arr = _as_float32(vectors, "vectors")
    expected = (n_items, n_attr, dim)
    if arr.shape != expected:
        raise InvalidVectors(
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
        raise InvalidVectors(f"query must have shape [{dim}] or [n, {dim}] (n >= 1), got {list(arr.shape)}")
    return batch, single


def check_k(k: object, limit: int | None = None, what: str = "k") -> int:
    """``k`` must be a positive int (at most ``limit`` where an engine has one)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidInput(f"{what} must be a positive integer, got {k!r}")
    if limit is not None and k > limit:
        raise InvalidInput(f"{what} must be at most {limit} on this catalogue engine, got {k}")
    return int(k)


def check_ids(ids: Sequence[str] | str, what: str = "ids") -> list[str]:
    """Valid ids (one id given as a str is one id), duplicates dropped, order kept."""
    if isinstance(ids, str):
        ids = [ids]
    try:
        items = list(ids)
    except TypeError:
        raise InvalidItemId(f"{what} must be a list of item ids, got {type(ids).__name__}") from None
    return list(dict.fromkeys(validate_id(i) for i in items))

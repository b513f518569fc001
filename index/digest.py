"""What a catalogue holds, as one value to compare later: the item count and a digest of every item's
id, metadata and vectors, read through the front (any engine). A job that resumes (`asen scan`)
compares it with the one it recorded, to know whether its earlier results still hold."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from .interface import Catalogue

_DIGEST_MOD = 1 << 256


def content_state(
    catalogue: Catalogue, batch_size: int = 1000, progress: Callable[[int], object] = lambda n: None
) -> dict[str, Any]:
    """`{"items": n, "digest": hex}`. Each item is hashed (sha256 over its id and canonical metadata
    JSON, then its vectors as little-endian float32 with their shape) and the item hashes are summed
    modulo 2**256, so the digest does not depend on the order `iter_items` yields them in (which
    differs between engines and after compactions) and needs no memory beyond one batch. Any item
    added, removed, re-encoded or given other metadata changes it."""
    total, count = 0, 0
    for ids, vectors, metadata in catalogue.iter_items(batch_size):
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        for item_id, row, meta in zip(ids, rows, metadata, strict=True):
            item = hashlib.sha256(
                json.dumps(
                    [item_id, meta], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
                ).encode()
            )
            item.update(json.dumps(list(row.shape)).encode())
            item.update(row.tobytes())
            total = (total + int.from_bytes(item.digest(), "big")) % _DIGEST_MOD
        count += len(ids)
        progress(len(ids))
    return {"items": count, "digest": f"{total:064x}"}

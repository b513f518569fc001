"""A small FAISS directory catalogue for the write-ahead-log tests, and a real kernel limit on file size."""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from asen_search.index import FaissCatalogue

ATTRS = ["colour", "sleeve", "collar"]
DIM = 8


def vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, len(ATTRS), DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def opened(root: Path) -> FaissCatalogue:
    """The catalogue at `root` with its write-ahead log open (replayed)."""
    catalogue = FaissCatalogue.load(root)
    catalogue.open_log()
    return catalogue


@contextmanager
def file_size_limit(max_bytes: int) -> Iterator[None]:
    """A real kernel refusal (EFBIG) of writes past `max_bytes` in any file of this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)

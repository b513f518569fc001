"""Small synthetic catalogues for the index tests: the attributes, sizes and vectors every engine's
tests use (the engines themselves come from the `engine` and `make` fixtures, tests/index/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asen_search.index import FaissCatalogue

Make = Callable[[], Any]  # the `make` fixture: a factory of empty catalogues on one engine
ATTRIBUTES = ["colour", "sleeve", "neckline"]
DIM = 32
FINGERPRINT = "model-abc123"


def unit(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, n_attr: int = len(ATTRIBUTES), dim: int = DIM) -> np.ndarray:
    """Unit vectors ``[n, n_attr, dim]`` around 20 centres per attribute (structured, like embeddings)."""
    centres = rng.standard_normal((20, n_attr, dim))
    return unit(centres[rng.integers(0, 20, n)] + 0.35 * rng.standard_normal((n, n_attr, dim)))


def make_catalogue(
    n: int = 600, factory: str = "Flat", seed: int = 0
) -> tuple[FaissCatalogue, np.ndarray, list[str]]:
    """A catalogue of ``n`` items (``item-<i>``, category cycling shirt/dress/coat)."""
    rng = np.random.default_rng(seed)
    vectors = clustered(rng, n)
    ids = [f"item-{i}" for i in range(n)]
    metadata = [{"category": ["shirt", "dress", "coat"][i % 3], "i": i} for i in range(n)]
    catalogue = FaissCatalogue.create(ATTRIBUTES, DIM, FINGERPRINT, factory)
    catalogue.add(ids, vectors, metadata)
    return catalogue, vectors, ids

"""Small synthetic catalogues for the index tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asen_search.index import FaissCatalogue

ATTRIBUTES = ["colour", "sleeve", "neckline"]
DIM = 32
FINGERPRINT = "model-abc123"


def unit(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, n_attr: int = len(ATTRIBUTES), dim: int = DIM) -> np.ndarray:
    """Unit vectors ``[n, n_attr, dim]`` around 20 centres per attribute (structured, like embeddings)."""
    centres = rng.standard_normal((20, n_attr, dim))
    return unit(centres[rng.integers(0, 20, n)] + 0.35 * rng.standard_normal((n, n_attr, dim)))


def make_catalogue(n: int = 600, factory: str = "Flat", seed: int = 0) -> tuple[FaissCatalogue, np.ndarray, list[str]]:
    """A catalogue of ``n`` items (``item-<i>``, category cycling shirt/dress/coat)."""
    rng = np.random.default_rng(seed)
    vectors = clustered(rng, n)
    ids = [f"item-{i}" for i in range(n)]
    metadata = [{"category": ["shirt", "dress", "coat"][i % 3], "i": i} for i in range(n)]
    catalogue = FaissCatalogue.create(ATTRIBUTES, DIM, FINGERPRINT, factory)
    catalogue.add(ids, vectors, metadata)
    return catalogue, vectors, ids


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


Make = Callable[[], Any]
ENGINES = ["faiss", "milvus-lite", "milvus-lite-rows", pytest.param("milvus-server", marks=pytest.mark.slow)]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The name of a catalogue engine every contract test runs on: the FAISS directory, Milvus Lite in
    both layouts, and (slow) the embedded Milvus 2.3 server (`rows`: one vector field per collection)."""
    return str(request.param)


def milvus_location(engine: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> str:
    if engine == "milvus-server":
        return f"milvus://{request.getfixturevalue('milvus_server')}/{name}"
    return f"milvus-lite:{tmp_path}/c.db#{name}"


@pytest.fixture
def make(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """A factory of empty catalogues (ATTRIBUTES, DIM, FINGERPRINT) on one engine; server collections
    are dropped afterwards."""
    opened: list[Any] = []

    def new() -> Any:
        if engine == "faiss":
            catalogue: Any = FaissCatalogue.create(ATTRIBUTES, DIM, FINGERPRINT)
        else:
            from asen_search.index.milvus import MilvusCatalogue

            layout = "fields" if engine == "milvus-lite" else "rows"
            name = f"c{len(opened)}_{uuid.uuid4().hex[:8]}"
            catalogue = MilvusCatalogue.create(milvus_location(engine, request, tmp_path, name), ATTRIBUTES, DIM,
                                               FINGERPRINT, layout=layout)
        opened.append(catalogue)
        return catalogue

    yield new
    for catalogue in opened:
        if engine == "milvus-server":
            catalogue.drop()
        catalogue.close()

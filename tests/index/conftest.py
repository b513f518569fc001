"""Small synthetic catalogues for the index tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asen_search.index import FaissCatalogue
from tests.helpers.engines import ATTRIBUTES, DIM, FINGERPRINT, Make


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


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
            catalogue = MilvusCatalogue.create(
                milvus_location(engine, request, tmp_path, name), ATTRIBUTES, DIM, FINGERPRINT, layout=layout
            )
        opened.append(catalogue)
        return catalogue

    yield new
    for catalogue in opened:
        if engine == "milvus-server":
            catalogue.drop()
        catalogue.close()

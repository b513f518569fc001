"""Session fixtures (a tiny demo dataset, the map cache, the embedded Milvus server) and the markers of
each test's kind, applied by folder and fixture (the markers: pyproject.toml; the layout:
docs/architecture.md, "Tests")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.milvus_server import milvus_server  # noqa: F401 - the session fixture, for every test folder


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`browser` on the browser folder and on every test that asks for the browser fixture; `milvus` on
    every test of a Milvus engine (a Milvus parameter or module, or the embedded server fixture). Ray
    and Docker modules carry their marker themselves (`pytestmark`)."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        where = item.path.resolve().relative_to(ROOT).as_posix()
        if where.startswith("tests/service/browser/") or "browser" in names:
            item.add_marker(pytest.mark.browser)
        if "milvus" in item.nodeid.lower() or "milvus_server" in names:
            item.add_marker(pytest.mark.milvus)


@pytest.fixture(scope="session", autouse=True)
def map_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training map cache of this session (`$ASEN_CACHE_DIR`), never the user's own; tests that
    check the cache itself pass a `cache_dir` of their own."""
    import os

    path = tmp_path_factory.mktemp("asen-cache")
    os.environ["ASEN_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo dataset (the built-in generator), shared by the tests of a session."""
    from asen_search.model.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("demo")
    generate_dataset(root, n_train=300, n_valid=150, n_test=300, seed=3, progress=False)
    return root

"""Shared fixtures: a tiny demo dataset and tiny model configurations that run in seconds."""
from __future__ import annotations

from pathlib import Path

import pytest

from asen_search.model.config import BranchConfig, ModelConfig
from tests.milvus_server import milvus_server  # noqa: F401 - the session fixture, for every test folder


def tiny_config(variant: str = "asen++", n_attributes: int = 3) -> ModelConfig:
    return ModelConfig(
        variant=variant, n_attributes=n_attributes, attr_dim=16,
        global_branch=BranchConfig("tiny", 16, 64, 16, 2, 16),
        local_branch=BranchConfig("tiny", 16, 32, 16, 2, 16))


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

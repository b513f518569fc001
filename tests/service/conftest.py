"""Service fixtures: a tiny REAL checkpoint, a REAL catalogue index built by `asen index build`
from the demo dataset's test split, and apps / clients on copies of it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import main
from tests.helpers.models import write_checkpoint

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, demo_dataset: Path) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", demo_dataset)


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, demo_dataset: Path) -> Path:
    """The test split indexed by the real command; never modified (copy it to write)."""
    return _index_test_split(tiny_checkpoint, demo_dataset, tmp_path_factory.mktemp("built") / "index", 50)


def _index_test_split(checkpoint: Path, dataset: Path, out: Path, chunk_size: int) -> Path:
    assert (
        main(
            [
                "index",
                "build",
                "--checkpoint",
                str(checkpoint),
                "--catalogue",
                str(dataset),
                "--out",
                str(out),
                "--split",
                "test",
                "--chunk-size",
                str(chunk_size),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def tagging_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, demo_dataset: Path
) -> Path:
    """The tiny checkpoint with value prototypes and tag calibration added by `asen prototypes`."""
    path = Path(shutil.copy(tiny_checkpoint, tmp_path_factory.mktemp("tagging") / "tagging.pt"))
    assert (
        main(["prototypes", "--checkpoint", str(path), "--data", str(demo_dataset), "--per-value", "40"]) == 0
    )
    return path


@pytest.fixture(scope="session")
def tagged_index(
    tmp_path_factory: pytest.TempPathFactory, tagging_checkpoint: Path, demo_dataset: Path
) -> Path:
    """The test split indexed with the tagging checkpoint: items carry predicted tags (never modified)."""
    return _index_test_split(
        tagging_checkpoint, demo_dataset, tmp_path_factory.mktemp("tagged") / "index", 100
    )


@pytest.fixture(scope="session")
def n_items(demo_dataset: Path) -> int:
    """Items in the built index: the demo dataset's test split."""
    return len((demo_dataset / "filenames_test.txt").read_text().split())


@pytest.fixture
def index_dir(tmp_path: Path, built_index: Path) -> Path:
    """A private, writable copy of the built index."""
    return Path(shutil.copytree(built_index, tmp_path / "index"))


@pytest.fixture
def settings(tiny_checkpoint: Path, index_dir: Path) -> Settings:
    return Settings(checkpoint=tiny_checkpoint, index=index_dir)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def tagging_client(tmp_path: Path, tagging_checkpoint: Path, tagged_index: Path) -> Iterator[TestClient]:
    """An app on a private copy of the tagged index, with the tagging checkpoint (prototypes, tags)."""
    index = Path(shutil.copytree(tagged_index, tmp_path / "tagged-index"))
    with TestClient(create_app(Settings(checkpoint=tagging_checkpoint, index=index))) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for a module's browser tests; a failure naming the install when it is missing."""
    from tests.helpers.browser import browser_missing, chromium

    why = browser_missing()
    if why is not None:
        pytest.fail(why)
    with chromium() as launched:
        yield launched

"""Uploads are pruned on Milvus as on a FAISS directory: the engine keeps its own log, so there is no
compaction of ours after which to prune; `Compactor.compact_now()` (every `compact_interval_s` and at
shutdown) prunes the shared images folder instead, inside `Catalogue.exclusive()`, so no write of
any replica lands between reading the references and deleting. A real Milvus Lite engine."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from asen_search.service.api.app import create_app
from asen_search.service.api.compaction import has_write_ahead_log
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import main
from tests.helpers.models import image_bytes

KEY = "_image"


def _picture(demo_dataset: Path, fid: int) -> dict[str, tuple[str, bytes, str]]:
    return {
        "image": ("p.jpg", image_bytes(demo_dataset / "images" / "train" / f"{fid:05d}.jpg"), "image/jpeg")
    }


def _age(root: Path, name: str, seconds: float = 10.0) -> None:
    """Make a stored upload look `seconds` old (the test's grace period is 0)."""
    then = time.time() - seconds
    os.utime(root / name, (then, then))


@pytest.fixture
def milvus_client(
    tiny_checkpoint: Path, built_index: Path, tmp_path: Path
) -> Iterator[tuple[TestClient, Path]]:
    """An app on a Milvus Lite copy of the built index, uploads in a folder of their own."""
    location = f"milvus-lite:{tmp_path}/prune.db#shop"
    assert main(["index", "copy", "--from", str(built_index), "--to", location]) == 0
    images = tmp_path / "shared-images"
    with TestClient(
        create_app(Settings(checkpoint=tiny_checkpoint, index=location, images_dir=images))
    ) as client:
        yield client, images


def test_uploads_of_deleted_and_replaced_items_are_pruned_on_milvus(
    milvus_client: tuple[TestClient, Path], demo_dataset: Path
) -> None:
    client, images = milvus_client
    state = client.app.state.service_state  # type: ignore[attr-defined]
    assert not has_write_ahead_log(state.catalogue)  # told apart by the interface, not the engine's class
    for item, fid in (("a", 1), ("b", 2), ("c", 3)):
        assert client.post("/items", data={"id": item}, files=_picture(demo_dataset, fid)).status_code == 201
    names = {i: state.catalogue.get(i).metadata[KEY] for i in "abc"}
    assert client.delete("/items/a").status_code == 200
    assert (
        client.post(
            "/items", data={"id": "b", "replace": "true"}, files=_picture(demo_dataset, 4)
        ).status_code
        == 200
    )
    for name in names.values():
        _age(images, name)
    assert state.compactor.compact_now() is False  # nothing of ours to compact: the engine keeps its log
    assert all((images / name).is_file() for name in names.values())  # within the grace period: kept
    state.compactor.upload_grace_s = 0
    state.compactor.compact_now()
    assert not (images / names["a"]).exists() and not (images / names["b"]).exists()
    assert (images / names["c"]).is_file()  # referenced, however old
    for item in "bc":
        assert client.get(f"/images/{item}").status_code == 200


def test_the_references_are_read_while_every_writer_is_held_off(
    milvus_client: tuple[TestClient, Path], demo_dataset: Path
) -> None:
    """A write of another writer of the catalogue that arrives while the prune reads the references
    waits until the prune is done: it cannot land between the reading and the deleting."""
    client, images = milvus_client
    state = client.app.state.service_state  # type: ignore[attr-defined]
    catalogue = state.catalogue
    assert client.post("/items", data={"id": "old"}, files=_picture(demo_dataset, 5)).status_code == 201
    name = catalogue.get("old").metadata[KEY]
    assert client.delete("/items/old").status_code == 200
    _age(images, name)
    state.compactor.upload_grace_s = 0
    vectors = np.stack([catalogue.vector("test-00001", a) for a in catalogue.attributes])[None]
    real = catalogue.metadata_values
    writer_done = threading.Event()
    seen: dict[str, Any] = {}

    def write_meanwhile() -> None:  # another writer (on Milvus: any replica) names the old file again
        catalogue.upsert(["again"], vectors, [{KEY: name}])
        writer_done.set()

    def reading_references(field: str) -> set[Any]:
        referenced = real(field)
        writer = threading.Thread(target=write_meanwhile)
        writer.start()
        seen["landed_while_reading"] = writer_done.wait(1.0)
        seen["writer"] = writer
        return referenced

    catalogue.metadata_values = reading_references
    try:
        state.compactor.compact_now()
    finally:
        del catalogue.metadata_values
    seen["writer"].join(30)
    assert seen["landed_while_reading"] is False and writer_done.is_set()
    assert not (
        images / name
    ).exists()  # pruned: the write came after (the route stores its image again then)


def test_a_faiss_directory_prunes_only_after_a_compaction(
    client: TestClient, demo_dataset: Path, settings: Settings
) -> None:
    """Unchanged on FAISS: with nothing in the log there is no compaction and no pruning."""
    state = client.app.state.service_state  # type: ignore[attr-defined]
    assert has_write_ahead_log(state.catalogue)
    assert client.post("/items", data={"id": "gone"}, files=_picture(demo_dataset, 6)).status_code == 201
    name = state.catalogue.get("gone").metadata[KEY]
    assert client.delete("/items/gone").status_code == 200
    assert state.compactor.compact_now() is True  # compacts the log (the upload is within its grace)
    _age(settings.index, name)
    state.compactor.upload_grace_s = 0
    assert (
        state.compactor.compact_now() is False and (settings.index / name).is_file()
    )  # empty log: untouched

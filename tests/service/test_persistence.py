"""Live writes are committed before they are acknowledged; a save that fails or is killed midway
leaves the previous index loadable and complete, and memory never disagrees with disk."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from index import CatalogueIndex
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import image_bytes

ROOT = Path(__file__).resolve().parents[2]


def _picture(demo_dataset: Path, fid: int = 3) -> dict[str, tuple[str, bytes, str]]:
    return {"image": ("p.jpg", image_bytes(demo_dataset / "images" / "train" / f"{fid:05d}.jpg"), "image/jpeg")}


def _assert_complete(index_dir: Path, n_items: int, absent: str) -> None:
    catalogue = CatalogueIndex.load(index_dir)
    assert len(catalogue) == n_items and absent not in catalogue
    for attribute in catalogue.attributes:
        hits = catalogue.search(catalogue.vector("test-00000", attribute), attribute, k=3)
        assert hits[0].id == "test-00000"


def test_failed_rename_during_add_keeps_previous_index(client: TestClient, settings: Settings, demo_dataset: Path,
                                                      n_items: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "rename", broken_rename)
        response = client.post("/items", data={"id": "new-1"}, files=_picture(demo_dataset))
    assert response.status_code == 503 and response.json()["error"] == "not_persisted"
    assert client.get("/items/new-1").status_code == 404  # undone in memory too
    _assert_complete(settings.index, n_items, "new-1")
    assert client.post("/items", data={"id": "new-1"}, files=_picture(demo_dataset)).status_code == 201
    assert "new-1" in CatalogueIndex.load(settings.index)


def test_failed_pointer_switch_during_delete_keeps_the_item(client: TestClient, settings: Settings,
                                                           n_items: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(src: object, dst: object) -> None:
        raise OSError(5, "I/O error")

    metadata = client.get("/items/test-00004").json()["metadata"]
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", broken_replace)
        response = client.delete("/items/test-00004")
    assert response.status_code == 503
    assert client.get("/items/test-00004").json()["metadata"] == metadata
    hits = client.post("/search", data={"attribute": "colour", "item_id": "test-00004"}).json()["results"]
    assert hits and "test-00004" not in {h["id"] for h in hits}  # still searchable by its id
    assert len(CatalogueIndex.load(settings.index)) == n_items


KILLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import index.store as store
    from index import CatalogueIndex

    where, directory = sys.argv[1], sys.argv[2]
    catalogue = CatalogueIndex.load(directory)
    vectors = np.stack([catalogue.vector("test-00000", a) for a in catalogue.attributes])[None]
    catalogue.add(["doomed"], vectors, [{}])
    if where == "files":          # killed while writing the new version's files
        real = store._write_text
        def write_then_die(path, text):
            real(path, text)
            if path.name == "metadata.jsonl":
                os.kill(os.getpid(), signal.SIGKILL)
        store._write_text = write_then_die
    else:                         # killed after the version is complete, before CURRENT moves
        def die(src, dst):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = die
    catalogue.save(directory)
""")


@pytest.mark.parametrize("where", ["files", "pointer"])
def test_killed_writer_leaves_previous_index(index_dir: Path, n_items: int, where: str) -> None:
    result = subprocess.run([sys.executable, "-c", KILLER, where, str(index_dir)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    _assert_complete(index_dir, n_items, "doomed")
    catalogue = CatalogueIndex.load(index_dir)  # and it is still writable afterwards
    catalogue.add(["after"], np.stack([catalogue.vector("test-00001", a) for a in catalogue.attributes])[None])
    catalogue.save(index_dir)
    assert "after" in CatalogueIndex.load(index_dir)


def test_writes_survive_a_restart(settings: Settings, demo_dataset: Path) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.post("/items", data={"id": "kept", "metadata": '{"a": 1}'},
                           files=_picture(demo_dataset, 5)).status_code == 201
        assert client.delete("/items/test-00009").status_code == 200
    with TestClient(create_app(settings)) as client:
        assert client.get("/items/kept").json()["metadata"] == {"a": 1}
        assert client.get("/items/test-00009").status_code == 404
        for attribute in ("colour", "neckline"):
            hits = client.post("/search", data={"attribute": attribute, "top_k": "100"},
                               files={"image": ("q.jpg", image_bytes(demo_dataset / "images" / "test" / "00009.jpg"),
                                                "image/jpeg")}).json()["results"]
            assert "test-00009" not in {h["id"] for h in hits}

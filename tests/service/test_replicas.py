"""Stateless replicas: two real `asen serve` processes on one real Milvus server (the embedded Milvus
2.3 server from PyPI, `pip install '.[milvus-server]'`), sharing one catalogue and one images folder:
a write through one replica is read through the other at once (Strong consistency)."""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from asen_search.service.cli.main import main
from tests.service.conftest import image_bytes
from tests.service.serving import free_port, serving

pytestmark = pytest.mark.slow


def test_a_write_through_one_replica_is_read_through_the_other(milvus_server: str, built_index: Path,
                                                              tiny_checkpoint: Path, demo_dataset: Path,
                                                              tmp_path: Path) -> None:
    location = f"milvus://{milvus_server}/replicas"
    # Milvus 2.3 has one vector field per collection: the `rows` layout
    assert main(["index", "copy", "--from", str(built_index), "--to", location, "--layout", "rows"]) == 0
    shared_images = tmp_path / "shared-images"
    with ExitStack() as stack:
        urls = []
        for _ in range(2):
            port = free_port()
            urls.append(stack.enter_context(serving(
                ["serve", "--checkpoint", str(tiny_checkpoint), "--index", location, "--images-dir",
                 str(shared_images), "--port", str(port)], {}, port, ready_s=180)))
        one, two = urls
        assert httpx.get(f"{one}/readyz").json()["items"] == httpx.get(f"{two}/readyz").json()["items"]
        data = image_bytes(demo_dataset / "images" / "test" / "00011.jpg")
        added = httpx.post(f"{one}/items", data={"id": "via-one", "metadata": '{"colour": "ochre"}'},
                           files={"image": ("a.jpg", data, "image/jpeg")}, timeout=60)
        assert added.status_code == 201, added.text
        assert httpx.get(f"{two}/items/via-one").json() == {"id": "via-one", "metadata": {"colour": "ochre"}}
        assert httpx.get(f"{two}/images/via-one").status_code == 200
        found = httpx.post(f"{two}/search", data={"attribute": "colour", "item_id": "test-00011",
                                                  "filters": '{"colour": "ochre"}'}).json()["results"]
        assert [hit["id"] for hit in found] == ["via-one"]
        assert httpx.delete(f"{two}/items/via-one").status_code == 200
        assert httpx.get(f"{one}/items/via-one").status_code == 404
        assert httpx.get(f"{one}/readyz").json()["items"] == httpx.get(f"{two}/readyz").json()["items"]

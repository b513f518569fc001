"""Stateless replicas: two real `asen serve` processes on one real Milvus server (the embedded Milvus
2.3 server from PyPI, `pip install '.[milvus-server]'`), sharing one catalogue and one images folder:
a write through one replica is read through the other at once (Strong consistency)."""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from asen_search.service.cli.main import main
from tests.helpers.models import image_bytes
from tests.helpers.serving import free_port, serving

pytestmark = pytest.mark.slow


def test_a_write_through_one_replica_is_read_through_the_other(
    milvus_server: str, built_index: Path, tiny_checkpoint: Path, demo_dataset: Path, tmp_path: Path
) -> None:
    location = f"milvus://{milvus_server}/replicas"
    # Milvus 2.3 has one vector field per collection: the `rows` layout
    assert main(["index", "copy", "--from", str(built_index), "--to", location, "--layout", "rows"]) == 0
    shared_images = tmp_path / "shared-images"
    with ExitStack() as stack:
        urls = []
        for _ in range(2):
            port = free_port()
            urls.append(
                stack.enter_context(
                    serving(
                        [
                            "serve",
                            "--checkpoint",
                            str(tiny_checkpoint),
                            "--index",
                            location,
                            "--images-dir",
                            str(shared_images),
                            "--port",
                            str(port),
                        ],
                        {},
                        port,
                        ready_s=180,
                    )
                )
            )
        one, two = urls
        before = httpx.get(f"{one}/readyz").json()["items"]
        assert httpx.get(f"{two}/readyz").json()["items"] == before
        data = image_bytes(demo_dataset / "images" / "test" / "00011.jpg")
        added = httpx.post(
            f"{one}/items",
            data={"id": "via-one", "metadata": '{"colour": "ochre"}'},
            files={"image": ("a.jpg", data, "image/jpeg")},
            timeout=60,
        )
        assert added.status_code == 201, added.text
        assert httpx.get(f"{two}/items/via-one").json() == {"id": "via-one", "metadata": {"colour": "ochre"}}
        assert httpx.get(f"{two}/images/via-one").status_code == 200
        found = httpx.post(
            f"{two}/search",
            data={"attribute": "colour", "item_id": "test-00011", "filters": '{"colour": "ochre"}'},
        ).json()["results"]
        assert [hit["id"] for hit in found] == ["via-one"]
        assert httpx.delete(f"{two}/items/via-one").status_code == 200
        assert httpx.get(f"{one}/items/via-one").status_code == 404
        # /readyz counts are reused for ASEN_READY_CACHE_S (5 s): a write through the other replica shows there
        # within that (a replica's own writes at once); reads by id above are never stale
        deadline = time.monotonic() + 5 + 3
        while (counts := {httpx.get(f"{url}/readyz").json()["items"] for url in urls}) != {before}:
            assert time.monotonic() < deadline, counts
            time.sleep(0.25)


def test_two_replicas_adding_the_same_new_ids_at_once_acknowledge_each_once(
    milvus_server: str, built_index: Path, tiny_checkpoint: Path, demo_dataset: Path, tmp_path: Path
) -> None:
    """Two clients, each through its own replica, add the same new ids at the same moments: every id
    is acknowledged (201) by exactly one replica, the other answers 409 `item_exists`, and the item
    holds what the acknowledged write sent (the writer lease: index/milvus/lease.py)."""
    location = f"milvus://{milvus_server}/racing"
    assert main(["index", "copy", "--from", str(built_index), "--to", location, "--layout", "rows"]) == 0
    data = image_bytes(demo_dataset / "images" / "test" / "00011.jpg")
    ids = [f"race-{n}-é" for n in range(6)]
    with ExitStack() as stack:
        urls = []
        for _ in range(2):
            port = free_port()
            urls.append(
                stack.enter_context(
                    serving(
                        [
                            "serve",
                            "--checkpoint",
                            str(tiny_checkpoint),
                            "--index",
                            location,
                            "--images-dir",
                            str(tmp_path / "shared-images"),
                            "--port",
                            str(port),
                        ],
                        {},
                        port,
                        ready_s=180,
                    )
                )
            )
        start = threading.Barrier(2)
        answers: dict[str, list[tuple[int, int]]] = {i: [] for i in ids}

        def add_all(replica: int) -> None:
            start.wait()
            for item_id in ids:
                answer = httpx.post(
                    f"{urls[replica]}/items",
                    timeout=120,
                    files={"image": ("a.jpg", data)},
                    data={"id": item_id, "metadata": json.dumps({"by": replica})},
                )
                answers[item_id].append((replica, answer.status_code))

        threads = [threading.Thread(target=add_all, args=(replica,)) for replica in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        for item_id, got in answers.items():
            assert sorted(status for _, status in got) == [201, 409], (item_id, got)
            winner = next(replica for replica, status in got if status == 201)
            for url in urls:  # read through either replica: the acknowledged write, whole
                assert httpx.get(f"{url}/items/{quote(item_id, safe='')}").json()["metadata"]["by"] == winner

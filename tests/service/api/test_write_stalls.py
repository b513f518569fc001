"""A write waiting for its fsync stalls nothing else: with one `POST /items` held inside the log's
fsync, `/healthz`, `GET /items/{id}`, a search by item id and an image search all answer."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from tests.helpers.models import image_bytes


def test_reads_answer_while_a_write_is_in_its_fsync(
    settings: Settings, demo_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_fsync, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def held_fsync(fd: int) -> None:
        try:
            is_log = os.readlink(f"/proc/self/fd/{fd}").endswith(".log")
        except OSError:
            is_log = False
        if is_log and not release.is_set():
            in_fsync.set()
            release.wait(20)
        real_fsync(fd)

    picture = image_bytes(demo_dataset / "images" / "train" / "00007.jpg")
    with TestClient(create_app(settings)) as client:
        monkeypatch.setattr(os, "fsync", held_fsync)
        results: dict[str, int] = {}

        def write() -> None:
            results["write"] = client.post(
                "/items", data={"id": "slow"}, files={"image": ("a.jpg", picture)}
            ).status_code

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert in_fsync.wait(20), "the write never reached the log's fsync"

            def reads() -> None:
                results["healthz"] = client.get("/healthz").status_code
                results["item"] = client.get("/items/test-00001").status_code
                results["by_id"] = client.post(
                    "/search", data={"attribute": "colour", "item_id": "test-00002"}
                ).status_code
                results["by_image"] = client.post(
                    "/search", data={"attribute": "colour"}, files={"image": ("q.jpg", picture)}
                ).status_code
                results["ready"] = client.get("/readyz").status_code

            reader = threading.Thread(target=reads)
            reader.start()
            reader.join(30)
            assert not reader.is_alive(), f"reads stalled behind the write's fsync: {results}"
            assert results == {"healthz": 200, "item": 200, "by_id": 200, "by_image": 200, "ready": 200}
        finally:
            release.set()
            writer.join(30)
        assert results["write"] == 201
        assert client.get("/items/slow").status_code == 200


def test_no_catalogue_call_blocks_the_event_loop(settings: Settings) -> None:
    """With the catalogue's exclusive lock held (as while a large write is applied), requests that
    need the catalogue wait in worker threads; the event loop keeps answering `/healthz`."""
    with TestClient(create_app(settings)) as client:
        catalogue = client.app.state.service_state.catalogue  # type: ignore[attr-defined]
        waiting: dict[str, int] = {}

        def needs_catalogue(name: str, call) -> None:  # noqa: ANN001
            waiting[name] = call().status_code

        hold = catalogue._lock.write()
        hold.__enter__()
        try:
            callers = [
                threading.Thread(target=needs_catalogue, args=(name, call), daemon=True)
                for name, call in (
                    (
                        "by_id",
                        lambda: client.post("/search", data={"attribute": "colour", "item_id": "test-00002"}),
                    ),
                    ("item", lambda: client.get("/items/test-00001")),
                    ("image", lambda: client.get("/images/test-00001")),
                    (
                        "explain",
                        lambda: client.post(
                            "/explain", data={"attribute": "colour", "item_id": "test-00003"}
                        ),
                    ),
                )
            ]
            for caller in callers:
                caller.start()
            pinger = threading.Thread(
                target=lambda: waiting.setdefault("healthz", client.get("/healthz").status_code), daemon=True
            )
            pinger.start()
            pinger.join(10)
            while_held = dict(waiting)
        finally:
            hold.__exit__(None, None, None)
        assert while_held == {"healthz": 200}, f"the event loop stalled on the catalogue's lock: {while_held}"
        for caller in callers:
            caller.join(30)
        assert waiting == {"healthz": 200, "by_id": 200, "item": 200, "image": 200, "explain": 200}

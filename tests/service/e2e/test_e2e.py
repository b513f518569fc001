"""End to end over real HTTP: `asen serve` in a subprocess on a free port, talked to with httpx."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from asen_search.model.encoder import Encoder
from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from tests.helpers.serving import served


def test_real_http_search_write_restart(tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path) -> None:
    picture = (demo_dataset / "images" / "train" / "00011.jpg").read_bytes()
    query = (demo_dataset / "images" / "test" / "00021.jpg").read_bytes()
    with (
        served(tiny_checkpoint, index_dir, ASEN_API_KEY="k") as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        hits = http.post("/search", data={"attribute": "pattern"}, files={"image": ("q.jpg", query)}).json()
        assert hits["results"][0]["id"] == "test-00021"
        added = http.post(
            "/items", data={"id": "live-1"}, files={"image": ("p.jpg", picture)}, headers={"X-API-Key": "k"}
        )
        assert added.status_code == 201, added.text
        assert http.delete("/items/test-00021", headers={"X-API-Key": "k"}).status_code == 200
        assert http.post("/items", data={"id": "x"}, files={"image": ("p.jpg", picture)}).status_code == 401

        def search(data: bytes) -> list[str]:
            body = http.post(
                "/search", data={"attribute": "pattern", "top_k": "100"}, files={"image": ("q.jpg", data)}
            ).json()
            return [h["id"] for h in body["results"]]

        assert search(picture)[0] == "live-1" and "test-00021" not in search(query)
        assert 'handler="/items",method="POST",status="201"' in http.get("/metrics").text
        start = time.perf_counter()  # refused from Content-Length: the 15 MB are never read
        too_big = http.post(
            "/search", data={"attribute": "colour"}, files={"image": ("q.jpg", bytes(15 << 20))}
        )
        assert too_big.status_code == 413 and too_big.json()["error"] == "request_too_large"
        assert time.perf_counter() - start < 5
    with served(tiny_checkpoint, index_dir) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/items/live-1").status_code == 200
        assert http.get("/items/test-00021").status_code == 404
        assert search(picture)[0] == "live-1" and "test-00021" not in search(query)


def test_concurrent_clients_over_http(tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path) -> None:
    images = [(demo_dataset / "images" / "test" / f"{i:05d}.jpg").read_bytes() for i in range(8)]
    with served(tiny_checkpoint, index_dir) as url:
        results: dict[int, str] = {}

        def client(i: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                for _ in range(3):
                    body = http.post(
                        "/search",
                        data={"attribute": "colour", "top_k": "1"},
                        files={"image": ("q.jpg", images[i])},
                    ).json()
                    results[i] = body["results"][0]["id"]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == {i: f"test-{i:05d}" for i in range(8)}


async def _concurrent_searches(app: object, query: bytes, n: int) -> tuple[float, float]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

        async def search() -> None:
            response = await http.post(
                "/search", data={"attribute": "colour"}, files={"image": ("q.jpg", query)}
            )
            assert response.status_code == 200

        async def health_latency() -> float:
            await asyncio.sleep(0.1)  # while the searches are encoding
            start = time.perf_counter()
            assert (await http.get("/healthz")).status_code == 200
            return time.perf_counter() - start

        start = time.perf_counter()
        *_, health = await asyncio.gather(*(search() for _ in range(n)), health_latency())
        return time.perf_counter() - start, health


def test_inference_runs_off_the_event_loop(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_encode = Encoder.encode_requests

    def slow_encode(self: Encoder, *args: object, **kwargs: object) -> np.ndarray:
        time.sleep(0.6)  # a slow model: blocks its thread, never the loop
        return real_encode(self, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode_requests", slow_encode)
    app = create_app(Settings(checkpoint=tiny_checkpoint, index=index_dir, inference_concurrency=4))
    query = (demo_dataset / "images" / "test" / "00002.jpg").read_bytes()

    async def run() -> tuple[float, float]:
        async with app.router.lifespan_context(app):
            return await _concurrent_searches(app, query, 4)

    total, health = asyncio.run(run())
    assert total < 4 * 0.6 * 0.75, f"4 searches took {total:.2f} s: not concurrent"
    assert health < 0.3, f"/healthz took {health:.2f} s while encoding: the event loop was blocked"

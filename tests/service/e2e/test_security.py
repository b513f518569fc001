"""The API key never shows up in logs or answers, the server warns when writes are open, the rate
limit answers 429, CORS is off unless configured, and overload is refused quickly (503 with
Retry-After) rather than queued without bound; slow requests time out with 504."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from asen_search.service.api.app import create_app
from asen_search.service.api.overload import InferenceQueue, TimeoutMiddleware, TokenBuckets
from asen_search.service.api.settings import Settings
from asen_search.service.operations.errors import ServiceError
from tests.helpers.serving import ROOT, free_port, wait_ready

SECRET = "k3y-that-must-never-be-printed-71c9"


def _jpeg(demo_dataset: Path, n: int = 1) -> bytes:
    return (demo_dataset / "images" / "test" / f"{n:05d}.jpg").read_bytes()


def _run_server(checkpoint: Path, index: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asen_search.service.cli",
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--index",
            str(index),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env={**os.environ, "ASEN_LOG_LEVEL": "debug", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process)
    return process, url


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def test_api_key_is_never_logged_or_echoed(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path
) -> None:
    process, url = _run_server(tiny_checkpoint, index_dir, {"ASEN_API_KEY": SECRET})
    bodies = []
    try:
        image = {"image": ("a.jpg", _jpeg(demo_dataset), "image/jpeg")}
        wrong = httpx.post(f"{url}/items", data={"id": "x1"}, files=image, headers={"X-API-Key": SECRET[:-1]})
        assert wrong.status_code == 401
        right = httpx.post(f"{url}/items", data={"id": "x1"}, files=image, headers={"X-API-Key": SECRET})
        assert right.status_code == 201
        bodies = [
            wrong.text,
            right.text,
            str(wrong.headers),
            str(right.headers),
            httpx.get(f"{url}/readyz").text,
            httpx.get(f"{url}/metrics").text,
            httpx.get(f"{url}/openapi.json").text,
        ]
    finally:
        output = _stop(process)
    assert SECRET not in output and SECRET[:-1] not in output
    assert not any(SECRET[:12] in body for body in bodies)
    assert "open to anyone" not in output


def test_server_warns_when_writes_are_open(tiny_checkpoint: Path, index_dir: Path) -> None:
    process, _ = _run_server(tiny_checkpoint, index_dir, {"ASEN_API_KEY": ""})
    output = _stop(process)
    assert "WARNING" in output and "open to anyone" in output and "ASEN_API_KEY" in output


@pytest.fixture
def limited(tiny_checkpoint: Path, index_dir: Path) -> Iterator[TestClient]:
    settings = Settings(checkpoint=tiny_checkpoint, index=index_dir, rate_limit=0.5, rate_burst=3)
    with TestClient(create_app(settings)) as client:
        yield client


def test_rate_limit_answers_429_on_expensive_endpoints_only(limited: TestClient) -> None:
    query = {"attribute": "colour", "item_id": "test-00001", "top_k": "2"}
    assert [limited.post("/search", data=query).status_code for _ in range(3)] == [200, 200, 200]
    refused = limited.post("/search", data=query)
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    assert (
        limited.post(
            "/rerank", json={"attribute": "colour", "item_id": "test-00001", "candidates": ["test-00002"]}
        ).status_code
        == 429
    )
    assert limited.get("/items/test-00001").status_code == 200  # cheap reads are not limited
    assert limited.get("/readyz").status_code == 200


def test_token_buckets_refill_per_client_and_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, max_keys=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # another client has its own bucket
    now[0] = 0.5
    assert buckets.take("a") == 0.0  # refilled one token
    for key in "cdefg":
        buckets.take(key)
    assert len(buckets._buckets) == 3


def test_cors_is_off_unless_configured(tiny_checkpoint: Path, index_dir: Path) -> None:
    origin = {"Origin": "https://shop.example"}
    with TestClient(create_app(Settings(checkpoint=tiny_checkpoint, index=index_dir))) as client:
        assert "access-control-allow-origin" not in client.get("/attributes", headers=origin).headers
        preflight = client.options("/search", headers={**origin, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
    settings = Settings(
        checkpoint=tiny_checkpoint, index=index_dir, cors_origins="https://shop.example, https://b.example"
    )
    with TestClient(create_app(settings)) as client:
        assert (
            client.get("/attributes", headers=origin).headers["access-control-allow-origin"]
            == "https://shop.example"
        )
        other = client.get("/attributes", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_full_inference_queue_is_refused_at_once() -> None:
    queue = InferenceQueue(concurrency=1, max_queue=2, wait_s=30)
    release = threading.Event()
    outcomes: list[object] = []

    async def call() -> None:
        try:
            outcomes.append(await queue.run(lambda: release.wait(10)))
        except ServiceError as exc:
            outcomes.append(exc)

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(2):
                tasks.start_soon(call)
            await anyio.sleep(0.1)
            start = time.perf_counter()
            await call()  # a third request: the queue (1 running + 1 waiting) is full
            assert time.perf_counter() - start < 0.1
            release.set()

    anyio.run(main)
    refused = [o for o in outcomes if isinstance(o, ServiceError)]
    assert len(refused) == 1 and refused[0].code == "overloaded"
    assert int(refused[0].headers["Retry-After"]) >= 1  # type: ignore[index]
    assert outcomes.count(True) == 2 and queue.admitted == 0


def test_waiting_too_long_for_the_model_is_503() -> None:
    queue = InferenceQueue(concurrency=1, max_queue=10, wait_s=0.2)
    release = threading.Event()

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run, lambda: release.wait(10))
            await anyio.sleep(0.05)
            start = time.perf_counter()
            with pytest.raises(ServiceError) as info:
                await queue.run(lambda: None)
            assert 0.15 < time.perf_counter() - start < 1.0
            assert info.value.code == "overloaded" and "within 0.2 s" in info.value.detail
            release.set()

    anyio.run(main)


def test_overloaded_server_answers_503_quickly(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path
) -> None:
    """16 concurrent image searches against a queue of 2 over real HTTP: the surplus is refused
    with Retry-After in a fraction of the time the accepted ones take; nothing else fails."""
    process, url = _run_server(
        tiny_checkpoint,
        index_dir,
        {"ASEN_MAX_QUEUE": "2", "ASEN_INFERENCE_CONCURRENCY": "1", "ASEN_LOG_LEVEL": "warning"},
    )
    image = _jpeg(demo_dataset)
    results: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()

    def search() -> None:
        start = time.perf_counter()
        response = httpx.post(
            f"{url}/search", data={"attribute": "colour"}, files={"image": ("q.jpg", image)}, timeout=60
        )
        with lock:
            results.append(
                (response.status_code, time.perf_counter() - start, response.headers.get("retry-after"))
            )

    try:
        for _ in range(2):  # the batch below must not include first-request warm-up
            search()
        results.clear()
        threads = [threading.Thread(target=search) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        _stop(process)
    statuses = sorted(status for status, _, _ in results)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 2, statuses
    refused = [(seconds, retry) for status, seconds, retry in results if status == 503]
    assert all(retry is not None and int(retry) >= 1 for _, retry in refused)
    assert max(seconds for seconds, _ in refused) < 2.0


def test_request_timeout_is_504_json() -> None:
    async def slow_app(scope: object, receive: object, send: object) -> None:
        await anyio.sleep(5)

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def main() -> None:
        middleware = TimeoutMiddleware(slow_app, seconds=0.1)  # type: ignore[arg-type]
        start = time.perf_counter()
        await middleware({"type": "http", "method": "GET", "path": "/"}, None, send)  # type: ignore[arg-type]
        assert time.perf_counter() - start < 1

    anyio.run(main)
    assert sent[0]["status"] == 504 and b'"timeout"' in sent[1]["body"]  # type: ignore[operator]

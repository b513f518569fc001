"""Dynamic batching (service/api/batching.py): concurrent requests share a forward pass, each caller
gets its own result in order, a request whose image breaks the pass fails alone, an abandoned
request never runs; and over real HTTP, concurrent searches answer what each would alone."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from asen_search.model.encoder import Encoder
from asen_search.model.nn.preprocess import load_image
from asen_search.service.api.batching import Batcher
from asen_search.service.api.overload import InferenceQueue
from asen_search.service.operations.errors import ServiceError
from tests.helpers.serving import served


def _gated(batches: list[list[int]], gate: threading.Event, started: threading.Event | None = None):
    def run(items: list[int]) -> list[int]:
        if started is not None:
            started.set()
        gate.wait(10)
        batches.append(list(items))
        return [item * 10 for item in items]

    return run


def test_waiting_requests_share_one_pass_and_get_their_own_results() -> None:
    batches: list[list[int]] = []
    gate, started = threading.Event(), threading.Event()
    batcher = Batcher(_gated(batches, gate, started), workers=1, max_batch=4)
    futures = [batcher.submit(0)]
    assert started.wait(5)  # the first runs alone; the rest wait behind it
    futures += [batcher.submit(i) for i in range(1, 7)]
    gate.set()
    assert [f.result(10) for f in futures] == [i * 10 for i in range(7)]
    assert batches[0] == [0] and batches[1] == [1, 2, 3, 4] and batches[2] == [5, 6]  # max_batch holds
    batcher.close()


def test_batch_wait_gathers_requests_that_arrive_a_little_later() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()
    gate.set()
    batcher = Batcher(_gated(batches, gate), workers=1, max_batch=8, max_wait_s=0.3)
    first = batcher.submit(1)
    time.sleep(0.05)
    second = batcher.submit(2)
    assert (first.result(5), second.result(5)) == (10, 20)
    assert batches == [[1, 2]]
    batcher.close()


def test_a_failing_item_fails_alone() -> None:
    gate, started = threading.Event(), threading.Event()

    def run(items: list[int]) -> list[int]:
        started.set()
        gate.wait(10)
        if 13 in items:
            raise ValueError("unlucky image")
        return [i + 1 for i in items]

    batcher = Batcher(run, workers=1, max_batch=8)
    blocker = batcher.submit(0)
    assert started.wait(5)
    futures = [batcher.submit(i) for i in (11, 12, 13, 14)]
    gate.set()
    assert blocker.result(5) == 1
    assert [futures[i].result(5) for i in (0, 1, 3)] == [12, 13, 15]
    with pytest.raises(ValueError, match="unlucky image"):
        futures[2].result(5)
    batcher.close()


def test_a_cancelled_request_never_runs_and_calls_run_alone() -> None:
    batches: list[list[int]] = []
    gate, started = threading.Event(), threading.Event()
    batcher = Batcher(_gated(batches, gate, started), workers=1, max_batch=8)
    running = batcher.submit(1)
    assert started.wait(5)
    abandoned, kept = batcher.submit(2), batcher.submit(3)
    call = batcher.submit_call(lambda: "explained")
    assert abandoned.cancel()
    gate.set()
    assert (running.result(5), kept.result(5), call.result(5)) == (10, 30, "explained")
    with pytest.raises(CancelledError):
        abandoned.result(0)
    assert batches == [[1], [3]]
    batcher.close()


def test_real_encoder_batch_with_a_bad_image(tiny_checkpoint: Path, demo_dataset: Path) -> None:
    """A grey-scale image breaks the encoder's batch; the others still get exactly what they
    would get alone, in order."""
    encoder = Encoder.from_checkpoint(tiny_checkpoint)
    paths = sorted((demo_dataset / "images" / "test").iterdir())[:5]
    images = [load_image(p) for p in paths]
    bad = Image.new("L", (40, 40))
    gate, started = threading.Event(), threading.Event()
    sizes: list[int] = []

    def run(items: list[tuple[Image.Image, list[int]]]) -> list[np.ndarray]:
        started.set()
        gate.wait(10)
        sizes.append(len(items))
        return encoder.encode_requests(items)

    batcher = Batcher(run, workers=1, max_batch=8)
    first = batcher.submit((images[0], [0]))
    assert started.wait(5)
    requests = [
        (images[1], [1]),
        (images[2], [0, 2]),
        (bad, [0]),
        (images[3], list(range(3))),
        (images[4], [2]),
    ]
    futures = [batcher.submit(r) for r in requests]
    gate.set()
    first.result(10)
    for (image, attrs), future in zip(requests, futures):
        if image is bad:
            with pytest.raises((ValueError, RuntimeError)):
                future.result(10)
            continue
        np.testing.assert_allclose(future.result(10), encoder.encode([image], attrs)[0], atol=1e-5)
    assert sizes[:2] == [1, 5]  # the five shared a pass (which failed), then ran one by one
    batcher.close()


def test_queue_refuses_a_request_still_waiting_after_wait_s() -> None:
    gate = threading.Event()
    queue = InferenceQueue(1, 10, 0.2, _gated([], gate), max_batch=1)

    async def main() -> None:
        first = asyncio.ensure_future(queue.run_batched(1))
        await asyncio.sleep(0.05)
        with pytest.raises(ServiceError) as info:
            await queue.run_batched(2)
        assert info.value.code == "overloaded" and "within 0.2 s" in info.value.detail
        gate.set()
        assert await first == 10

    asyncio.run(main())
    assert queue.admitted == 0
    queue.batcher.close()


def test_concurrent_http_searches_answer_what_each_would_alone(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path
) -> None:
    images = sorted((demo_dataset / "images" / "test").iterdir())[:12]
    with served(tiny_checkpoint, index_dir, ASEN_BATCH_MAX="8", ASEN_BATCH_WAIT_MS="20") as url:
        attributes = [a["name"] for a in httpx.get(f"{url}/attributes").json()["attributes"]][:3]

        def search(path: Path, attribute: str) -> list[str]:
            reply = httpx.post(
                f"{url}/search",
                data={"attribute": attribute, "top_k": "5"},
                files={"image": (path.name, path.read_bytes(), "image/jpeg")},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
            return [hit["id"] for hit in reply.json()["results"]]

        jobs = [(p, attributes[i % len(attributes)]) for i, p in enumerate(images)]
        alone = [search(p, a) for p, a in jobs]
        together: list[list[str] | None] = [None] * len(jobs)

        def one(i: int) -> None:
            together[i] = search(*jobs[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        metrics = httpx.get(f"{url}/metrics").text
    assert together == alone
    batched = [line for line in metrics.splitlines() if line.startswith("asen_inference_batch_size_bucket")]
    one_only = next(line for line in batched if 'le="1.0"' in line)
    total = next(line for line in metrics.splitlines() if line.startswith("asen_inference_batch_size_count"))
    assert float(one_only.split()[-1]) < float(total.split()[-1]), "no request ever shared a forward pass"

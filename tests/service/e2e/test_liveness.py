"""Liveness never waits for the catalogue engine: with the catalogue slow to count its items (a
wrapper whose `len()` sleeps; a real Milvus server behind a TCP proxy that delays every packet),
`/healthz` answers at once while `/readyz` and `/metrics` are being asked; `/readyz` answers 503
`catalogue_unavailable` within its timeout, `/metrics` the last count, never more than one count
runs at a time, and once the engine is fast again `/readyz` is 200 with the right count. Served by
the real app over real sockets (uvicorn in a thread; `asen serve` in a subprocess)."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import main
from asen_search.service.resources import load_resources
from tests.helpers.serving import free_port, serving

HEALTHZ_S = 0.2  # what "at once" means for /healthz


class SlowToCount:
    """A catalogue whose `len()` (the engine's count) sleeps `delay` seconds; counts how many
    `len()` calls run at the same time. Everything else goes to the real catalogue."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.delay = inner, 0.0
        self.lock = threading.Lock()
        self.running = self.most_running = self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.inner

    def __len__(self) -> int:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most_running = max(self.most_running, self.running)
        try:
            time.sleep(self.delay)
            return len(self.inner)
        finally:
            with self.lock:
                self.running -= 1


@contextmanager
def served_in_thread(app: Any) -> Iterator[str]:
    """The app under uvicorn in a thread of this process, on a free port; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def timed(client: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = client.get(path)
    return response, time.perf_counter() - start


def while_slow(url: str, seconds: float, readers: int = 3) -> dict[str, list[tuple[Any, float]]]:
    """For `seconds`: `readers` threads asking /readyz and one asking /metrics without pause, while
    this thread pings /healthz every 50 ms. Returns (response, seconds) per endpoint."""
    seen: dict[str, list[tuple[Any, float]]] = {"readyz": [], "metrics": [], "healthz": []}
    stop = time.monotonic() + seconds

    def ask(path: str, key: str, pause: float) -> Callable[[], None]:
        def loop() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while time.monotonic() < stop:
                    seen[key].append(timed(client, path))
                    time.sleep(pause)

        return loop

    threads = [threading.Thread(target=ask("/readyz", "readyz", 0.0), daemon=True) for _ in range(readers)]
    threads.append(threading.Thread(target=ask("/metrics", "metrics", 0.05), daemon=True))
    for thread in threads:
        thread.start()
    ask("/healthz", "healthz", 0.05)()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a request hung"
    return seen


def check_while_slow(
    seen: dict[str, list[tuple[Any, float]]], n_items: int, healthz_s: float, readyz_s: float
) -> None:
    healthz = [s for _, s in seen["healthz"]]
    print(
        f"/healthz {len(healthz)} answers, slowest {max(healthz):.3f} s; /readyz {len(seen['readyz'])} answers "
        f"{sorted({r.status_code for r, _ in seen['readyz']})}, slowest {max(s for _, s in seen['readyz']):.2f} s; "
        f"/metrics {len(seen['metrics'])} answers, slowest {max(s for _, s in seen['metrics']):.3f} s"
    )
    assert max(healthz) < healthz_s, f"/healthz waited behind the catalogue: {max(healthz):.2f} s"
    assert all(r.status_code == 200 for r, _ in seen["healthz"]) and len(healthz) >= 10
    assert seen["readyz"], "no /readyz answered"
    for response, seconds in seen["readyz"]:
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "catalogue_unavailable", response.text
        assert "did not answer within" in response.json()["detail"]
        assert seconds < readyz_s, f"/readyz took {seconds:.2f} s to give up"
    assert seen["metrics"]
    for response, seconds in seen["metrics"]:
        assert response.status_code == 200 and seconds < 1.0, (response.status_code, seconds)
        assert f"asen_catalogue_items {float(n_items)}" in response.text  # the last count
        assert "asen_catalogue_items_age_seconds " in response.text


def wait_ready_again(url: str, n_items: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        response = httpx.get(f"{url}/readyz", timeout=10)
        if response.status_code == 200:
            assert response.json()["items"] == n_items
            return
        assert response.json()["error"] == "catalogue_unavailable"
        assert time.monotonic() < deadline, (
            f"/readyz still {response.status_code} {within_s} s after the engine recovered"
        )
        time.sleep(0.2)


def test_healthz_never_waits_for_a_slow_catalogue(
    tiny_checkpoint: Path, index_dir: Path, n_items: int
) -> None:
    settings = Settings(checkpoint=tiny_checkpoint, index=index_dir, ready_timeout_s=1.0, ready_cache_s=0.5)
    encoder, catalogue = load_resources(settings)
    slow = SlowToCount(catalogue)
    with served_in_thread(create_app(settings, encoder, slow)) as url:  # type: ignore[arg-type]
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200 and ready.json()["items"] == n_items
        slow.delay, calls = 3.0, slow.calls
        time.sleep(0.6)  # the cached count is out of date: the next /readyz counts
        seen = while_slow(url, 3.5)
        check_while_slow(seen, n_items, HEALTHZ_S, readyz_s=2.0)
        assert slow.most_running == 1, f"{slow.most_running} counts ran at once on the stuck engine"
        started = slow.calls - calls  # one after another: at most 2 of 3 s in 4.1 s, whoever asked
        assert started <= 3, f"{started} counts started in 4.1 s on an engine that takes 3 s a count"
        slow.delay = 0.0
        wait_ready_again(url, n_items, within_s=5)
        # a write through this process is seen by the next /readyz at once, cached count or not
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.delete("/items/test-00001").status_code == 200
            assert client.get("/readyz").json()["items"] == n_items - 1
            assert f"asen_catalogue_items {float(n_items - 1)}" in client.get("/metrics").text


class DelayingProxy:
    """A TCP proxy to `target` ("HOST:PORT") that holds every chunk of bytes, either way, for
    `delay` seconds (set at any time; bytes already held keep the delay they were read with)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target, self.delay = (host, int(port)), 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                held: queue.Queue[tuple[float, bytes]] = queue.Queue()
                threading.Thread(target=self._read, args=(source, held), daemon=True).start()
                threading.Thread(target=self._write, args=(sink, held), daemon=True).start()

    def _read(self, source: socket.socket, held: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            held.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _write(self, sink: socket.socket, held: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            due, data = held.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.closed = True
        for each in [self.listener, *self.sockets]:
            each.close()


@pytest.mark.slow
def test_a_slow_milvus_server_fails_readiness_fast_and_never_liveness(
    milvus_server: str, built_index: Path, tiny_checkpoint: Path, n_items: int
) -> None:
    """`asen serve` on a real Milvus server reached through a proxy that, once the server has
    started, delays every packet by 3 s (a count then takes over 6 s). It is made slow only after
    startup: loading through it would take minutes (tens of round trips of 6 s each), and a replica
    that has not started has no liveness to keep."""
    assert (
        main(
            [
                "index",
                "copy",
                "--from",
                str(built_index),
                "--to",
                f"milvus://{milvus_server}/liveness",
                "--layout",
                "rows",
            ]
        )
        == 0
    )
    proxy = DelayingProxy(milvus_server)
    port = free_port()
    try:
        with serving(
            [
                "serve",
                "--checkpoint",
                str(tiny_checkpoint),
                "--index",
                f"milvus://127.0.0.1:{proxy.port}/liveness",
                "--port",
                str(port),
            ],
            {"ASEN_READY_TIMEOUT_S": "1.5", "ASEN_READY_CACHE_S": "0.5"},
            port,
            ready_s=180,
        ) as url:
            assert httpx.get(f"{url}/readyz").json()["items"] == n_items
            proxy.delay = 3.0
            time.sleep(1.0)  # the cached count is out of date: the next /readyz asks Milvus
            seen = while_slow(url, 5.0)
            # another process on 2 shared cores: a little more room than in-process
            check_while_slow(seen, n_items, healthz_s=0.25, readyz_s=2.5)
            proxy.delay = 0.0
            wait_ready_again(url, n_items, within_s=30)  # after the count held in the proxy comes back
    finally:
        proxy.close()

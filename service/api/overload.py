"""Overload protection: a bounded queue in front of the model (503 with Retry-After beyond it), a
per-request deadline (504), and a per-client rate limit on the expensive endpoints (429).

Both middlewares answer before the request body is read, so a refused request costs almost nothing.
"""
from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asen_search.service.api.batching import Batcher
from asen_search.service.api.errors import ApiError, error_body

T = TypeVar("T")
# (method, path) pairs whose requests run the model or write: what the rate limit counts.
EXPENSIVE = frozenset({("POST", "/search"), ("POST", "/rerank"), ("POST", "/explain"), ("POST", "/items")})


async def send_json(send: Send, status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class InferenceQueue:
    """At most `max_queue` requests waiting for or in a forward pass, served by `concurrency` model
    workers that batch concurrent encode requests (service/api/batching.py: up to `max_batch`
    requests per pass, waiting at most `batch_wait_s` for company). A request beyond the bound, or
    one that waits longer than `wait_s` for its turn, is refused at once with 503 and a
    `Retry-After` estimated from recent forward-pass times."""

    def __init__(self, concurrency: int, max_queue: int, wait_s: float,
                 run_batch: Callable[[list[Any]], Sequence[Any]] | None = None, max_batch: int = 1,
                 batch_wait_s: float = 0.0, on_batch: Callable[[int, float], None] | None = None) -> None:
        self.concurrency, self.max_queue, self.wait_s = concurrency, max_queue, wait_s
        self.batcher: Batcher[Any, Any] = Batcher(run_batch or _no_batches, concurrency, max_batch, batch_wait_s,
                                                  on_batch)
        self.admitted = 0

    def retry_after(self) -> int:
        """Seconds until the queue has drained enough to admit another request (at least 1)."""
        return max(1, math.ceil(self.admitted * self.batcher.mean_s / self.concurrency))

    def _refuse(self, why: str) -> ApiError:
        return ApiError(503, "overloaded", f"{why}; retry later", {"Retry-After": str(self.retry_after())})

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` alone on a model worker, in its turn."""
        result: T = await self._through(lambda: self.batcher.submit_call(work))
        return result

    async def run_batched(self, item: Any) -> Any:
        """`run_batch([item, ...])`'s result for `item`, in a batch with whatever else is waiting."""
        return await self._through(lambda: self.batcher.submit(item))

    async def _through(self, submit: Callable[[], Future[Any]]) -> Any:
        if self.admitted >= self.max_queue:
            raise self._refuse(f"the model queue is full ({self.admitted} requests waiting or running)")
        self.admitted += 1
        try:
            job = submit()
            waiter = asyncio.wrap_future(job)
            try:
                done, _ = await asyncio.wait({waiter}, timeout=self.wait_s)
                if not done and job.cancel():  # cancel() fails once the job is running: then wait for it
                    raise self._refuse(f"no model slot became free within {self.wait_s:g} s")
                return await waiter
            except asyncio.CancelledError:
                waiter.cancel()  # an abandoned request that has not started never runs
                raise
        finally:
            self.admitted -= 1


def _no_batches(items: list[Any]) -> Sequence[Any]:
    raise RuntimeError("this queue was made without a batch function")


class TimeoutMiddleware:
    """A request whose answer has not started after `seconds` gets 504 `timeout`. Work already
    handed to a thread (a forward pass, a logged write) finishes; the client just stops waiting."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        with anyio.CancelScope(deadline=anyio.current_time() + self.seconds) as deadline:

            async def guarded_send(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    deadline.deadline = math.inf  # never cut off an answer being sent
                await send(message)

            await self.app(scope, receive, guarded_send)
        if deadline.cancelled_caught and not started:
            await send_json(send, 504, error_body("timeout", f"the request took longer than {self.seconds:g} s "
                                                  "(ASEN_REQUEST_TIMEOUT_S); it was abandoned"))


class TokenBuckets:
    """Per-key token buckets: `rate` tokens a second up to `burst`; the least recently seen keys
    are forgotten beyond `max_keys` (bounded memory whatever the number of clients).

    Our own, not slowapi (measured against slowapi 0.1.10 and its `limits` 5.8 backend, see
    docs/architecture.md, "Libraries"): slowapi checks a route's own limit in the endpoint's
    decorator, after FastAPI has received and parsed the whole upload, and only app-wide limits
    in its middleware; `limits` has fixed and moving windows but no token bucket, so `rate_limit`
    (any float) with `rate_burst` has no exact equivalent; and its in-memory storage grows with the
    distinct clients of a window (45.7 MiB after 200,000 addresses against 2.5 MiB here:
    bench/rate_limiter_compare.py)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if `key` may go now (one token taken), else seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait


class RateLimitMiddleware:
    """429 with `Retry-After` when one client (its address) sends the expensive endpoints more than
    `rate` requests a second on average (bursts of `burst` allowed); other endpoints are free."""

    def __init__(self, app: ASGIApp, rate: float, burst: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate, burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"].rstrip("/") or "/") in EXPENSIVE:
            client = scope.get("client")
            wait = self.buckets.take(client[0] if client else "unknown")
            if wait > 0:
                await send_json(send, 429, error_body(
                    "rate_limited", f"more than {self.buckets.rate:g} requests a second from this client "
                    "(ASEN_RATE_LIMIT); slow down"), {"Retry-After": str(max(1, math.ceil(wait)))})
                return
        await self.app(scope, receive, send)


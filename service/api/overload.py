"""Overload protection: a bounded queue in front of the model (503 with Retry-After beyond it), a
per-request deadline (504), and a per-client rate limit on the expensive endpoints (429).

Both middlewares answer before the request body is read, so a refused request costs almost nothing.

What the rate limit counts is marked on the routes themselves: a route that runs the model, or
decodes an image, declares `openapi_extra=rate_limited(MODEL)` (or another budget), and
`create_app` collects the marks of every route it includes (`rate_limited_routes`) into the
middleware. A new expensive route is limited by marking it; tests/service/api/test_rate_limits.py
lists the routes that must carry a mark.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs

import anyio
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asen_search.service.api.batching import Batcher
from asen_search.service.api.errors import error_body
from asen_search.service.api.routing import plain_routes
from asen_search.service.operations.errors import ServiceError

T = TypeVar("T")

# -- which routes the rate limit counts: a mark on each route ------------------------------------
RATE_LIMIT_KEY = "x-rate-limit"  # the mark's key in a route's openapi_extra (shown in /openapi.json)
MODEL = "model"  # the budget of requests that run the model (a forward pass) or write the catalogue
IMAGES = "images"  # the budget of requests that decode and resize a stored image (thumbnails)
# The image budget is this many times the model's, in rate and in burst: the web page loads a
# thumbnail per result (up to 100 at once, ASEN_MAX_TOP_K) and a preview per query, and a resize costs
# a few milliseconds against a forward pass's tens to hundreds. At the compose file's ASEN_RATE_LIMIT=20
# (burst 20) a client may fetch 200 thumbnails at once and 200 a second, and a page of 100 results
# never sees a 429 (tests/service/api/test_rate_limits.py), while a flood of resizes is still bounded.
IMAGE_BUDGET_FACTOR = 10


def rate_limited(budget: str = MODEL, when_query: str | None = None) -> dict[str, Any]:
    """The mark of a rate-limited route, for its decorator's `openapi_extra`: the limit counts its
    requests in `budget` (only those that send the query parameter `when_query`, when given)."""
    mark: dict[str, str] = {"budget": budget}
    if when_query is not None:
        mark["when_query"] = when_query
    return {RATE_LIMIT_KEY: mark}


@dataclass(frozen=True)
class LimitedRoute:
    """A route of the app, in routing order, with its rate-limit mark (None: not limited)."""

    route: Route
    budget: str | None
    when_query: str | None = None

    def matches(self, method: str, path: str) -> bool:
        """Whether the router would give this route a request (its method and path)."""
        return (
            self.route.methods is not None
            and method in self.route.methods
            and self.route.path_regex.match(path) is not None
        )

    def counted(self, scope: Scope) -> bool:
        """Whether a request this route answers counts: it is marked, and sends `when_query` when
        the mark names one."""
        if self.budget is None or self.when_query is None:
            return self.budget is not None
        return self.when_query in parse_qs(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        )


def rate_limited_routes(routes: Iterable[BaseRoute]) -> list[LimitedRoute]:
    """Every route of an app (`app.router.routes`, included routers opened), in routing order, with
    the mark `rate_limited()` left in its `openapi_extra`."""
    found = []
    for route in plain_routes(routes):
        mark = (getattr(route, "openapi_extra", None) or {}).get(RATE_LIMIT_KEY)
        found.append(
            LimitedRoute(route, mark["budget"], mark.get("when_query")) if mark else LimitedRoute(route, None)
        )
    return found


def limited_operations(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], tuple[str, str | None]]:
    """{(method, path template): (budget, when_query)} of the marked routes: what the limit counts."""
    return {
        (method, limited.route.path): (limited.budget, limited.when_query)
        for limited in rate_limited_routes(routes)
        if limited.budget is not None
        for method in sorted(limited.route.methods or ())
    }


async def send_json(
    send: Send, status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> None:
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

    def __init__(
        self,
        concurrency: int,
        max_queue: int,
        wait_s: float,
        run_batch: Callable[[list[Any]], Sequence[Any]] | None = None,
        max_batch: int = 1,
        batch_wait_s: float = 0.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.concurrency, self.max_queue, self.wait_s = concurrency, max_queue, wait_s
        self.batcher: Batcher[Any, Any] = Batcher(
            run_batch or _no_batches, concurrency, max_batch, batch_wait_s, on_batch
        )
        self.admitted = 0

    def retry_after(self) -> int:
        """Seconds until the queue has drained enough to admit another request (at least 1)."""
        return max(1, math.ceil(self.admitted * self.batcher.mean_s / self.concurrency))

    def _refuse(self, why: str) -> ServiceError:
        return ServiceError("overloaded", f"{why}; retry later", {"Retry-After": str(self.retry_after())})

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
            await send_json(
                send,
                504,
                error_body(
                    "timeout",
                    f"the request took longer than {self.seconds:g} s "
                    "(ASEN_REQUEST_TIMEOUT_S); it was abandoned",
                ),
            )


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

    def __init__(
        self, rate: float, burst: int, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ):
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
    """429 with `Retry-After` when one client (its address) sends the marked routes more than their
    budget's rate a second on average (bursts allowed): `rate`/`burst` for the model's budget,
    IMAGE_BUDGET_FACTOR times both for the images' own; other routes are free. The request is
    matched to its route as the router does (the first route whose method and path match), before
    its body is read."""

    def __init__(self, app: ASGIApp, rate: float, burst: int, routes: Sequence[LimitedRoute]) -> None:
        self.app, self.routes = app, list(routes)
        self.buckets = {
            MODEL: TokenBuckets(rate, burst),
            IMAGES: TokenBuckets(rate * IMAGE_BUDGET_FACTOR, burst * IMAGE_BUDGET_FACTOR),
        }
        unknown = {r.budget for r in self.routes if r.budget is not None} - set(self.buckets)
        if unknown:
            raise ValueError(f"routes marked with unknown rate-limit budgets: {sorted(unknown)}")

    def _budget(self, scope: Scope) -> str | None:
        """The budget a request is counted in (None: not counted)."""
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        limited = next(
            (r for r in self.routes if r.matches(scope["method"], path)), None
        )  # the one routed to
        return limited.budget if limited is not None and limited.counted(scope) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        budget = self._budget(scope) if scope["type"] == "http" else None
        if budget is not None:
            client = scope.get("client")
            buckets = self.buckets[budget]
            wait = buckets.take(client[0] if client else "unknown")
            if wait > 0:
                what = "requests" if budget == MODEL else "resized images"
                setting = "ASEN_RATE_LIMIT" if budget == MODEL else f"{IMAGE_BUDGET_FACTOR} x ASEN_RATE_LIMIT"
                await send_json(
                    send,
                    429,
                    error_body(
                        "rate_limited",
                        f"more than {buckets.rate:g} {what} a second from this client ({setting}); slow down",
                    ),
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
                return
        await self.app(scope, receive, send)

"""Prometheus metrics of one app: requests and latency per route and status, and time per stage
(decode, encode, search, persist). Each app has its own registry, so apps never share counters."""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("decode", "encode", "search", "persist")


class Metrics:
    """The service's metric families, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # memory, CPU seconds, open files of the process
        GCCollector(registry=self.registry)
        self.requests = Counter("asen_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("asen_http_request_duration_seconds", "Time to answer a request",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("asen_http_requests_in_flight", "Requests being answered", registry=self.registry)
        self.stage = Histogram("asen_stage_duration_seconds", "Time spent per stage of a request",
                               ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.items = Gauge("asen_catalogue_items", "Items in the catalogue", registry=self.registry)
        self.log_bytes = Gauge("asen_wal_bytes", "Bytes in the write-ahead log not yet compacted",
                               registry=self.registry)
        self.compactions = Counter("asen_compactions", "Compactions of the write-ahead log into a snapshot",
                                   ["result"], registry=self.registry)
        for result in ("ok", "failed"):
            self.compactions.labels(result)
        for stage in STAGES:
            self.stage.labels(stage)  # exported at 0 before the first request

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class StageTimer:
    """Times the stages of one request into the stage histogram and a Server-Timing header."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        assert name in STAGES, name
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            self.metrics.stage.labels(name).observe(elapsed)

    def server_timing(self) -> str:
        """`decode;dur=3.1, encode;dur=20.4, search;dur=0.8` (milliseconds)."""
        return ", ".join(f"{name};dur={1000 * s:.3f}" for name, s in self.seconds.items())


def route_label(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The route template (`/items/{item_id:path}`), never the raw path: bounded label values.
    Routing records the matched route in the scope; older Starlette versions need a lookup."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    for route in routes:
        if isinstance(getattr(route, "path", None), str) and route.matches(scope)[0] == Match.FULL:
            return route.path  # type: ignore[attr-defined]
    return "<unmatched>"


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status code."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.in_flight.dec()
            labels = (scope["method"], route_label(self.routes, scope), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)

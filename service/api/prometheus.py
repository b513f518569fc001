"""Prometheus metrics of one app: requests and latency per route and status (counted by
prometheus-fastapi-instrumentator), requests in flight, time per stage (decode, encode, search,
persist) and the catalogue's own gauges. Each app has its own registry, so apps never share counters."""

from __future__ import annotations

import time
from collections.abc import Iterator
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
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("decode", "encode", "search", "verify", "persist")  # verify: POST /copies with verify


class Metrics:
    """The service's metric families, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # memory, CPU seconds, open files of the process
        GCCollector(registry=self.registry)
        self.in_flight = Gauge(
            "asen_http_requests_in_flight", "Requests being answered", registry=self.registry
        )
        self.stage = Histogram(
            "asen_stage_duration_seconds",
            "Time spent per stage of a request",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "asen_inference_batch_size",
            "Encode requests per forward pass (dynamic batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        # the last count, made off the event loop (health.py): a scrape never waits for the catalogue engine
        self.items = Gauge(
            "asen_catalogue_items",
            "Items in the catalogue at the last count (NaN before the first)",
            registry=self.registry,
        )
        self.items_age = Gauge(
            "asen_catalogue_items_age_seconds",
            "Seconds since asen_catalogue_items was counted "
            "(grows while the catalogue engine does not answer)",
            registry=self.registry,
        )
        self.log_bytes = Gauge(
            "asen_wal_bytes", "Bytes in the write-ahead log not yet compacted", registry=self.registry
        )
        self.compactions = Counter(
            "asen_compactions",
            "Compactions of the write-ahead log into a snapshot",
            ["result"],
            registry=self.registry,
        )
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


def instrument(app: Starlette, metrics: Metrics) -> None:
    """Count and time every HTTP request by method, route template (label `handler`; `none` for a
    path no route matches) and exact status, in the app's registry; call it after every other
    middleware is added, so that it is the outermost one and sees the statuses they answer
    (429, 503, 504, 413)."""
    app.add_middleware(InFlightMiddleware, gauge=metrics.in_flight)
    instrumentator = Instrumentator(
        should_group_status_codes=False, should_group_untemplated=True, registry=metrics.registry
    )
    instrumentator.add(
        http_metrics.requests(metric_name="asen_http_requests_total", registry=metrics.registry)
    )
    instrumentator.add(
        http_metrics.latency(
            metric_name="asen_http_request_duration_seconds",
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )
    )
    instrumentator.instrument(app)


class InFlightMiddleware:
    """Requests being answered, in the app's own registry. Not the instrumentator's in-progress
    gauge: version 8.1 registers that one in the process-wide registry whatever registry it is
    given, so it is missing from this app's /metrics and a second app in the process fails with
    "Duplicated timeseries" (measured; see docs/architecture.md, "Libraries")."""

    def __init__(self, app: ASGIApp, gauge: Gauge) -> None:
        self.app, self.gauge = app, gauge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.gauge.dec()

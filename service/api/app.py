"""`create_app(settings)`: the FastAPI application. Its lifespan loads the encoder and the catalogue
index once into `app.state.service_state`; requests reach them through `asen_search.service.api.state.ServiceStateDep`."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from asen_search.index import Catalogue, LogUnavailable, StaleCatalogue
from asen_search.model.encoder import Encoder
from asen_search.service.api import openapi
from asen_search.service.api.auth import API_KEY_HEADER, writes_refused
from asen_search.service.api.body_limit import BodyLimitMiddleware
from asen_search.service.api.compaction import Compactor
from asen_search.service.api.errors import install_error_handlers
from asen_search.service.api.health import CatalogueProbe, CatalogueUnavailable, WriteInvalidates
from asen_search.service.api.overload import (
    InferenceQueue,
    RateLimitMiddleware,
    TimeoutMiddleware,
    rate_limited_routes,
)
from asen_search.service.api.prometheus import Metrics, instrument
from asen_search.service.api.routes import copies, docs, items, ops, page, search, tag
from asen_search.service.api.settings import Settings
from asen_search.service.api.state import ServiceState, limits_of
from asen_search.service.operations.context import Service
from asen_search.service.resources import check_compatible, load_resources

logger = logging.getLogger("asen.service")

DESCRIPTION = """Fine-grained, attribute-specific fashion similarity search (ASEN++).

Query with an image or a catalogue item id and an attribute (`GET /attributes`); the answer ranks
the catalogue by similarity *under that attribute only*. Errors are JSON:
`{"error": "<code>", "detail": "<what was wrong>"}`."""


def _service_state(
    settings: Settings, encoder: Encoder, catalogue: Catalogue, metrics: Metrics
) -> ServiceState:
    """The loaded model and catalogue wired together: the inference queue, the compactor, the service layer."""
    write_lock = threading.Lock()  # one write (or compaction) at a time
    queue = InferenceQueue(
        settings.inference_concurrency,
        settings.max_queue,
        settings.queue_timeout_s,
        encoder.encode_requests,
        settings.batch_max,
        settings.batch_wait_ms / 1000,
        lambda n, _s: metrics.batch_size.observe(n),
    )
    compactor = Compactor(
        catalogue,
        write_lock,
        settings.compact_log_bytes,
        settings.compact_interval_s,
        metrics,
        settings.images_root,
    )
    service = Service(
        encoder, catalogue, queue, limits_of(settings), settings.images_root, write_lock, compactor.note_write
    )
    return ServiceState(settings, service, metrics, queue, compactor)


def create_app(
    settings: Settings, encoder: Encoder | None = None, catalogue: Catalogue | None = None
) -> FastAPI:
    """The service. Pass an already loaded `encoder` and `catalogue` to skip loading them from
    `settings.checkpoint` and `settings.index` at startup."""
    if (encoder is None) != (catalogue is None):
        raise ValueError("pass both encoder and catalogue, or neither")
    if encoder is not None and catalogue is not None:
        check_compatible(encoder, catalogue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if encoder is None:
            logger.info("loading %s and %s", settings.checkpoint, settings.index)
            loaded = await anyio.to_thread.run_sync(load_resources, settings)
        else:
            assert catalogue is not None  # passed together with encoder (checked above)
            loaded = (encoder, catalogue)
        writable = await anyio.to_thread.run_sync(open_write_log, settings, loaded[1])
        state = _service_state(settings, *loaded, metrics)
        app.state.service_state = state
        # counted in a worker thread, never on the event loop; the gauges read the last count (health.py)
        probe = app.state.catalogue_probe = CatalogueProbe(
            loaded[1], settings.ready_timeout_s, settings.ready_cache_s
        )
        metrics.items.set_function(probe.last_items)
        metrics.items_age.set_function(probe.age)
        metrics.log_bytes.set(loaded[1].log_size)
        try:
            count: int | str = await probe.count()
        except CatalogueUnavailable as exc:
            count = f"not counted yet ({exc})"
        logger.info("ready: %s items, attributes %s", count, ", ".join(loaded[1].attributes))
        try:
            async with anyio.create_task_group() as tasks:
                if writable:
                    tasks.start_soon(state.compactor.run)
                tasks.start_soon(probe.run)
                yield
                tasks.cancel_scope.cancel()
        finally:
            app.state.service_state = app.state.catalogue_probe = None
            state.queue.batcher.close()
            if writable:
                await anyio.to_thread.run_sync(final_compaction, state)

    metrics = Metrics()
    # The form parser's field limit counts every form field: room for max_candidates ids in /rerank.
    # /docs and /redoc: routes/docs.py serves them with their files, instead of FastAPI's pages from CDNs.
    app = FastAPI(
        title="asen-search",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        form_limits={"max_fields": settings.max_candidates + 16},
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service_state = app.state.catalogue_probe = None
    install_error_handlers(app)
    for module in (search, copies, tag, items, ops, page, docs):
        add_head_routes(module.router)
        app.include_router(module.router)
    openapi.install(app, settings)  # the request bodies (JSON and form) and the model's attributes
    _add_middleware(app, settings, metrics)
    return app


def _add_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Innermost first: each added one wraps the ones before (the order: docs/architecture.md)."""
    app.add_middleware(WriteInvalidates)  # a write makes the next /readyz count the items again
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if settings.rate_limit > 0:
        # what it counts: the routes marked `openapi_extra=rate_limited(...)` (service/api/overload.py)
        app.add_middleware(
            RateLimitMiddleware,
            rate=settings.rate_limit,
            burst=settings.rate_burst,
            routes=rate_limited_routes(app.router.routes),
        )
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", API_KEY_HEADER],
            max_age=600,
        )
    app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout_s)
    instrument(app, metrics)  # outermost: sees every status


def add_head_routes(router: APIRouter) -> None:
    """HEAD wherever GET works (uptime checkers use it): a twin of every GET route, the same endpoint;
    the server sends the headers only. Not in the OpenAPI schema (one operation per GET is enough)."""
    names = {route.name for route in router.routes if isinstance(route, APIRoute)}
    for route in list(router.routes):
        if isinstance(route, APIRoute) and route.methods == {"GET"} and f"{route.name}_head" not in names:
            router.add_api_route(
                route.path,
                route.endpoint,
                methods=["HEAD"],
                response_model=route.response_model,
                response_class=route.response_class,
                include_in_schema=False,
                name=f"{route.name}_head",
                dependencies=route.dependencies,
                openapi_extra=route.openapi_extra,
            )


def open_write_log(settings: Settings, catalogue: Catalogue) -> bool:
    """Open the index's write-ahead log unless the catalogue is read-only; warn when writes are
    open to anyone. False when writes are off (read-only, or the log could not be opened: then
    writes answer 503 with the reason and searches work)."""
    if catalogue.read_only or catalogue.log_error is not None:  # read-only, or refused when loading
        return False
    try:
        catalogue.open_log()
    except (OSError, LogUnavailable, StaleCatalogue) as exc:
        logger.error(
            "writes are refused: the write-ahead log in %s cannot be opened (%s); searches work",
            settings.index,
            exc,
        )
        catalogue.refuse_writes(f"the write-ahead log in the index directory cannot be opened: {exc}")
        return False
    if settings.api_key is None and writes_refused(settings):
        logger.warning(
            "writes are refused: POST /items and DELETE /items answer 403 writes_disabled, because "
            "this server listens on %s (beyond loopback) without an API key; set ASEN_API_KEY to "
            "require an X-API-Key header, or ASEN_ALLOW_OPEN_WRITES=1 to accept writes from anyone "
            "(searches work)",
            settings.host,
        )
    elif settings.api_key is None:
        logger.warning(
            "POST /items and DELETE /items are open to anyone who can reach this port%s: set "
            "ASEN_API_KEY to require an X-API-Key header",
            " (ASEN_ALLOW_OPEN_WRITES)" if settings.allow_open_writes else "",
        )
    return True


def final_compaction(state: ServiceState) -> None:
    """At clean shutdown: fold the write-ahead log into a snapshot (best effort: the log is kept
    and replayed at the next start if this fails), then close it."""
    try:
        state.compactor.compact_now()
    except Exception as exc:  # noqa: BLE001 - the log still holds every acknowledged write
        logger.error("compaction at shutdown failed (%s); the write-ahead log will be replayed at start", exc)
    state.catalogue.close()


def app_from_env() -> FastAPI:
    """For `uvicorn --factory asen_search.service.api.app:app_from_env`: settings from `ASEN_*` variables only."""
    return create_app(Settings())

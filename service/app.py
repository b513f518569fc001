"""`create_app(settings)`: the FastAPI application. Its lifespan loads the encoder and the catalogue
index once into `app.state.runtime`; requests reach them through `service.runtime.RuntimeDep`."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from index import CatalogueIndex
from model.encoder import Encoder
from service import routes_explain, routes_items, routes_ops, routes_page, routes_search
from service.errors import install_error_handlers
from service.images import BodyLimitMiddleware
from service.metrics import Metrics, MetricsMiddleware
from service.runtime import Runtime, check_compatible, load_resources
from service.settings import Settings

logger = logging.getLogger("asen.service")

DESCRIPTION = """Fine-grained, attribute-specific fashion similarity search (ASEN++).

Query with an image or a catalogue item id and an attribute (`GET /attributes`); the answer ranks
the catalogue by similarity *under that attribute only*. Errors are JSON:
`{"error": "<code>", "detail": "<what was wrong>"}`."""


def create_app(settings: Settings, encoder: Encoder | None = None, catalogue: CatalogueIndex | None = None) -> FastAPI:
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
            loaded = (encoder, catalogue)
        app.state.runtime = Runtime(settings, loaded[0], loaded[1], metrics,
                                    anyio.CapacityLimiter(settings.inference_concurrency))
        metrics.items.set(len(loaded[1]))
        logger.info("ready: %d items, attributes %s", len(loaded[1]), ", ".join(loaded[1].attributes))
        try:
            yield
        finally:
            app.state.runtime = None

    metrics = Metrics()
    app = FastAPI(title="asen-search", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = None
    install_error_handlers(app)
    for module in (routes_search, routes_explain, routes_items, routes_ops, routes_page):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)  # outermost: sees every status
    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory service.app:app_from_env`: settings from `ASEN_*` variables only."""
    return create_app(Settings())  # type: ignore[call-arg]

"""Operations: `GET /healthz` (process alive), `GET /readyz` (model and index loaded, catalogue engine
answering), `GET /metrics`. None of them waits for the catalogue engine on the event loop: the item
count is made in a worker thread, bounded in time and cached (`service/api/health.py`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from asen_search.service.api.errors import error_body
from asen_search.service.api.health import CatalogueProbe, CatalogueUnavailable
from asen_search.service.api.prometheus import Metrics
from asen_search.service.api.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is alive and answering: touches neither the model nor the catalogue."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={
        503: {
            "description": "still loading (`not_ready`), or the catalogue engine did not count its items in time "
            "(`catalogue_unavailable`)"
        }
    },
)
async def readyz(request: Request) -> ReadyResponse | JSONResponse:
    """The model and the catalogue's indexes are loaded and the catalogue engine answers; 503 until
    they are, or as soon as the engine does not count its items within `ASEN_READY_TIMEOUT_S`."""
    state = getattr(request.app.state, "service_state", None)
    probe: CatalogueProbe | None = getattr(request.app.state, "catalogue_probe", None)
    if state is None or probe is None:
        return JSONResponse(error_body("not_ready", "the model and index are still loading"), 503)
    try:
        items = await probe.count()  # in a worker thread, one at a time, cached briefly
    except CatalogueUnavailable as exc:
        return JSONResponse(error_body("catalogue_unavailable", str(exc)), 503)
    catalogue = state.catalogue  # the facts below are in memory: no engine call
    return ReadyResponse(
        status="ready",
        items=items,
        attributes=catalogue.attributes,
        dim=catalogue.dim,
        fingerprint=catalogue.fingerprint,
        read_only=catalogue.read_only,
        writes_refused=catalogue.log_error,
        log_bytes=catalogue.log_size,
    )


@router.get("/metrics", include_in_schema=True, response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests and latency per route and status, time per stage; the
    catalogue's item count as last counted (`asen_catalogue_items_age_seconds` says how long ago)."""
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.render()
    return Response(body, media_type=content_type)

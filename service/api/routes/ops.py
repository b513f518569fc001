"""Operations: `GET /healthz` (process alive), `GET /readyz` (model and index loaded), `GET /metrics`."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from asen_search.service.api.errors import error_body
from asen_search.service.api.prometheus import Metrics
from asen_search.service.api.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is alive and answering."""
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"description": "still loading"}})
async def readyz(request: Request) -> ReadyResponse | JSONResponse:
    """The model and the catalogue's indexes are loaded; 503 until they are."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return JSONResponse(error_body("not_ready", "the model and index are still loading"), 503)
    catalogue = runtime.catalogue
    return ReadyResponse(status="ready", items=len(catalogue), attributes=catalogue.attributes, dim=catalogue.dim,
                         fingerprint=catalogue.fingerprint, read_only=catalogue.read_only,
                         writes_refused=catalogue.log_error, log_bytes=catalogue.log_size)


@router.get("/metrics", include_in_schema=True, response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests and latency per route and status, time per stage."""
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.render()
    return Response(body, media_type=content_type)

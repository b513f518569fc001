"""What every route does the same way: read its body into its request model, answer with the
stage timings."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel

from asen_search.service.api.bodies import Body, BodySpec, read_request
from asen_search.service.api.prometheus import StageTimer
from asen_search.service.api.state import ServiceState

M = TypeVar("M", bound=BaseModel)
BODY_MARK = "x-asen-body"  # replaced by the request body's schemas (JSON and form) in service/api/openapi.py
BODIES: dict[str, BodySpec] = {}


async def read(state: ServiceState, request: Request, spec: BodySpec, model: type[M]) -> tuple[M, Body]:
    settings = state.settings  # room for max_candidates ids in /rerank, and the fields besides them
    return await read_request(request, spec, model, settings.max_upload_bytes, settings.max_candidates + 16)


def send_timing(response: Response, timer: StageTimer) -> None:
    response.headers["Server-Timing"] = timer.server_timing()


def body_doc(spec: BodySpec) -> dict[str, Any]:
    """The OpenAPI mark of a route whose body is read by `read` (its schemas are filled in later)."""
    BODIES[spec.model.__name__] = spec
    return {BODY_MARK: spec.model.__name__}

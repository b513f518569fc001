"""Every error the service answers is JSON: `{"error": "<code>", "detail": "<what was wrong>"}`."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from asen_search.index import CatalogueBusy, InvalidInput, ItemExists, UnknownItem
from asen_search.model.encoder import UnknownAttribute
from asen_search.model.image_input import (
    CorruptImage,
    EmptyImage,
    ImageRejected,
    ImageTooLarge,
    NotAnImage,
    TooManyPixels,
    UnsupportedFormat,
)

logger = logging.getLogger("asen.service")


class ApiError(Exception):
    """A request the service refuses, with its HTTP status, a stable code and a human message."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
               503: "unavailable"}


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(error_body(exc.code, exc.detail), exc.status, headers=exc.headers)


# The HTTP status and error code of each domain error the layers below raise: the one place they
# are mapped (image errors carry their own code).
DOMAIN_STATUS: dict[type[Exception], int] = {
    EmptyImage: 400, NotAnImage: 400, CorruptImage: 422, UnsupportedFormat: 415, ImageTooLarge: 413,
    TooManyPixels: 413, CatalogueBusy: 503, UnknownItem: 404, UnknownAttribute: 422, ItemExists: 409,
    InvalidInput: 422,
}
DOMAIN_CODE: dict[type[Exception], str] = {CatalogueBusy: "busy", UnknownItem: "unknown_item",
                                           UnknownAttribute: "unknown_attribute", ItemExists: "item_exists"}


def domain_status(exc: Exception) -> int:
    return next(status for kind, status in DOMAIN_STATUS.items() if isinstance(exc, kind))


def domain_code(exc: Exception) -> str:
    if isinstance(exc, ImageRejected | InvalidInput):   # each kind carries its own code
        return exc.code
    return next(code for kind, code in DOMAIN_CODE.items() if isinstance(exc, kind))


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body(domain_code(exc), str(exc)), domain_status(exc))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
    summary = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in problems)
    return JSONResponse(error_body("invalid_request", summary or "invalid request", errors=problems), 422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error; the service keeps running"), 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    for kind in DOMAIN_STATUS:
        app.add_exception_handler(kind, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)

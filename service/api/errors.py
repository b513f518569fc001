"""Every error the service answers is JSON: `{"error": "<code>", "detail": "<what was wrong>"}`.

`ERRORS` is the one table of every code: its HTTP status and its meaning. The exception handlers,
each route's OpenAPI responses (`responses_for`) and the error table of docs/service.md
(`markdown_table`, checked by tests/service/api/test_error_table.py) all come from it. Lower layers
raise their own domain exceptions (each with a code: `ImageRejected`, `InvalidInput`, ...; or a
class mapped in `DOMAIN_CODE`); the service layer raises `ServiceError(code, detail)`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from functools import cache
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from asen_search.index import CatalogueBusy, InvalidInput, ItemExists, UnknownItem
from asen_search.model.encoder import UnknownAttribute
from asen_search.model.image_input import ImageRejected
from asen_search.service.api.routing import plain_routes
from asen_search.service.operations.errors import ServiceError

logger = logging.getLogger("asen.service")

# code -> (HTTP status, what it means). Sorted by status; the docs' table is generated from it.
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_form": (400, "a form that cannot be parsed: malformed multipart, too many fields or files"),
    "not_an_image": (400, "the bytes sent as an image are no image"),
    "empty_image": (400, "an empty image file"),
    "invalid_base64": (400, "an image in a JSON body that is not base64"),
    "missing_api_key": (401, "a write without the X-API-Key header, on a server with ASEN_API_KEY"),
    "wrong_api_key": (401, "a write with the wrong X-API-Key"),
    "writes_disabled": (
        403,
        "a write to a server bound beyond loopback without ASEN_API_KEY or "
        "ASEN_ALLOW_OPEN_WRITES (the detail says how to enable writes)",
    ),
    "unknown_item": (404, "no item with this id in the catalogue"),
    "no_image": (404, "the item has no stored image, or it cannot be read"),
    "not_found": (404, "no such route or static file"),
    "method_not_allowed": (405, "the route does not take this method (`Allow` lists those it takes)"),
    "item_exists": (409, "an add of an id already in the catalogue (send replace=true to replace it)"),
    "read_only": (409, "a write to a memory-mapped (ASEN_MMAP) catalogue"),
    "request_too_large": (
        413,
        "the request body is over the limit (answered before reading it, or as soon as a "
        "streamed body passes it)",
    ),
    "image_too_large": (413, "the image file is over ASEN_MAX_UPLOAD_BYTES"),
    "too_many_pixels": (
        413,
        "the image is over ASEN_MAX_IMAGE_PIXELS (decompression bombs, refused from the header)",
    ),
    "unsupported_format": (415, "an image format that is not decoded (ICO, PPM, SVG, HEIC, PSD, ...)"),
    "unsupported_media_type": (
        415,
        "a body that is neither JSON (application/json) nor a form (multipart/form-data)",
    ),
    "corrupt_image": (422, "a truncated or undecodable image"),
    "invalid_image": (422, "an image that cannot be used"),
    "invalid_request": (422, "a field of the wrong type or out of its range (`errors` lists each)"),
    "invalid_json": (
        422,
        "a JSON body or JSON form field that does not parse, or nests or weighs beyond the limits",
    ),
    "unknown_field": (422, "a field the endpoint does not take (the detail names the closest one it takes)"),
    "unknown_attribute": (422, "an attribute the model does not have"),
    "query_required": (422, "neither or several of image, item_id, value and query"),
    "image_required": (422, "an item without an image or vectors, or with both"),
    "attribute_required": (422, "an image, item_id or value without an attribute"),
    "ambiguous_query": (422, "a composed query together with attribute, image, item_id or value"),
    "invalid_query": (
        422,
        "a composed query that is not a list of parts, or a part without exactly one source",
    ),
    "image_not_uploaded": (
        422,
        "a query part or a batch item names an image (a file field) that was not sent",
    ),
    "weight_out_of_range": (422, "a query part's weight outside [-1, 1]"),
    "zero_weights": (422, "every part of a composed query has weight 0"),
    "duplicate_attribute": (422, "two query parts on one attribute"),
    "unknown_value": (422, "a value with no prototype for its attribute (GET /attributes: value_search)"),
    "no_prototypes": (422, "a value query or /tag with a checkpoint that has no value prototypes"),
    "top_k_out_of_range": (422, "top_k below 1 or above ASEN_MAX_TOP_K"),
    "offset_out_of_range": (
        422,
        "an offset at or beyond the deepest a search pages to (ASEN_MAX_SEARCH_DEPTH)",
    ),
    "invalid_cursor": (422, "a cursor that this request did not issue"),
    "invalid_filters": (422, "a filter the filter language does not have"),
    "invalid_metadata": (422, "metadata that is not a JSON object within the limits, or uses a reserved key"),
    "invalid_item_id": (
        422,
        "an id that can never be an item's (empty, too long, control characters, lone surrogates)",
    ),
    "invalid_vectors": (422, "given vectors of the wrong shape, or not finite"),
    "invalid_input": (422, "a value the catalogue cannot take"),
    "fingerprint_mismatch": (422, "vectors made by another model than the catalogue's"),
    "invalid_candidates": (422, "a rerank candidate holding a comma in a form field (one id per field)"),
    "empty_candidates": (422, "a rerank without candidates"),
    "too_many_candidates": (422, "more than ASEN_MAX_CANDIDATES rerank candidates"),
    "too_many_items": (422, "a batch of more items than ASEN_MAX_BATCH_ITEMS"),
    "max_results_without_threshold": (
        422,
        "max_results without a threshold (min_score, min_precision; /copies: max_false_match_rate)",
    ),
    "conflicting_threshold": (
        422,
        "two thresholds: min_score with min_precision (/copies: with max_false_match_rate)",
    ),
    "threshold_with_top_k": (422, "top_k together with a threshold"),
    "threshold_with_group_by": (422, "group_by together with a threshold"),
    "max_results_out_of_range": (422, "max_results below 1 or above ASEN_MAX_RESULTS"),
    "min_score_out_of_range": (422, "min_score outside the range the query's scores can take"),
    "min_precision_out_of_range": (422, "min_precision outside (0, 1]"),
    "precision_needs_one_attribute": (422, "min_precision with a composed query"),
    "no_thresholds": (422, "min_precision with a checkpoint that has no precision curves"),
    "modified_out_of_range": (422, "/copies: modified below 0 or not below the number of attributes"),
    "max_false_match_rate_out_of_range": (422, "/copies: max_false_match_rate outside [0, 1]"),
    "no_copy_calibration": (
        422,
        "/copies: max_false_match_rate with a checkpoint whose copy scores were never "
        "calibrated (no `CKPT-stem.copies.json`: `asen calibrate-copies`)",
    ),
    "modified_not_calibrated": (
        422,
        "/copies: max_false_match_rate with another `modified` than the copy calibration's",
    ),
    "false_match_rate_unmeasurable": (
        422,
        "/copies: a max_false_match_rate below what the calibration's look-alike pairs can measure",
    ),
    "rate_limited": (429, "more requests than ASEN_RATE_LIMIT from this client (`Retry-After`)"),
    "not_ready": (503, "the model and catalogue are still loading"),
    "catalogue_unavailable": (503, "/readyz: the catalogue engine did not count its items in time"),
    "overloaded": (503, "the model queue is full or no model slot became free in time (`Retry-After`)"),
    "storage_unavailable": (
        503,
        "the write was not saved: the index directory cannot be written, or the log is unusable",
    ),
    "busy": (
        503,
        "the catalogue changed under the request repeatedly, or another writer held it too long: retry",
    ),
    "timeout": (504, "no answer within ASEN_REQUEST_TIMEOUT_S"),
    "insufficient_storage": (507, "the write was not saved: no space left"),
    "internal_error": (500, "a bug: the service keeps running and logs it"),
}

# the domain exceptions of the lower layers that carry no code of their own
DOMAIN_CODE: dict[type[Exception], str] = {
    CatalogueBusy: "busy",
    UnknownItem: "unknown_item",
    UnknownAttribute: "unknown_attribute",
    ItemExists: "item_exists",
}
DOMAIN_ERRORS: tuple[type[Exception], ...] = (ImageRejected, InvalidInput, *DOMAIN_CODE)

# what any route may answer whatever it does (the guards in front of every route)
GUARDS = ("request_too_large", "timeout")


def status_of(code: str) -> int:
    return ERRORS[code][0]


def domain_code(exc: Exception) -> str:
    """The code of a lower layer's exception."""
    if isinstance(exc, ImageRejected | InvalidInput):  # each kind carries its own code
        return exc.code
    return next(code for kind, code in DOMAIN_CODE.items() if isinstance(exc, kind))


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def error_response(
    code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, detail, **extra), status_of(code), headers=headers)


class ErrorResponse(BaseModel):
    error: str = Field(description="stable machine-readable code (docs/service.md, Errors)")
    detail: str = Field(description="what was wrong, for a person")


def responses_for(codes: Iterable[str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a route that may answer `codes` (plus the guards): one entry per status,
    its model's `error` an enum of exactly those codes, the description each code's meaning."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys([*codes, *GUARDS]):
        by_status.setdefault(status_of(code), []).append(code)
    out: dict[int | str, dict[str, Any]] = {}
    for status, group in sorted(by_status.items()):
        out[status] = {
            "model": _error_model(status, tuple(sorted(group))),
            "description": "; ".join(f"`{c}`: {ERRORS[c][1]}" for c in group),
        }
    return out


@cache
def _error_model(status: int, codes: tuple[str, ...]) -> type[BaseModel]:
    """An error body whose `error` is one of `codes` (one OpenAPI component per set of codes)."""
    name = f"Error{status}_" + hashlib.sha1(",".join(codes).encode()).hexdigest()[:8]
    fields: dict[str, Any] = {
        "error": (Literal[codes], Field(description="the error code")),
        "detail": (str, Field(description="what was wrong, for a person")),
    }
    return create_model(name, **fields)


def markdown_table() -> str:
    """The error table of docs/service.md."""
    lines = ["| status | code | meaning |", "|---|---|---|"]
    for code, (status, meaning) in sorted(
        ERRORS.items(), key=lambda kv: (kv[1][0], list(ERRORS).index(kv[0]))
    ):
        lines.append(f"| {status} | `{code}` | {meaning} |")
    return "\n".join(lines)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    extra = {"errors": exc.errors} if hasattr(exc, "errors") else {}  # bodies.InvalidFields: each problem
    return error_response(exc.code, exc.detail, exc.headers, **extra)


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(domain_code(exc), str(exc))


_HTTP_CODES = {400: "invalid_form", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code)
    headers = dict(getattr(exc, "headers", None) or {})
    if code == "method_not_allowed":
        headers["Allow"] = ", ".join(allowed_methods(request))
    if code is None:
        return JSONResponse(error_body("internal_error", str(exc.detail)), exc.status_code, headers=headers)
    return error_response(code, str(exc.detail), headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette's own 405 names only the first route's)."""
    methods: set[str] = set()
    for route in plain_routes(request.app.router.routes):
        match, _ = (
            route.matches({**request.scope, "method": "GET"}) if hasattr(route, "methods") else (None, None)
        )
        route_methods = getattr(route, "methods", None)
        if route_methods and match is not None and match != Match.NONE:
            methods |= set(route_methods)
    return sorted(methods)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
    summary = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in problems)
    return error_response("invalid_request", summary or "invalid request", errors=problems)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response("internal_error", "internal server error; the service keeps running")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    for kind in DOMAIN_ERRORS:
        app.add_exception_handler(kind, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)

"""`GET /docs` (Swagger UI) and `GET /redoc` (ReDoc): the interactive API documentation, with every file
they need served by this service (`GET /docs/assets/{name}`), so both work without internet.

FastAPI's own pages load Swagger UI and ReDoc from public CDNs (a blank page offline). The bundles come
from the PyPI package `fastapi-offline` (MIT; it ships the `swagger-ui-dist` 5.x bundle, Apache-2.0, and
ReDoc's 2.x standalone bundle, MIT, as plain files; its only dependency is FastAPI, and 1.7.7 carries
Swagger UI 5.32.6 and ReDoc 2.5.3). Only its files are used, not its `FastAPIOffline` app factory: the
pages here have no inline script, so a strict Content-Security-Policy covers them.
`drf-spectacular-sidecar` ships the same two bundles, updated monthly, but depends on Django."""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.docs import swagger_ui_default_parameters
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from asen_search.service.api.errors import error_body
from asen_search.service.api.http_cache import file_etag, not_modified

PACKAGE_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_URL = "/docs/assets"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The files the pages load, by name: a fixed list, so no request text reaches a path.
ASSET_NAMES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
FAVICON_URL = "/static/favicon.svg"  # the web page's icon (routes/page.py)

# Swagger UI's start, a file rather than an inline script (script-src 'self'); its settings come from the
# page's JSON data block (never executed, so the CSP does not apply to it).
SWAGGER_INIT_NAME = "swagger-init.js"
SWAGGER_INIT = """"use strict";
window.ui = SwaggerUIBundle(Object.assign(
  JSON.parse(document.getElementById("swagger-ui-config").textContent),
  { presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset] }));
"""

# What each page needs, measured in Chromium with each source left out in turn (the violations it reported;
# tests/service/browser/test_docs_offline.py fails on any): Swagger UI: its own files, the spec and "Try it out" by
# fetch, data: images (icons in its CSS), blob: images (an image answer it shows); no inline script, no eval,
# no <style> element. ReDoc: styled-components writes <style> elements at run time ('unsafe-inline' styles,
# with hashes that change with the schema; still no inline script), data: images, and its search index runs
# in a Worker made from a blob: URL. ReDoc's sidebar footer always shows a logo from cdn.redoc.ly (no option
# removes it): img-src blocks it before any request is made and ReDoc hides the image.
# No OAuth2 redirect page: the only security scheme is an API key header, which Swagger UI sends itself.
_COMMON = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SWAGGER_CSP = f"{_COMMON}; img-src 'self' data: blob:; style-src 'self'"
REDOC_CSP = f"{_COMMON}; img-src 'self' data:; style-src 'self' 'unsafe-inline'; worker-src blob:"
# The asset files themselves render nothing: nothing at all is allowed from them.
ASSET_CSP = "default-src 'none'; frame-ancestors 'none'"

router = APIRouter(include_in_schema=False)


@cache
def asset_files() -> dict[str, Path]:
    """The bundled files by name; a missing one is an install error, raised at the first request."""
    found = {name: PACKAGE_ASSETS / name for name in ASSET_NAMES}
    missing = [name for name, path in found.items() if not path.is_file()]
    if missing:
        raise RuntimeError(
            f"fastapi-offline {PACKAGE_ASSETS} lacks {', '.join(missing)}: reinstall asen-search"
        )
    return found


def _headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
        "Referrer-Policy": "no-referrer",
    }


def _data_block(value: Any) -> str:
    """JSON for a `<script type="application/json">` block: `<`, `>` and `&` escaped, so no text in it
    can close the element."""
    text = json.dumps(jsonable_encoder(value))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _openapi_url(request: Request) -> str:
    return request.scope.get("root_path", "") + (request.app.openapi_url or "/openapi.json")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    config = {
        "url": _openapi_url(request),
        **swagger_ui_default_parameters,
        **(request.app.swagger_ui_parameters or {}),
    }
    title = html.escape(f"{request.app.title} - Swagger UI")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="{root}{FAVICON_URL}">
<link rel="stylesheet" href="{root}{ASSETS_URL}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script id="swagger-ui-config" type="application/json">{_data_block(config)}</script>
<script src="{root}{ASSETS_URL}/swagger-ui-bundle.js"></script>
<script src="{root}{ASSETS_URL}/{SWAGGER_INIT_NAME}"></script>
</body>
</html>
"""
    return HTMLResponse(page, headers=_headers(SWAGGER_CSP))


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    title = html.escape(f"{request.app.title} - ReDoc")
    # <redoc spec-url> starts ReDoc when its script loads (no inline script); no Google fonts.
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="{root}{FAVICON_URL}">
</head>
<body>
<noscript>ReDoc needs JavaScript; the schema itself is at {html.escape(_openapi_url(request))}</noscript>
<redoc spec-url="{html.escape(_openapi_url(request))}"></redoc>
<script src="{root}{ASSETS_URL}/redoc.standalone.js"></script>
</body>
</html>
"""
    return HTMLResponse(page, headers=_headers(REDOC_CSP))


@router.get(f"{ASSETS_URL}/{{name}}")
async def docs_asset(request: Request, name: str) -> Response:
    """A bundled file, cached by browsers but revalidated (`no-cache` + ETag) so an upgrade shows at once."""
    headers = _headers(ASSET_CSP)
    if name == SWAGGER_INIT_NAME:
        return Response(SWAGGER_INIT, media_type=MEDIA_TYPES[".js"], headers=headers)
    path = asset_files().get(name)
    if path is None:
        return JSONResponse(error_body("not_found", f"no documentation asset {name!r}"), 404)
    tag = await anyio.to_thread.run_sync(file_etag, path)
    headers["ETag"] = tag
    if not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)

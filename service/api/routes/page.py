"""`GET /`: the web page (search, explain, rerank; plain HTML, CSS and JavaScript, no build step) and
`GET /static/{name}`: its files. The page only calls the public API, like any other client."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from asen_search.service.api.http_cache import file_etag, not_modified
from asen_search.service.operations.errors import ServiceError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything the page needs comes from here; blob: shows the user's own upload before it is sent.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


@cache
def static_files() -> dict[str, Path]:
    """The files the page may load, by name: a fixed list, so no request text reaches a path."""
    return {p.name: p for p in sorted(STATIC_DIR.iterdir()) if p.is_file() and p.suffix in MEDIA_TYPES}


async def _send(request: Request, path: Path) -> Response:
    """The file, cached by browsers but revalidated (`no-cache` + ETag) so an upgrade shows at once."""
    tag = await anyio.to_thread.run_sync(file_etag, path)
    headers = {"ETag": tag, "Cache-Control": "no-cache", **SECURITY_HEADERS}
    if not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)


@router.get("/")
async def page(request: Request) -> Response:
    return await _send(request, STATIC_DIR / "index.html")


@router.get("/static/{name}")
async def static_file(request: Request, name: str) -> Response:
    path = static_files().get(name)
    if path is None:
        raise ServiceError("not_found", f"no static file {name!r}")
    return await _send(request, path)

"""HTTP caching of files (item images, the page's static files): a strong `ETag` from the file's
identity, `Cache-Control`, and 304 answers to a matching `If-None-Match`."""

from __future__ import annotations

import hashlib

from starlette.requests import Request

from asen_search.service.jobs.locations import ImageRef, ukey


def file_etag(ref: ImageRef, variant: object = None) -> str:
    """A strong validator from the file's path, size and change time, or a URL's store key (and a
    variant of it, such as a thumbnail size). FileNotFoundError when the file is gone."""
    key = f"{ukey(ref)}\0{variant}"
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def not_modified(request: Request, tag: str) -> bool:
    """Whether the request's `If-None-Match` names `tag` (weak comparison, as RFC 9110 asks for GET)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    return any(t.strip() in ("*", tag, "W/" + tag) for t in header.split(","))

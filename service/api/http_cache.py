"""HTTP caching of files (item images, the page's static files): a strong `ETag` from the file's
identity, `Cache-Control`, and 304 answers to a matching `If-None-Match`."""
from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.requests import Request


def file_etag(path: Path, variant: object = None) -> str:
    """A strong validator from the file's path, size and change time (and a variant of it, such as
    a thumbnail size). FileNotFoundError when the file is gone."""
    stat = path.stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{variant}"
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def not_modified(request: Request, tag: str) -> bool:
    """Whether the request's `If-None-Match` names `tag` (weak comparison, as RFC 9110 asks for GET)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    return any(t.strip() in ("*", tag, "W/" + tag) for t in header.split(","))


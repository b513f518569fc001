"""Where catalogue listings and images live: a local path, or a URL that an fsspec filesystem reads
(`s3://bucket/shop/`, `gs://...`, `az://...`, `https://...`, `file:///...`).

fsspec ships the local, memory and HTTP filesystems; object stores need their driver installed
(`pip install s3fs`, `gcsfs`, `adlfs`). Credentials and endpoints come from the driver's usual
sources (for S3: `AWS_*` variables or `~/.aws`), or from fsspec's `FSSPEC_<PROTOCOL>_<OPTION>`
variables (for an S3-compatible store: `FSSPEC_S3_ENDPOINT_URL=http://minio:9000`).

A reference is a `Path` (local) or a `str` holding a URL; `as_ref` turns text back into one.
"""
from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

ImageRef = Path | str


def is_url(ref: object) -> bool:
    """A `scheme://...` reference (a single letter before `:` is a Windows drive, not a scheme)."""
    if not isinstance(ref, str):
        return False
    scheme, sep, _ = ref.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def as_ref(text: str | Path) -> ImageRef:
    """A URL stays text; anything else is a local path."""
    return text if is_url(text) else Path(text)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for `url` and the path inside it. A missing driver is a clear error
    that names what to install."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        scheme = url.partition("://")[0]
        raise RuntimeError(f"cannot read {scheme}:// locations: {exc} (install fsspec's driver for it, e.g. "
                           "`pip install s3fs` for s3://, or copy the files to a local folder)") from None


def read_bytes(ref: ImageRef) -> bytes:
    """The file's bytes. Any failure of a remote filesystem is an `OSError` (as a local one is),
    so that callers count the image as unreadable instead of stopping."""
    if not is_url(ref):
        return Path(ref).read_bytes()
    assert isinstance(ref, str)
    fs, path = filesystem(ref)
    try:
        data = fs.cat_file(path)
    except OSError:
        raise
    except Exception as exc:  # drivers raise their own errors (botocore, aiohttp): one kind for callers
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
    return bytes(data)


def read_text(ref: ImageRef) -> str:
    return read_bytes(ref).decode("utf-8")


def absolute(ref: ImageRef) -> ImageRef:
    """What an index records for an image: the absolute local path, or the URL as it is."""
    return ref if is_url(ref) else Path(ref).resolve()


def parent(ref: ImageRef) -> ImageRef:
    """The folder a listing is in (relative image paths in it are relative to that)."""
    if is_url(ref):
        assert isinstance(ref, str)
        scheme, _, rest = ref.partition("://")
        return f"{scheme}://{posixpath.dirname(rest.rstrip('/'))}"
    return Path(ref).parent


def join(base: ImageRef, relative: str) -> ImageRef:
    """`relative` (a listing's path column) against the listing's folder: a URL or an absolute path
    is taken as it is; under a URL folder, `..` is resolved as a path, never past the bucket."""
    if is_url(relative):
        return relative
    if not is_url(base):
        return Path(base) / relative
    assert isinstance(base, str)
    scheme, _, rest = base.partition("://")
    root, _, folder = rest.partition("/")
    if relative.startswith("/"):
        return f"{scheme}://{root}{posixpath.normpath(relative)}"
    joined = posixpath.normpath(posixpath.join("/" + folder, relative))
    return f"{scheme}://{root}{joined}"


def ukey(ref: ImageRef) -> str:
    """A key that changes when the file does (size and change time locally; the store's own key,
    such as S3's ETag, remotely). FileNotFoundError when it is gone."""
    if not is_url(ref):
        stat = Path(ref).stat()
        return f"{ref}\0{stat.st_size}\0{stat.st_mtime_ns}"
    assert isinstance(ref, str)
    fs, path = filesystem(ref)
    return f"{ref}\0{fs.ukey(path)}"

"""Where a catalogue item's image is kept, and how it is read back for `GET /images/{id}` and
`POST /explain`.

An item's image is named in its metadata under the private key `_image`, so it is committed,
replaced and deleted together with the item (one atomic save):

- `asen index build` stores the absolute path of the catalogue file it encoded;
- `POST /items` stores the uploaded bytes under the images root (the index directory, or
  `ASEN_IMAGES_DIR`: with Milvus a folder every replica shares) as `images/<sha256>.<ext>`
  (content-addressed: the name never comes from the request) and records that relative name;
  `asen index copy` carries those files to the new catalogue's root (carry_images.py).

The key never leaves the service: responses drop it, and requests may not set it or filter on it.
A request's item id only ever selects a catalogue entry; no request text reaches a file path.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from asen_search.fileio import atomic_write, fsync_path
from asen_search.model.image_input import ImageLimits, decode_image
from asen_search.service.jobs.locations import ImageRef, is_url, read_bytes

IMAGE_KEY = "_image"
UPLOAD_DIR = "images"
CACHE_CONTROL = "public, max-age=3600"
# PIL format -> (file suffix, media type); formats browsers do not show (TIFF) are sent as PNG.
_WEB_FORMATS = {
    "JPEG": (".jpg", "image/jpeg"),
    "MPO": (".jpg", "image/jpeg"),
    "PNG": (".png", "image/png"),
    "WEBP": (".webp", "image/webp"),
    "GIF": (".gif", "image/gif"),
    "BMP": (".bmp", "image/bmp"),
    "AVIF": (".avif", "image/avif"),
}
_SUFFIX_MEDIA = {suffix: media for suffix, media in _WEB_FORMATS.values()} | {".jpeg": "image/jpeg"}
_UPLOAD_SUFFIX = {fmt: suffix for fmt, (suffix, _) in _WEB_FORMATS.items()} | {"TIFF": ".tif"}
_UPLOAD_NAME = re.compile(rf"^{UPLOAD_DIR}/[0-9a-f]{{64}}\.(jpg|png|webp|gif|bmp|tif|avif)$")


def public_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as clients see it: without the private image reference."""
    return {k: v for k, v in metadata.items() if k != IMAGE_KEY}


def with_image(metadata: Mapping[str, Any], image: str | Path) -> dict[str, Any]:
    return {**metadata, IMAGE_KEY: str(image)}


def save_upload(index_dir: Path, data: bytes) -> str:
    """Store already validated image bytes under `index_dir/images/`; returns the name to record
    (`images/<sha256>.<ext>`). Atomic and idempotent: the same bytes always get the same file.

    The service calls it once outside its write lock (the costly part) and once more under it,
    just before logging the item: `prune_uploads` runs under that lock too, so the file an item
    is acknowledged with cannot be pruned in between (it is re-stored if it was)."""
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format
    assert fmt in _UPLOAD_SUFFIX, f"decode_image accepted an image of format {fmt}"
    name = f"{UPLOAD_DIR}/{hashlib.sha256(data).hexdigest()}{_UPLOAD_SUFFIX[fmt]}"
    path = index_dir / name
    try:
        os.utime(
            path
        )  # there already: fresh again (an unreferenced file is pruned only after a grace period)
        return name
    except FileNotFoundError:
        pass  # not there, or pruned a moment ago (by another replica sharing the folder): store it
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        fsync_path(index_dir)  # the new images/ directory itself survives a crash
    atomic_write(
        path, lambda fh: fh.write(data)
    )  # a unique temporary name: concurrent uploads of the same bytes
    return name


def is_upload(reference: object) -> bool:
    """Whether an item's `_image` names an upload of `POST /items` (`images/<sha256>.<ext>`,
    relative to the images root) rather than a path or URL that the index build recorded."""
    return isinstance(reference, str) and _UPLOAD_NAME.match(reference) is not None


def prune_uploads(index_dir: Path, referenced: set[str], grace_s: float) -> int:
    """Delete uploaded images no item names any more (deleted or replaced items, uploads whose
    write failed) and not touched for `grace_s` seconds (an upload in flight is stored before its
    item is written); returns how many were deleted. Best effort. The caller holds the service's
    write lock (see `save_upload`) and, where replicas share the folder, `Catalogue.exclusive()`
    from before `referenced` was read (service/api/compaction.py)."""
    removed, cutoff = 0, time.time() - grace_s
    try:
        entries = list((index_dir / UPLOAD_DIR).iterdir())
    except OSError:
        return 0
    for path in entries:
        name = f"{UPLOAD_DIR}/{path.name}"
        try:
            if _UPLOAD_NAME.match(name) and name not in referenced and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def stored_path(index_dir: Path | None, reference: object) -> ImageRef | None:
    """The file an item's `_image` names: an upload under `index_dir` (None: uploads are not kept),
    or an absolute path or URL that the index build recorded. None for anything else."""
    if not isinstance(reference, str):
        return None
    if is_url(reference):
        return reference
    if _UPLOAD_NAME.match(reference):
        return None if index_dir is None else index_dir / reference
    path = Path(reference)
    return path if path.is_absolute() else None


@dataclass(frozen=True)
class Rendered:
    """An image ready to send: the file as it is, or re-encoded bytes (thumbnail, or a format
    browsers cannot show)."""

    media_type: str
    path: Path | None = None
    body: bytes = b""


def render(ref: ImageRef, size: int | None, limits: ImageLimits) -> Rendered:
    """The file itself when it is a web format and no smaller size is asked for (a local file is sent
    from disk, a URL's bytes are read); else a JPEG (or PNG, for a format browsers do not show) of at
    most `size` pixels a side."""
    media = _SUFFIX_MEDIA.get(posixpath.splitext(str(ref))[1].lower())
    if size is None and media is not None:
        return Rendered(media, body=read_bytes(ref)) if is_url(ref) else Rendered(media, path=Path(ref))
    image = decode_image(read_bytes(ref), limits)
    if size is not None and max(image.size) > size:
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if size is not None:
        image.save(buffer, "JPEG", quality=85)
        return Rendered("image/jpeg", body=buffer.getvalue())
    image.save(buffer, "PNG")
    return Rendered("image/png", body=buffer.getvalue())

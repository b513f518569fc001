"""`asen index copy` carries the uploaded item images along with the items.

An item added through `POST /items` names its image as `images/<sha256>.<ext>`, relative to the
images root of the catalogue's servers (item_images.py): the index directory itself, or
`ASEN_IMAGES_DIR` (with Milvus, a folder all replicas share). Copying only the items would leave
those names pointing into the old root, so the copy also copies each such file from the source's
root to the destination's under the same content-addressed name (durably: written beside, fsynced,
renamed; the folder fsynced before the batch naming the files is written). Absolute paths and URLs
that `asen index build` recorded are kept as they are.

Everything is checked before anything is made at the destination (`plan_carry`): an upload that
cannot be carried (no images root known for the source or the destination, or the file missing at
the source) refuses the copy, naming how many items and which, and what to pass; with
`skip_missing` those items are copied without an image instead (and listed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asen_search.fileio import atomic_write, fsync_path
from asen_search.index.interface import Batch, Catalogue
from asen_search.service.jobs.item_images import IMAGE_KEY, UPLOAD_DIR, is_upload

SHOWN_IDS = 5  # item ids named in a refusal


class ImagesNotCarried(ValueError):
    """Uploaded images of the source cannot be carried to the destination (nothing was made there)."""


@dataclass
class ImageCarrier:
    """Copies the uploads a batch's items name into `dest_root` (the `carry` hook of
    `copy_catalogue`). Made by `plan_carry`, which checked every upload beforehand."""

    source_root: Path | None
    dest_root: Path | None
    uploads: frozenset[str]  # every upload the source's items name
    missing: dict[str, str]  # upload -> why it is not carried (only with skip_missing)
    skip_missing: bool = False
    progress: Callable[[int], object] = lambda n: None
    carried: set[str] = field(default_factory=set)  # uploads now at the destination
    created: list[Path] = field(default_factory=list)  # files this copy made there
    made_folder: Path | None = None  # the images/ folder, when this copy made it
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item id, why) copied without an image

    def __call__(self, batch: Batch) -> Batch:
        ids, vectors, metadata = batch
        out: list[dict[str, Any]] = []
        made_before = len(self.created)
        for item_id, meta in zip(ids, metadata, strict=True):
            name = meta.get(IMAGE_KEY)
            if not isinstance(name, str) or not is_upload(name):
                out.append(meta)  # no image, or a path / URL the build recorded: kept as it is
                continue
            why = self.missing.get(name) or (None if name in self.carried else self._carry(name))
            if why is None:
                out.append(meta)
            else:
                self.skipped.append((item_id, why))
                out.append({k: v for k, v in meta.items() if k != IMAGE_KEY})
        if len(self.created) > made_before and self.dest_root is not None:
            fsync_path(self.dest_root / UPLOAD_DIR)  # the new names are durable before the items naming them
        return ids, vectors, out

    def _carry(self, name: str) -> str | None:
        """Copy one upload; None when it is at the destination now, else why not (a file gone since
        `plan_carry`, with skip_missing; without it the copy stops)."""
        if self.source_root is None or self.dest_root is None:  # an item added to a served source meanwhile
            return self._cannot(
                f"{name} was uploaded during the copy and no images folder was given for the "
                f"{'source' if self.source_root is None else 'destination'}"
            )
        source, target = self.source_root / name, self.dest_root / name
        if not target.is_file():  # content-addressed: a file of that name holds the same bytes
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True, exist_ok=True)
                self.made_folder = self.made_folder or target.parent
                fsync_path(self.dest_root)
            try:
                with open(source, "rb") as src:
                    atomic_write(target, lambda fh: shutil.copyfileobj(src, fh), sync_dir=False)
            except FileNotFoundError:
                return self._cannot(f"{source} disappeared during the copy (is the source served?)")
            self.created.append(target)
        self.carried.add(name)
        self.progress(1)
        return None

    def _cannot(self, why: str) -> str:
        """`why` an upload met during the copy is not carried (with skip_missing), else stop the copy."""
        if not self.skip_missing:
            raise ImagesNotCarried(
                f"{why}: the copy stopped; remove what it made at the destination and copy again "
                "(from a source no server writes meanwhile), or pass --skip-missing-images"
            )
        return why

    def remove_created(self) -> None:
        """After a failed copy: delete the files it made (best effort), so the copy can be run again."""
        for path in self.created:
            path.unlink(missing_ok=True)
        if self.made_folder is not None:
            try:
                self.made_folder.rmdir()
            except OSError:
                pass


def images_root(location: str | Path, given: Path | None) -> Path | None:
    """A catalogue's images root: `given`, else an index directory's own folder; None for a Milvus
    collection without one (its servers' ASEN_IMAGES_DIR is not known here)."""
    from asen_search.index.milvus.location import is_milvus

    if given is not None:
        return given
    return None if isinstance(location, str) and is_milvus(location) else Path(location)


def _items_naming(source: Catalogue, names: set[str], batch_size: int) -> list[str]:
    """The ids of the items whose image is one of `names` (a second read, only to explain a refusal)."""
    found: list[str] = []
    for ids, _, metadata in source.iter_items(batch_size):
        found += [i for i, meta in zip(ids, metadata, strict=True) if meta.get(IMAGE_KEY) in names]
    return found


def _writable(folder: Path) -> str | None:
    """Why files cannot be made under `folder` (or the nearest folder above it that exists), or None."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def plan_carry(
    source: Catalogue,
    source_root: Path | None,
    dest_root: Path | None,
    *,
    skip_missing: bool = False,
    batch_size: int = 1000,
) -> ImageCarrier:
    """Check, before anything is made at the destination, that every upload the source's items name
    can be carried from `source_root` to `dest_root` (None: not known, a Milvus collection without
    an images folder); ImagesNotCarried, naming how many items, the first few ids and what to pass,
    when some cannot, unless `skip_missing`."""
    uploads = frozenset(v for v in source.metadata_values(IMAGE_KEY) if isinstance(v, str) and is_upload(v))
    missing: dict[str, str] = {}
    advice: list[str] = []
    if uploads and source_root is None:
        missing = dict.fromkeys(uploads, "the source's images folder was not given (--source-images-dir)")
        advice.append(
            "the source is a Milvus collection: pass --source-images-dir DIR, the folder its servers use "
            "as ASEN_IMAGES_DIR"
        )
    elif uploads:
        assert source_root is not None
        absent = sorted(n for n in uploads if not (source_root / n).is_file())
        missing = {n: f"{source_root / n} is missing" for n in absent}
        if absent:
            advice.append(
                f"{len(absent)} of the {len(uploads)} uploaded image files are not in {source_root / UPLOAD_DIR} "
                f"(e.g. {absent[0]}); if the source's servers keep them elsewhere (ASEN_IMAGES_DIR), pass "
                "that folder as --source-images-dir"
            )
    if uploads and dest_root is None:
        missing = {
            n: missing.get(n, "the destination's images folder was not given (--images-dir)") for n in uploads
        }
        advice.append(
            "the destination is a Milvus collection: pass --images-dir DIR, the folder its servers will use "
            "as ASEN_IMAGES_DIR"
        )
    if missing and not skip_missing:
        ids = _items_naming(source, set(missing), batch_size)
        shown = ", ".join(repr(i) for i in ids[:SHOWN_IDS]) + (
            f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
        )
        raise ImagesNotCarried(
            f"{len(ids)} items added through the API name uploaded images that cannot be carried "
            f"({shown}): {'; '.join(advice)}. Or pass --skip-missing-images to copy those items "
            "without their images. Nothing was copied"
        )
    if dest_root is not None and len(missing) < len(uploads):
        why = _writable(dest_root / UPLOAD_DIR)
        if why is not None:
            raise ImagesNotCarried(
                f"the uploaded images cannot be carried to {dest_root}: {why}. Nothing was copied"
            )
    return ImageCarrier(source_root, dest_root, uploads, missing, skip_missing)


@contextmanager
def cleaned_up_on_failure(carrier: ImageCarrier) -> Iterator[ImageCarrier]:
    """The carrier; if the copy fails, the image files it made are deleted again."""
    try:
        yield carrier
    except BaseException:
        carrier.remove_created()
        raise

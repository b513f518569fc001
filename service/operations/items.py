"""Catalogue items: add or replace (one, or a batch with a result each), change metadata, delete,
read, list with a cursor. An item comes with an image (encoded for every attribute) or with vectors
made elsewhere (`asen encode`), checked against the catalogue's model and dimension.

Every write is the catalogue's: on a FAISS directory appended to the write-ahead log and fsynced
before it is applied and acknowledged (a batch is one log append); on Milvus one request under the
writer lease. Uploaded images are stored (content-addressed) before the item that names them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from asen_search.index import Filter, InvalidInput, ItemExists, ItemPage, LogUnavailable, ReadOnlyCatalogue
from asen_search.model.image_input import ImageRejected
from asen_search.service.jobs.item_images import public_metadata, save_upload, with_image
from asen_search.service.jobs.tags import PREDICTED, with_tags
from asen_search.service.operations import images
from asen_search.service.operations.checks import (
    check_item_id,
    check_user_filters,
    check_user_metadata,
    check_writable,
    decode_base64,
    storage_error,
)
from asen_search.service.operations.context import Service, Stages
from asen_search.service.operations.errors import ServiceError
from asen_search.service.operations.item_checks import (
    VECTOR_BOUND,
    ItemInput,
    batch_refused,
    check_batch,
    check_batch_size,
    check_item,
)

__all__ = [
    "ItemInput",
    "VECTOR_BOUND",
    "batch_refused",
    "check_batch",
    "check_batch_size",
    "check_item",
    "check_item_id",
    "check_user_filters",
    "check_user_metadata",
    "decode_base64",
    "check_writable",
    "storage_error",
]

logger = logging.getLogger("asen.service")


@dataclass(frozen=True)
class Prepared:
    id: str
    vectors: np.ndarray  # [n_attributes, dim]
    metadata: dict[str, Any] | None
    image: bytes | None


@dataclass(frozen=True)
class Written:
    """What became of one item of a write: `created`, `replaced`, or `error` with its code."""

    id: str
    status: str
    metadata: dict[str, Any] | None = None
    error: str | None = None
    detail: str | None = None


async def prepare(service: Service, item: ItemInput, timer: Stages) -> Prepared:
    """An item checked and encoded, ready to write (nothing written yet)."""
    given = check_item(service, item)
    item_id = check_item_id(item.id)
    if given is None:
        assert item.image is not None
        picture = await images.decode(service, item.image, timer)
        vectors = await images.encode_all(service, picture, timer)
    else:
        vectors = given
    metadata = None if item.metadata is None else dict(item.metadata)
    return Prepared(item_id, vectors, metadata, item.image)


async def write_one(service: Service, item: ItemInput, replace: bool, timer: Stages) -> Written:
    """Add (or replace) one item; every refusal raised."""
    check_writable(service)
    prepared = await prepare(service, item, timer)
    await anyio.to_thread.run_sync(_store_uploads, service, [prepared])
    written = (await anyio.to_thread.run_sync(_commit, service, [prepared], replace, timer))[0]
    if written.error == "item_exists":
        raise ServiceError(
            "item_exists",
            f"item {prepared.id!r} is already in the catalogue; send replace=true to replace it",
        )
    service.after_write()
    return written


async def write_batch(
    service: Service, items: list[ItemInput], replace: bool, timer: Stages
) -> list[Written]:
    """Many items, each with its own result, once the batch is checked whole (`check_batch`): an item
    whose image cannot be read (or that exists, without `replace`, or repeats an id) is reported and the
    others are written, all in one catalogue write (one log append)."""
    check_batch(service, items)
    check_writable(service)
    outcomes: dict[int, Written] = {}
    ready: list[tuple[int, Prepared]] = []
    seen: set[str] = set()
    for n, item in enumerate(items):
        try:
            prepared = await prepare(service, item, timer)
            if prepared.id in seen:
                raise ServiceError("invalid_request", f"item {prepared.id!r} appears twice in the batch")
            seen.add(prepared.id)
            ready.append((n, prepared))
        except (ServiceError, ImageRejected, InvalidInput) as exc:
            code = exc.code
            outcomes[n] = Written(str(item.id), "error", error=code, detail=getattr(exc, "detail", str(exc)))
    if ready:
        await anyio.to_thread.run_sync(_store_uploads, service, [p for _, p in ready])
        written = await anyio.to_thread.run_sync(_commit, service, [p for _, p in ready], replace, timer)
        outcomes.update({n: w for (n, _), w in zip(ready, written)})
        service.after_write()
    return [outcomes[n] for n in range(len(items))]


def _store_uploads(service: Service, items: list[Prepared]) -> dict[str, str]:
    """Store the items' images (content-addressed, idempotent: storing again refreshes the file or
    stores it again if a pruning deleted it); their names by item id."""
    root = service.images_root
    try:
        return {p.id: save_upload(root, p.image) for p in items if root is not None and p.image is not None}
    except OSError as exc:
        raise storage_error(exc, "the item's image") from None


def _commit(service: Service, items: list[Prepared], replace: bool, timer: Stages) -> list[Written]:
    """Write prepared items in one catalogue write under the service's write lock. Their images were
    stored before (the costly part, unlocked); they are stored again under the lock the pruning of
    uploads takes, so a pruning that judged a file unreferenced before cannot delete it under a new
    item; and once more after the write for a pruning of another replica sharing the images folder
    (it holds the writer lease, so it saw this item, or ran before the write)."""
    catalogue = service.catalogue
    with service.write_lock, timer.stage("persist"):
        stored = _store_uploads(service, items)
        old = {}
        if replace:  # a replacement without metadata keeps the item's own (its tags and image are new)
            for p in items:
                if p.metadata is None and p.id in catalogue:
                    old[p.id] = {
                        k: v
                        for k, v in public_metadata(catalogue.get(p.id).metadata).items()
                        if not k.startswith(PREDICTED)
                    }
        metas = []
        for p in items:
            meta = with_tags(
                p.metadata if p.metadata is not None else old.get(p.id, {}),
                service.encoder.prototypes,
                p.vectors,
            )
            metas.append(with_image(meta, stored[p.id]) if p.id in stored else meta)
        vectors = np.stack([p.vectors for p in items])
        ids = [p.id for p in items]
        try:
            present: set[str] = set()
            if replace:
                replaced = set(catalogue.upsert(ids, vectors, metas))
                _restore_uploads(service, items)
                return [
                    Written(i, "replaced" if i in replaced else "created", public_metadata(m))
                    for i, m in zip(ids, metas)
                ]
            try:
                catalogue.add(ids, vectors, metas)
            except ItemExists as exc:  # write the others, once
                present = set(exc.ids)
                keep = [n for n, i in enumerate(ids) if i not in present]
                if keep:
                    catalogue.add([ids[n] for n in keep], vectors[keep], [metas[n] for n in keep])
        except ReadOnlyCatalogue as exc:
            raise ServiceError("read_only", str(exc)) from None
        except (OSError, LogUnavailable) as exc:
            logger.error("could not log the write of %d items: %s", len(ids), exc)
            raise storage_error(
                exc, "the item" if len(ids) == 1 else f"the batch of {len(ids)} items"
            ) from None
        _restore_uploads(service, [p for p in items if p.id not in present])
    return [
        Written(
            i,
            "error",
            error="item_exists",
            detail=f"item {i!r} is already in the catalogue; send replace=true to replace it",
        )
        if i in present
        else Written(i, "created", public_metadata(m))
        for i, m in zip(ids, metas)
    ]


def _restore_uploads(service: Service, written: list[Prepared]) -> None:
    """After the write: an image a pruning removed meanwhile is stored again. The item is durable
    already, so a failure here is logged (the image answers 404 until stored) rather than refused."""
    try:
        _store_uploads(service, written)
    except ServiceError as exc:
        logger.error("an acknowledged item's image could not be stored again: %s", exc.detail)


async def update_metadata(service: Service, item_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Set (or, with None, remove) metadata keys of one item; its vectors, image and tags stay."""
    item_id = check_item_id(item_id)
    check_user_metadata(changes)
    check_writable(service)
    with service.write_lock:
        try:
            item = await anyio.to_thread.run_sync(service.catalogue.update_metadata, item_id, dict(changes))
        except (OSError, LogUnavailable) as exc:
            raise storage_error(exc, "the change") from None
    service.after_write()
    return public_metadata(item.metadata)


async def delete(service: Service, item_id: str, timer: Stages) -> None:
    item_id = check_item_id(item_id)
    check_writable(service)

    def remove() -> list[str]:
        with service.write_lock, timer.stage("persist"):
            try:
                return service.catalogue.remove([item_id]).removed
            except (OSError, LogUnavailable) as exc:
                logger.error("could not log the deletion of %r: %s", item_id, exc)
                raise storage_error(exc, "the deletion") from None

    if not await anyio.to_thread.run_sync(remove):
        raise ServiceError("unknown_item", f"no item {item_id!r} in the catalogue")
    service.after_write()


async def get(service: Service, item_id: str) -> dict[str, Any]:
    item = await anyio.to_thread.run_sync(service.catalogue.get, check_item_id(item_id))
    return public_metadata(item.metadata)


async def list_items(service: Service, filters: Filter, limit: int, after: str | None) -> ItemPage:
    """A page of the catalogue in id order after id `after` (UnknownItem is never raised: `after`
    need not exist any more)."""
    if not 1 <= limit <= service.limits.max_top_k * 10:
        raise ServiceError(
            "invalid_request", f"limit must be between 1 and {service.limits.max_top_k * 10}, got {limit}"
        )
    return await anyio.to_thread.run_sync(lambda: service.catalogue.list_items(filters, limit, after))

"""`GET /items/{id}`, `POST /items`, `DELETE /items/{id}` (live catalogue changes, each one in
the index's write-ahead log on disk before it is acknowledged: service/api/compaction.py) and
`GET /images/{id}` (an item's image)."""
from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse

from asen_search.index import ItemExists, LogUnavailable
from asen_search.service.api.auth import WRITE_RESPONSES, require_api_key
from asen_search.service.api.compaction import storage_error
from asen_search.service.api.errors import ApiError
from asen_search.service.api.http_cache import file_etag, not_modified
from asen_search.service.api.overload import IMAGES, MODEL, rate_limited
from asen_search.service.api.params import check_item_id
from asen_search.service.api.prometheus import StageTimer
from asen_search.service.api.schemas import ERROR_RESPONSES, DeleteResponse, ItemResponse, parse_metadata
from asen_search.service.api.state import Runtime, RuntimeDep
from asen_search.service.catalogue.item_images import CACHE_CONTROL, public_metadata, render, save_upload, with_image
from asen_search.service.catalogue.tags import with_tags

router = APIRouter(tags=["items"])
logger = logging.getLogger("asen.service")
WriteAccess = Depends(require_api_key)


def _write_item(runtime: Runtime, item_id: str, vectors: np.ndarray, metadata: dict[str, Any], replace: bool,
                image: bytes, timer: StageTimer) -> bool:
    """Add (or replace) one item: logged and fsynced, then applied; returns whether it replaced an
    existing item. The catalogue decides add-if-absent itself (ItemExists: 409), atomically on every
    engine; storage failures leave the catalogue unchanged."""
    catalogue = runtime.catalogue
    with runtime.write_lock:   # with the pruning of uploads: the image stays until the item names it
        with timer.stage("persist"):
            root = runtime.settings.images_root
            try:  # under the lock pruning takes: still there
                stored = None if root is None else save_upload(root, image)
            except OSError as exc:
                raise storage_error(exc, "the item's image") from None
            meta = metadata if stored is None else with_image(metadata, stored)
            try:
                if replace:
                    return bool(catalogue.upsert([item_id], vectors[None], [meta]))
                catalogue.add([item_id], vectors[None], [meta])
                return False
            except ItemExists:
                raise ApiError(409, "item_exists", f"item {item_id!r} is already in the catalogue; send replace=true "
                               "to replace it") from None
            except (OSError, LogUnavailable) as exc:
                logger.error("could not log the write of %r: %s", item_id, exc)
                raise storage_error(exc, "the item") from None


def _delete_item(runtime: Runtime, item_id: str, timer: StageTimer) -> None:
    catalogue = runtime.catalogue
    with runtime.write_lock, timer.stage("persist"):
        try:
            removed = catalogue.remove([item_id]).removed
        except (OSError, LogUnavailable) as exc:
            logger.error("could not log the deletion of %r: %s", item_id, exc)
            raise storage_error(exc, "the deletion") from None
    if not removed:
        raise ApiError(404, "unknown_item", f"no item {item_id!r} in the catalogue")


def _after_write(runtime: Runtime) -> None:
    runtime.compactor.note_write()


@router.get("/items/{item_id:path}", response_model=ItemResponse, responses=ERROR_RESPONSES)
async def get_item(runtime: RuntimeDep, item_id: str) -> ItemResponse:
    """An item's metadata."""
    item = await anyio.to_thread.run_sync(runtime.catalogue.get, item_id)  # UnknownItem: 404 `unknown_item`
    return ItemResponse(id=item.id, metadata=public_metadata(item.metadata))


@router.post("/items", status_code=201, response_model=ItemResponse,
             responses={**ERROR_RESPONSES, **WRITE_RESPONSES,
                        200: {"model": ItemResponse, "description": "replaced (replace=true)"}},
             dependencies=[WriteAccess], openapi_extra=rate_limited(MODEL))
async def add_item(runtime: RuntimeDep, response: Response,
                   id: Annotated[str, Form(description="the new item's id")],
                   image: Annotated[UploadFile, File(description="the item's image")],
                   metadata: Annotated[str | None, Form(description="JSON object, e.g. "
                                                        '{"category": "dress"}')] = None,
                   replace: Annotated[bool, Form(description="replace an item with this id")] = False,
                   ) -> ItemResponse:
    """Encode an image for every attribute and add it to the catalogue; persisted before the answer.
    With value prototypes in the checkpoint, the predicted value of every attribute is stored too
    (`predicted.<attribute>` and `predicted.<attribute>.confidence`, usable in filters)."""
    timer = StageTimer(runtime.metrics)
    item_id = check_item_id(id)
    meta = parse_metadata(metadata)
    runtime.check_writable()
    picture, data = await runtime.read_image(image, timer)
    vectors = await runtime.encode(picture, None, timer)
    root = runtime.settings.images_root  # None: uploads are not kept (a Milvus catalogue without ASEN_IMAGES_DIR)
    try:
        if root is not None:
            await anyio.to_thread.run_sync(save_upload, root, data)  # the costly write, unlocked
    except OSError as exc:
        raise storage_error(exc, "the item's image") from None
    meta = with_tags(meta, runtime.encoder.prototypes, vectors)   # predicted values, under reserved keys
    replaced = await anyio.to_thread.run_sync(_write_item, runtime, item_id, vectors, meta, replace, data, timer)
    _after_write(runtime)
    response.status_code = 200 if replaced else 201
    response.headers["Server-Timing"] = timer.server_timing()
    return ItemResponse(id=item_id, metadata=meta)


@router.delete("/items/{item_id:path}", response_model=DeleteResponse,
               responses={**ERROR_RESPONSES, **WRITE_RESPONSES}, dependencies=[WriteAccess])
async def delete_item(runtime: RuntimeDep, response: Response, item_id: str) -> DeleteResponse:
    """Remove an item from every attribute index; persisted before the answer."""
    timer = StageTimer(runtime.metrics)
    runtime.check_writable()
    await anyio.to_thread.run_sync(_delete_item, runtime, item_id, timer)
    _after_write(runtime)
    response.headers["Server-Timing"] = timer.server_timing()
    return DeleteResponse(id=item_id, deleted=True)


IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {media: {} for media in ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp",
                                              "image/avif")}, "description": "the image"},
    304: {"description": "not modified (If-None-Match names the current ETag)"},
    404: ERROR_RESPONSES[404], 422: ERROR_RESPONSES[422], 429: ERROR_RESPONSES[429]}


# With `size` the stored image is decoded and resized: rate-limited in its own, larger budget (thumbnails).
@router.get("/images/{item_id:path}", response_class=Response, responses=IMAGE_RESPONSES,
            openapi_extra=rate_limited(IMAGES, when_query="size"))
async def item_image(runtime: RuntimeDep, request: Request, item_id: str,
                     size: Annotated[int | None, Query(ge=16, le=2048, description="at most this many pixels a "
                                                       "side (a JPEG thumbnail); default: the stored file")] = None,
                     ) -> Response:
    """A catalogue item's image, with `ETag` and `Cache-Control` (answers 304 to a matching
    `If-None-Match`); 404 `no_image` when the item has no stored image."""
    path = await runtime.item_image_path(item_id)
    try:
        tag = await anyio.to_thread.run_sync(file_etag, path, size)
        headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
        if not_modified(request, tag):
            return Response(status_code=304, headers=headers)
        rendered = await anyio.to_thread.run_sync(render, path, size, runtime.image_limits)
    except OSError as exc:
        raise ApiError(404, "no_image", f"the image of item {item_id!r} cannot be read: {exc.strerror or exc}") \
            from None
    if rendered.path is not None:
        return FileResponse(rendered.path, media_type=rendered.media_type, headers=headers)
    return Response(rendered.body, media_type=rendered.media_type, headers=headers)

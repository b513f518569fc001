"""`GET /items/{id}`, `POST /items` and `DELETE /items/{id}`: live catalogue changes, each one
committed to the index directory before it is acknowledged."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from service.errors import ApiError
from service.metrics import StageTimer
from service.runtime import Runtime, RuntimeDep, require_api_key
from service.schemas import ERROR_RESPONSES, DeleteResponse, ItemResponse, parse_metadata

router = APIRouter(tags=["items"])
logger = logging.getLogger("asen.service")
WriteAccess = Depends(require_api_key)


@dataclass(frozen=True)
class _Saved:
    """An item as it was before a write, to put it back if the write cannot be persisted."""

    vectors: np.ndarray  # [1, n_attributes, dim]
    metadata: dict[str, Any]


def _saved(runtime: Runtime, item_id: str) -> _Saved | None:
    catalogue = runtime.catalogue
    if item_id not in catalogue:
        return None
    vectors = np.stack([catalogue.vector(item_id, a) for a in catalogue.attributes])[None]
    return _Saved(vectors, catalogue.get(item_id).metadata)


def _persist_or_restore(runtime: Runtime, item_id: str, before: _Saved | None, timer: StageTimer) -> None:
    """Commit; if that fails, put the item back as it was (absent or `before`) so memory and disk
    agree, and answer 503. The caller holds the write lock."""
    try:
        runtime.persist(timer)
    except Exception as exc:
        logger.exception("could not persist a change of %r; undoing it", item_id)
        runtime.catalogue.remove([item_id])
        if before is not None:
            runtime.catalogue.add([item_id], before.vectors, [before.metadata])
        raise ApiError(503, "not_persisted", f"the change could not be saved and was undone: {exc}") from None


def _write_item(runtime: Runtime, item_id: str, vectors: np.ndarray, metadata: dict[str, Any], replace: bool,
                timer: StageTimer) -> bool:
    """Add (or replace) one item and commit; returns whether it replaced an existing item."""
    with runtime.write_lock:
        before = _saved(runtime, item_id)
        if before is not None and not replace:
            raise ApiError(409, "item_exists", f"item {item_id!r} is already in the catalogue; send replace=true "
                           "to replace it")
        try:
            runtime.catalogue.upsert([item_id], vectors[None], [metadata])
        except ValueError as exc:
            raise ApiError(422, "invalid_metadata", str(exc)) from None
        _persist_or_restore(runtime, item_id, before, timer)
        return before is not None


def _delete_item(runtime: Runtime, item_id: str, timer: StageTimer) -> None:
    with runtime.write_lock:
        before = _saved(runtime, item_id)
        if before is None:
            raise ApiError(404, "unknown_item", f"no item {item_id!r} in the catalogue")
        runtime.catalogue.remove([item_id])
        _persist_or_restore(runtime, item_id, before, timer)


@router.get("/items/{item_id:path}", response_model=ItemResponse, responses=ERROR_RESPONSES)
async def get_item(runtime: RuntimeDep, item_id: str) -> ItemResponse:
    """An item's metadata."""
    try:
        item = runtime.catalogue.get(item_id)
    except KeyError:
        raise ApiError(404, "unknown_item", f"no item {item_id!r} in the catalogue") from None
    return ItemResponse(id=item.id, metadata=item.metadata)


@router.post("/items", status_code=201, response_model=ItemResponse, responses=ERROR_RESPONSES,
             dependencies=[WriteAccess])
async def add_item(runtime: RuntimeDep, response: Response,
                   id: Annotated[str, Form(description="the new item's id")],
                   image: Annotated[UploadFile, File(description="the item's image")],
                   metadata: Annotated[str | None, Form(description="JSON object, e.g. "
                                                        '{"category": "dress"}')] = None,
                   replace: Annotated[bool, Form(description="replace an item with this id")] = False,
                   ) -> ItemResponse:
    """Encode an image for every attribute and add it to the catalogue; persisted before the answer."""
    timer = StageTimer(runtime.metrics)
    item_id = runtime.check_item_id(id)
    meta = parse_metadata(metadata)
    runtime.check_writable()
    vectors = await runtime.encode(await runtime.decode(image, timer), None, timer)
    replaced = await anyio.to_thread.run_sync(_write_item, runtime, item_id, vectors, meta, replace, timer)
    response.status_code = 200 if replaced else 201
    response.headers["Server-Timing"] = timer.server_timing()
    return ItemResponse(id=item_id, metadata=meta)


@router.delete("/items/{item_id:path}", response_model=DeleteResponse, responses=ERROR_RESPONSES,
               dependencies=[WriteAccess])
async def delete_item(runtime: RuntimeDep, response: Response, item_id: str) -> DeleteResponse:
    """Remove an item from every attribute index; persisted before the answer."""
    timer = StageTimer(runtime.metrics)
    runtime.check_writable()
    await anyio.to_thread.run_sync(_delete_item, runtime, item_id, timer)
    response.headers["Server-Timing"] = timer.server_timing()
    return DeleteResponse(id=item_id, deleted=True)

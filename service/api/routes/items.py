"""The catalogue's items: `GET /items` (a page, with a cursor and filters), `GET /items/{id}`,
`POST /items` (add or replace one), `POST /items:batch` (many, each with its own result), `PATCH
/items/{id}` (metadata only), `DELETE /items/{id}`; and `GET /images/{id}` (an item's image). The
work is the service layer's (service/operations/items.py): each write is durable before it is
acknowledged."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import WithJsonSchema
from starlette.convertors import PathConvertor, register_url_convertor

from asen_search.index import parse_filters
from asen_search.service.api.auth import WRITE_RESPONSES, require_api_key
from asen_search.service.api.bodies import closest, parse_json
from asen_search.service.api.errors import responses_for
from asen_search.service.api.http_cache import file_etag, not_modified
from asen_search.service.api.overload import IMAGES, MODEL, rate_limited
from asen_search.service.api.requests import (
    BATCH,
    ITEM,
    PATCH,
    BatchRequest,
    ItemRequest,
    PatchRequest,
    decode_cursor,
    encode_cursor,
)
from asen_search.service.api.routes.common import body_doc, read, send_timing
from asen_search.service.api.schemas import (
    BatchItemResult,
    BatchResponse,
    DeleteResponse,
    ItemResponse,
    ItemsPage,
)
from asen_search.service.api.state import ServiceStateDep
from asen_search.service.jobs.item_images import CACHE_CONTROL, render
from asen_search.service.operations import images, items
from asen_search.service.operations.checks import MAX_SELECTED_FIELDS, check_fields
from asen_search.service.operations.context import Service
from asen_search.service.operations.errors import ServiceError


class ItemIdConvertor(PathConvertor):
    """An item id in a path: any text, slashes and line breaks too (Starlette's `path` stops at a line
    break, and such a request would be 404 `not_found`); what is no id is then 422 `invalid_item_id`."""

    regex = "[\\s\\S]*"


register_url_convertor("item_id", ItemIdConvertor())
router = APIRouter(tags=["items"])
WriteAccess = Depends(require_api_key)
# what the schema says an id may be (the catalogue checks it again: 422 `invalid_item_id`)
KEY_TEXT = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"  # text without control characters
ItemIdPath = Annotated[
    str, Path(description="an item id", json_schema_extra={"pattern": KEY_TEXT, "maxLength": 512})
]
# `fields`: metadata field names, the parameter repeated once per name (?fields=a&fields=b). A single
# name is the text of one parameter, so the schema takes a name or a list of names.
FIELD_NAME = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": KEY_TEXT}
FieldsQuery = Annotated[
    list[str] | None,
    WithJsonSchema(
        {**FIELD_NAME, "type": ["array", "string"], "items": FIELD_NAME, "maxItems": MAX_SELECTED_FIELDS}
    ),
    Query(description="only these metadata fields (the parameter repeated once per field)"),
]
LIST_PARAMS = ("limit", "cursor", "filters", "include_metadata", "fields")
WRITE_CODES = (
    "invalid_form",
    "not_an_image",
    "empty_image",
    "invalid_base64",
    "image_too_large",
    "too_many_pixels",
    "unsupported_format",
    "unsupported_media_type",
    "corrupt_image",
    "invalid_request",
    "invalid_json",
    "unknown_field",
    "invalid_metadata",
    "invalid_item_id",
    "invalid_vectors",
    "fingerprint_mismatch",
    "image_required",
    "read_only",
    "rate_limited",
    "not_ready",
    "overloaded",
    "storage_unavailable",
    "insufficient_storage",
    "busy",
)
# where a new item can be read, changed and deleted (OpenAPI links: clients and stateful testers follow them)
ITEM_LINKS = {
    name: {"operationId": operation, "parameters": {"item_id": "$response.body#/id"}}
    for name, operation in (
        ("GetItem", "get_item"),
        ("PatchItem", "patch_item"),
        ("DeleteItem", "delete_item"),
        ("GetImage", "item_image"),
    )
}


@router.get(
    "/items",
    response_model=ItemsPage,
    operation_id="list_items",
    responses=responses_for(
        (
            "invalid_request",
            "invalid_json",
            "invalid_filters",
            "invalid_cursor",
            "unknown_field",
            "not_ready",
            "busy",
        )
    ),
)
async def list_items(
    state: ServiceStateDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="items a page")] = 100,
    cursor: Annotated[
        str | None,
        Query(
            description="the `next_cursor` of the previous page",
            json_schema_extra={"format": "asen-items-cursor"},
        ),
    ] = None,
    filters: Annotated[
        str | None,
        Query(
            description="a JSON object of metadata filters, as for /search",
            json_schema_extra={"format": "json-filters"},
        ),
    ] = None,
    include_metadata: Annotated[bool, Query(description="false: ids only")] = True,
    fields: FieldsQuery = None,
) -> ItemsPage:
    """The catalogue a page at a time, in id order (code points), filtered like /search. A listing
    that follows `next_cursor` returns every item that exists throughout exactly once, whatever is
    added or deleted meanwhile."""
    for name in request.query_params:
        if name not in LIST_PARAMS:
            raise ServiceError(
                "unknown_field", f"`{name}` is not a parameter of this endpoint{closest(name, LIST_PARAMS)}"
            )
    wanted = None if filters is None or not filters.strip() else parse_json(filters, "`filters`")
    if wanted is not None and not isinstance(wanted, dict):
        raise ServiceError("invalid_filters", "filters must be a JSON object of field -> value(s)")
    items.check_user_filters(wanted)
    selected = check_fields(fields)
    after = None if cursor is None else decode_cursor(cursor, "items")
    page = await items.list_items(state.service, parse_filters(wanted), limit, after)
    shown = [
        ItemResponse(id=item.id, metadata=_select(item.metadata, include_metadata, selected))
        for item in page.items
    ]
    return ItemsPage(
        items=shown, next_cursor=None if page.next_after is None else encode_cursor("items", page.next_after)
    )


def _select(metadata: dict[str, Any], include: bool, fields: tuple[str, ...] | None) -> dict[str, Any] | None:
    from asen_search.service.jobs.item_images import public_metadata

    if not include:
        return None
    shown = public_metadata(metadata)
    return shown if fields is None else {k: shown[k] for k in fields if k in shown}


@router.get(
    "/items/{item_id:item_id}",
    response_model=ItemResponse,
    operation_id="get_item",
    responses=responses_for(("unknown_item", "invalid_item_id", "not_ready")),
)
async def get_item(state: ServiceStateDep, item_id: ItemIdPath) -> ItemResponse:
    """An item's metadata."""
    return ItemResponse(id=item_id, metadata=await items.get(state.service, item_id))


@router.post(
    "/items",
    status_code=201,
    response_model=ItemResponse,
    operation_id="add_item",
    responses={
        **responses_for((*WRITE_CODES, "item_exists")),
        **WRITE_RESPONSES,
        200: {"model": ItemResponse, "description": "replaced (replace=true)", "links": ITEM_LINKS},
        201: {"description": "added", "links": ITEM_LINKS},
    },
    dependencies=[WriteAccess],
    openapi_extra={**rate_limited(MODEL), **body_doc(ITEM)},
)
async def add_item(state: ServiceStateDep, request: Request, response: Response) -> ItemResponse:
    """Add an item (or, with `replace`, replace one): its `image` encoded for every attribute, or its
    `vectors` as made elsewhere; persisted before the answer. With value prototypes in the checkpoint
    the predicted value of every attribute is stored too (`predicted.<attribute>` and
    `predicted.<attribute>.confidence`, usable in filters)."""
    timer = state.timer()
    asked, body = await read(state, request, ITEM, ItemRequest)
    item = _item_input(asked.model_dump(), body.files.get("image"))
    written = await items.write_one(state.service, item, asked.replace, timer)
    response.status_code = 200 if written.status == "replaced" else 201
    send_timing(response, timer)
    return ItemResponse(id=written.id, metadata=written.metadata)


def _item_input(fields: dict[str, Any], upload: bytes | None) -> items.ItemInput:
    """An item as sent: its image a file (a form) or base64 (JSON)."""
    image = fields.get("image")
    data = upload if image is None else _base64_image(image)
    return items.ItemInput(
        fields["id"], data, fields.get("vectors"), fields.get("fingerprint"), fields.get("metadata")
    )


def _base64_image(text: str) -> bytes:
    """A JSON body's image: base64 of a file that is not empty (the schema's `minLength` 1)."""
    data = items.decode_base64(text, "image")
    if not data:
        raise ServiceError("empty_image", "the image is empty (an empty base64 text)")
    return data


def _batch_inputs(
    service: Service, asked: BatchRequest, uploads: dict[str, bytes] | None
) -> list[items.ItemInput]:
    """A batch's items as sent, checked whole before anything is decoded or written (items.check_item,
    item by item): an item that is not what the schema describes (its id, metadata, vectors; in JSON
    an image that is no base64, or empty; in a form an image naming a file that was not uploaded)
    refuses the batch, its position named (items.batch_refused). In JSON an item's `image` is base64;
    in a form it names a file field."""
    if uploads:
        unused = sorted(set(uploads) - {item.image for item in asked.items})
        if unused:
            raise ServiceError("unknown_field", f"files no item names: {unused}")
    items.check_batch_size(service, len(asked.items))
    inputs = []
    for n, item in enumerate(asked.items):
        try:
            if uploads is None:
                image = None if item.image is None else _base64_image(item.image)
            elif item.image is not None and item.image not in uploads:
                raise ServiceError(
                    "image_not_uploaded",
                    f"the item names the file field {item.image!r}, but no file "
                    f"was uploaded under that name (uploaded: {sorted(uploads) or 'none'})",
                )
            else:
                image = None if item.image is None else uploads[item.image]
            inputs.append(items.ItemInput(item.id, image, item.vectors, item.fingerprint, item.metadata))
            items.check_item(service, inputs[-1])
        except ServiceError as exc:
            raise items.batch_refused(n, item.id, exc) from None
    return inputs


@router.post(
    "/items:batch",
    response_model=BatchResponse,
    operation_id="add_items",
    responses={**responses_for((*WRITE_CODES, "too_many_items", "image_not_uploaded")), **WRITE_RESPONSES},
    dependencies=[WriteAccess],
    openapi_extra={**rate_limited(MODEL), **body_doc(BATCH)},
)
async def add_items(state: ServiceStateDep, request: Request, response: Response) -> BatchResponse:
    """Many items in one request, each with its own result (`created`, `replaced`, or `error` with its
    code: an image that cannot be read, an id already there or sent twice); the items that can be
    written are written together, in one durable write. An item that is not what the schema describes
    (its id, metadata, image or vectors, the vectors' fingerprint and shape) refuses the whole batch:
    4xx with its code, naming the item's position, nothing written. In JSON an item's `image` is
    base64; in a form it names a file field of the form."""
    timer = state.timer()
    asked, body = await read(state, request, BATCH, BatchRequest)
    inputs = _batch_inputs(state.service, asked, body.files if body.form else None)
    written = await items.write_batch(state.service, inputs, asked.replace, timer)
    send_timing(response, timer)
    return BatchResponse(
        results=[
            BatchItemResult(id=w.id, status=w.status, metadata=w.metadata, error=w.error, detail=w.detail)
            for w in written
        ]
    )


@router.patch(
    "/items/{item_id:item_id}",
    response_model=ItemResponse,
    operation_id="patch_item",
    responses={
        **responses_for(
            (
                "invalid_form",
                "unknown_item",
                "invalid_item_id",
                "invalid_metadata",
                "invalid_request",
                "invalid_json",
                "unknown_field",
                "unsupported_media_type",
                "read_only",
                "not_ready",
                "storage_unavailable",
                "insufficient_storage",
                "busy",
            )
        ),
        **WRITE_RESPONSES,
    },
    dependencies=[WriteAccess],
    openapi_extra=body_doc(PATCH),
)
async def patch_item(state: ServiceStateDep, request: Request, item_id: ItemIdPath) -> ItemResponse:
    """Change an item's metadata only: each key of `metadata` is set, a key set to null removed; its
    vectors, image and predicted tags stay. Persisted before the answer."""
    asked, _ = await read(state, request, PATCH, PatchRequest)
    return ItemResponse(
        id=item_id, metadata=await items.update_metadata(state.service, item_id, asked.metadata)
    )


@router.delete(
    "/items/{item_id:item_id}",
    response_model=DeleteResponse,
    operation_id="delete_item",
    responses={
        **responses_for(
            (
                "unknown_item",
                "invalid_item_id",
                "read_only",
                "not_ready",
                "storage_unavailable",
                "insufficient_storage",
                "busy",
            )
        ),
        **WRITE_RESPONSES,
    },
    dependencies=[WriteAccess],
)
async def delete_item(state: ServiceStateDep, response: Response, item_id: ItemIdPath) -> DeleteResponse:
    """Remove an item from every attribute index; persisted before the answer."""
    timer = state.timer()
    await items.delete(state.service, item_id, timer)
    send_timing(response, timer)
    return DeleteResponse(id=item_id, deleted=True)


IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            media: {}
            for media in ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/avif")
        },
        "description": "the image",
    },
    304: {"description": "not modified (If-None-Match names the current ETag)"},
    **responses_for(
        (
            "unknown_item",
            "no_image",
            "invalid_item_id",
            "invalid_request",
            "rate_limited",
            "not_ready",
            "image_too_large",
            "too_many_pixels",
            "corrupt_image",
            "not_an_image",
            "unsupported_format",
        )
    ),
}


# With `size` the stored image is decoded and resized: rate-limited in its own, larger budget (thumbnails).
@router.get(
    "/images/{item_id:item_id}",
    response_class=Response,
    responses=IMAGE_RESPONSES,
    operation_id="item_image",
    openapi_extra=rate_limited(IMAGES, when_query="size"),
)
async def item_image(
    state: ServiceStateDep,
    request: Request,
    item_id: ItemIdPath,
    size: Annotated[
        int | None,
        Query(
            ge=16,
            le=2048,
            description="at most this many pixels a side (a JPEG thumbnail); default: the stored file",
        ),
    ] = None,
) -> Response:
    """A catalogue item's image, with `ETag` and `Cache-Control` (answers 304 to a matching
    `If-None-Match`); 404 `no_image` when the item has no stored image."""
    path = await images.stored_image_ref(state.service, items.check_item_id(item_id))
    try:
        tag = await anyio.to_thread.run_sync(file_etag, path, size)
        headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
        if not_modified(request, tag):
            return Response(status_code=304, headers=headers)
        rendered = await anyio.to_thread.run_sync(render, path, size, state.service.limits.images)
    except OSError as exc:
        raise ServiceError(
            "no_image", f"the image of item {item_id!r} cannot be read: {exc.strerror or exc}"
        ) from None
    if rendered.path is not None:
        return FileResponse(rendered.path, media_type=rendered.media_type, headers=headers)
    return Response(rendered.body, media_type=rendered.media_type, headers=headers)

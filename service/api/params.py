"""The request fields the query endpoints share, and their checks (each a 422 with its own code)."""
from __future__ import annotations

from typing import Annotated

from fastapi import File, Form, UploadFile

from asen_search.index import validate_id
from asen_search.service.api.errors import ApiError
from asen_search.service.api.settings import Settings

ImageField = Annotated[UploadFile | None, File(description="query image (JPEG, PNG, WebP, GIF, BMP, TIFF)")]
ItemIdField = Annotated[str | None, Form(description="query by a catalogue item instead of an image")]
AttributeField = Annotated[str, Form(description="attribute name, see GET /attributes")]


def blank_to_none(value: str | None) -> str | None:
    """A form field sent empty counts as not sent (HTML forms send empty fields)."""
    return None if value is None or value == "" else value


def check_top_k(settings: Settings, top_k: int | None) -> int:
    top_k = settings.default_top_k if top_k is None else top_k
    if not 1 <= top_k <= settings.max_top_k:
        raise ApiError(422, "top_k_out_of_range", f"top_k must be between 1 and {settings.max_top_k}, got {top_k}")
    return top_k


def check_item_id(item_id: str) -> str:
    try:
        return validate_id(item_id)
    except (TypeError, ValueError) as exc:
        raise ApiError(422, "invalid_item_id", str(exc)) from None


def check_one_query(image: UploadFile | None, item_id: str | None) -> None:
    if (image is None) == (item_id is None):
        raise ApiError(422, "query_required", "send exactly one of `image` (a file) or `item_id`")

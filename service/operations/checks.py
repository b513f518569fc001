"""The checks the service layer makes of what a request sends, and how a refused write is told."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from asen_search.index import NO_SPACE_ERRNOS, LogUnavailable, validate_id
from asen_search.index.errors import InvalidInput, InvalidItemId
from asen_search.index.validation import check_key
from asen_search.service.jobs.item_images import IMAGE_KEY
from asen_search.service.jobs.tags import PREDICTED, reserved_keys
from asen_search.service.operations.context import Service
from asen_search.service.operations.errors import ServiceError


def check_item_id(item_id: str) -> str:
    try:
        return validate_id(item_id)
    except InvalidItemId as exc:
        raise ServiceError("invalid_item_id", str(exc)) from None


def check_user_metadata(metadata: object, what: str = "metadata") -> None:
    """A JSON object with no key a user may not set: the private image reference, the predicted tags."""
    if not isinstance(metadata, Mapping):
        raise ServiceError(f"invalid_{what}", f"{what} must be a JSON object, got {type(metadata).__name__}")
    if IMAGE_KEY in metadata:
        raise ServiceError(
            f"invalid_{what}",
            f"{what} may not use the key {IMAGE_KEY!r}: it is reserved for the item's stored image",
        )
    reserved = reserved_keys(metadata)
    if reserved and what == "metadata":
        raise ServiceError(
            "invalid_metadata",
            f"metadata keys starting with {PREDICTED!r} are reserved for the "
            f"predicted tags the service adds: rename {reserved}",
        )


MAX_SELECTED_FIELDS = 64  # metadata fields one request may select (`fields`)


def check_field_name(name: str, what: str) -> str:
    """A metadata field a request names (`fields`, `group_by`): a possible metadata key, 1 to 256
    characters without control characters; 422 `invalid_request`."""
    try:
        return check_key(name, what, InvalidInput)
    except InvalidInput as exc:
        raise ServiceError("invalid_request", str(exc)) from None


def check_fields(fields: list[str] | None) -> tuple[str, ...] | None:
    """The metadata fields a request selects (`fields`): at most MAX_SELECTED_FIELDS names, each a
    possible metadata key (`check_field_name`); 422 `invalid_request`."""
    if fields is None:
        return None
    if len(fields) > MAX_SELECTED_FIELDS:
        raise ServiceError(
            "invalid_request", f"`fields` names {len(fields)} fields; at most {MAX_SELECTED_FIELDS}"
        )
    return tuple(check_field_name(name, "`fields` names") for name in fields)


def check_user_filters(filters: object) -> None:
    """Filters are a JSON object that does not probe the private image reference."""
    if filters is not None:
        check_user_metadata(filters, "filters")


def decode_base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError("invalid_base64", f"{field} must be base64 (standard alphabet, padded)") from None


def check_writable(service: Service) -> None:
    catalogue = service.catalogue
    if catalogue.read_only:
        raise ServiceError("read_only", "the index was loaded memory-mapped (ASEN_MMAP) and is read-only")
    problem = catalogue.log_error
    if problem is not None:
        raise ServiceError("storage_unavailable", f"writes are refused: {problem}")


def storage_error(exc: BaseException, what: str) -> ServiceError:
    """The error for a write that storage refused (`what`: "the item", "the image", ...)."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return ServiceError(
            "insufficient_storage",
            f"{what} was not saved: no space left for the index "
            f"({exc.strerror or exc}); nothing was changed and searches keep working",
        )
    if isinstance(exc, LogUnavailable):
        return ServiceError("storage_unavailable", f"{what} was not saved: {exc}")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ServiceError(
        "storage_unavailable",
        f"{what} was not saved: the index directory cannot be written "
        f"({reason}); nothing was changed and searches keep working",
    )

"""What an item to write says, checked before anything is decoded or written: its id, its metadata
(the service's keys refused; the catalogue's limits), exactly one of an image or vectors, and given
vectors (the model's fingerprint, their shape, finite numbers within +-VECTOR_BOUND).

A batch is checked whole first (`check_batch`): an item that is not what the request schema
describes refuses the whole batch, its position named, nothing written. What only the catalogue's
state or an image's bytes can tell (an id already there, an id twice in the batch, an image that
cannot be read) is that item's own result (service/operations/items.py `write_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from asen_search.index import InvalidMetadata
from asen_search.index.validation import check_metadata
from asen_search.service.operations.checks import check_item_id, check_user_metadata
from asen_search.service.operations.context import Service
from asen_search.service.operations.errors import ServiceError

VECTOR_BOUND = 1e6  # given vectors' numbers lie within +- this (they are scaled to length 1)


@dataclass(frozen=True)
class ItemInput:
    """One item to write, as sent: an image, or vectors `[n_attributes][dim]` with the fingerprint of
    the model that made them; metadata (None: none given)."""

    id: str
    image: bytes | None = None
    vectors: Any = None
    fingerprint: str | None = None
    metadata: Mapping[str, Any] | None = None


def given_vectors(service: Service, item: ItemInput) -> np.ndarray:
    """An item's vectors, checked against the catalogue's model and shape, scaled to length 1."""
    catalogue = service.catalogue
    if item.fingerprint != catalogue.fingerprint:
        raise ServiceError(
            "fingerprint_mismatch",
            f"item {item.id!r}: vectors made by model {item.fingerprint!r}; this "
            f"catalogue's model is {catalogue.fingerprint!r} (send `fingerprint` with the vectors)",
        )
    try:  # the bound is judged on the numbers sent (64-bit), before float32 rounds 1000000.01 to 1e6
        given = np.asarray(item.vectors, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ServiceError("invalid_vectors", f"item {item.id!r}: vectors must be numbers") from None
    shape = (len(catalogue.attributes), catalogue.dim)
    if given.shape != shape or not np.isfinite(given).all() or np.abs(given).max(initial=0) > VECTOR_BOUND:
        raise ServiceError(
            "invalid_vectors",
            f"item {item.id!r}: vectors must be {shape[0]} lists of {shape[1]} "
            f"numbers within +-{VECTOR_BOUND:g} (one per attribute, in GET /attributes' order), got "
            f"{list(given.shape)}",
        )
    vectors = given.astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(norms > 0, vectors / np.where(norms > 0, norms, 1), 0).astype(np.float32)  # to length 1


def check_item(service: Service, item: ItemInput, has_image: bool | None = None) -> np.ndarray | None:
    """What an item's fields say (see the module docstring); the vectors, scaled to length 1, where
    the item gives them; a ServiceError with the code of the first problem. `has_image`: whether an
    image was sent (default: `item.image`)."""
    item_id = check_item_id(item.id)
    if item.metadata is not None:
        check_user_metadata(item.metadata)
        try:
            check_metadata(item.metadata)
        except InvalidMetadata as exc:
            raise ServiceError("invalid_metadata", str(exc)) from None
    image = item.image is not None if has_image is None else has_image
    if image == (item.vectors is not None):
        raise ServiceError("image_required", f"item {item_id!r}: send exactly one of `image` or `vectors`")
    return None if image else given_vectors(service, item)


def check_batch_size(service: Service, n: int) -> None:
    if n < 1:
        raise ServiceError("invalid_request", "send at least one item")
    if n > service.limits.max_batch_items:
        raise ServiceError(
            "too_many_items",
            f"{n} items; at most {service.limits.max_batch_items} per request (ASEN_MAX_BATCH_ITEMS)",
        )


def batch_refused(n: int, item_id: object, problem: ServiceError) -> ServiceError:
    """The refusal of a whole batch for its item at position `n`: the item's code, its position named."""
    shown = repr(item_id)[:80] if isinstance(item_id, str) else "without an id"
    return ServiceError(
        problem.code,
        f"items[{n}] ({shown}): {problem.detail}; the batch was refused whole, nothing was written",
    )


def check_batch(service: Service, items: list[ItemInput], has_image: list[bool] | None = None) -> None:
    """Every item of a batch as the request schema describes it (`check_item`): the first item that
    is not refuses the whole batch (`batch_refused`)."""
    check_batch_size(service, len(items))
    for n, item in enumerate(items):
        try:
            check_item(service, item, None if has_image is None else has_image[n])
        except ServiceError as exc:
            raise batch_refused(n, item.id, exc) from None

"""Images of a request: bytes decoded and checked off the event loop, encoded through the model
queue; a catalogue item's stored image."""

from __future__ import annotations

import anyio
import numpy as np
from PIL import Image

from asen_search.model.encoder import Explanation
from asen_search.model.image_input import decode_image
from asen_search.service.jobs.item_images import IMAGE_KEY, stored_path
from asen_search.service.jobs.locations import ImageRef, read_bytes
from asen_search.service.operations.context import Service, Stages
from asen_search.service.operations.errors import ServiceError


async def decode(service: Service, data: bytes, timer: Stages) -> Image.Image:
    """Checked, decoded RGB image (ImageRejected subclasses: each with its code)."""
    with timer.stage("decode"):
        return await anyio.to_thread.run_sync(decode_image, data, service.limits.images)


async def encode(service: Service, image: Image.Image, attributes: list[int], timer: Stages) -> np.ndarray:
    """One image under several attributes: `[len(attributes), dim]`, batched with concurrent requests."""
    with timer.stage("encode"):
        vectors: np.ndarray = await service.queue.run_batched((image, attributes))
    return vectors


async def encode_all(service: Service, image: Image.Image, timer: Stages) -> np.ndarray:
    """`[n_attributes, dim]`."""
    return await encode(service, image, list(range(len(service.encoder.attributes))), timer)


async def explain(service: Service, image: Image.Image, attribute: int, timer: Stages) -> Explanation:
    with timer.stage("encode"):
        return await service.queue.run(lambda: service.encoder.explain(image, attribute))


async def stored_image_ref(service: Service, item_id: str) -> ImageRef:
    """The file an item's image is kept in; UnknownItem (404) or 404 `no_image`."""
    item = await anyio.to_thread.run_sync(service.catalogue.get, item_id)
    path = stored_path(service.images_root, item.metadata.get(IMAGE_KEY))
    if path is None:
        raise ServiceError(
            "no_image",
            f"item {item_id!r} has no stored image (its index was built before images were "
            "recorded: rebuild it with `asen index build`)",
        )
    return path


async def stored_image(service: Service, item_id: str, timer: Stages) -> Image.Image:
    """A catalogue item's stored image, decoded off the event loop."""
    path = await stored_image_ref(service, item_id)

    def load() -> Image.Image:
        try:
            data = read_bytes(path)
        except OSError as exc:
            raise ServiceError(
                "no_image", f"the image of item {item_id!r} cannot be read: {exc.strerror or exc}"
            ) from None
        return decode_image(data, service.limits.images)

    with timer.stage("decode"):
        return await anyio.to_thread.run_sync(load)

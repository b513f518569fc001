"""What a running service holds (model, catalogue, limits, metrics) and the request-facing steps
that use them: read and decode an image, run the model through the bounded inference queue, look
up a query vector. Loading: service/resources.py; request checks: params.py; the API key: auth.py."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

import anyio
import numpy as np
from fastapi import Depends, Request, UploadFile
from PIL import Image

from asen_search.index import Catalogue
from asen_search.model.encoder import Encoder, Explanation
from asen_search.model.image_input import ImageLimits, ImageTooLarge, decode_image
from asen_search.service.api.compaction import Compactor
from asen_search.service.api.errors import ApiError
from asen_search.service.api.overload import InferenceQueue
from asen_search.service.api.params import check_one_query
from asen_search.service.api.prometheus import Metrics, StageTimer
from asen_search.service.api.settings import Settings
from asen_search.service.catalogue.item_images import IMAGE_KEY, stored_path
from asen_search.service.catalogue.locations import ImageRef, read_bytes

logger = logging.getLogger("asen.service")
T = TypeVar("T")


@dataclass
class Runtime:
    """The loaded service: one per app, in `app.state.runtime`."""

    settings: Settings
    encoder: Encoder
    catalogue: Catalogue
    metrics: Metrics
    queue: InferenceQueue
    compactor: Compactor
    write_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.settings.max_upload_bytes, self.settings.max_image_pixels)

    def attribute_id(self, name: str) -> int:
        """UnknownAttribute (422 `unknown_attribute`) for a name the model does not have."""
        return self.encoder.attribute_id(name)

    def check_writable(self) -> None:
        if self.catalogue.read_only:
            raise ApiError(409, "read_only", "the index was loaded memory-mapped (ASEN_MMAP) and is read-only")
        problem = self.catalogue.log_error
        if problem is not None:
            raise ApiError(503, "storage_unavailable", f"writes are refused: {problem}")

    async def read_image(self, upload: UploadFile, timer: StageTimer) -> tuple[Image.Image, bytes]:
        """Read an upload (at most the byte limit) and decode it off the event loop; also returns
        the bytes (to store them)."""
        with timer.stage("decode"):
            data = await upload.read(self.settings.max_upload_bytes + 1)
            if len(data) > self.settings.max_upload_bytes:
                raise ImageTooLarge(f"the image is over the limit of {self.settings.max_upload_bytes} bytes")
            return await anyio.to_thread.run_sync(decode_image, data, self.image_limits), data

    async def decode(self, upload: UploadFile, timer: StageTimer) -> Image.Image:
        return (await self.read_image(upload, timer))[0]

    async def _infer(self, work: Callable[[], T], timer: StageTimer) -> T:
        """Model work in a thread through the bounded inference queue, timed as `encode`."""
        with timer.stage("encode"):
            return await self.queue.run(work)

    async def encode(self, image: Image.Image, attribute: int | None, timer: StageTimer) -> np.ndarray:
        """One image -> `[dim]` for one attribute, or `[n_attributes, dim]` for all (attribute None);
        batched with concurrent requests (`Encoder.encode_requests`)."""
        attrs = list(range(len(self.encoder.attributes))) if attribute is None else [attribute]
        vectors = await self.encode_attributes(image, attrs, timer)
        return vectors if attribute is None else vectors[0]

    async def encode_attributes(self, image: Image.Image, attributes: list[int], timer: StageTimer) -> np.ndarray:
        """One image under several attributes: `[len(attributes), dim]`, batched with concurrent
        requests (`Encoder.encode_requests`)."""
        with timer.stage("encode"):
            vectors: np.ndarray = await self.queue.run_batched((image, attributes))
        return vectors

    async def explain(self, image: Image.Image, attribute: int, timer: StageTimer) -> Explanation:
        """The attribute's attention map `[h, w]` and RoI box for one image."""
        return await self._infer(lambda: self.encoder.explain(image, attribute), timer)

    async def item_image_path(self, item_id: str) -> ImageRef:
        """The stored image file of a catalogue item; 404 when the item or its image is unknown."""
        # UnknownItem (404 `unknown_item`) when there is no such item
        reference = (await anyio.to_thread.run_sync(self.catalogue.get, item_id)).metadata.get(IMAGE_KEY)
        path = stored_path(self.settings.images_root, reference)
        if path is None:
            raise ApiError(404, "no_image", f"item {item_id!r} has no stored image (its index was built before "
                           "images were recorded: rebuild it with `asen index build`)")
        return path

    async def item_image(self, item_id: str, timer: StageTimer) -> Image.Image:
        """A catalogue item's stored image, decoded off the event loop."""
        path = await self.item_image_path(item_id)

        def load() -> Image.Image:
            try:
                data = read_bytes(path)
            except OSError as exc:
                raise ApiError(404, "no_image", f"the image of item {item_id!r} cannot be read: "
                               f"{exc.strerror or exc}") from None
            return decode_image(data, self.image_limits)

        with timer.stage("decode"):
            return await anyio.to_thread.run_sync(load)

    async def query_vector(self, attribute: str, image: UploadFile | None, item_id: str | None,
                           timer: StageTimer) -> np.ndarray:
        """The query `[dim]` under `attribute`: an uploaded image encoded, or a catalogue item's vector."""
        attr = self.attribute_id(attribute)
        check_one_query(image, item_id)
        if image is not None:
            return await self.encode(await self.decode(image, timer), attr, timer)
        assert item_id is not None
        # off the event loop, as every catalogue call: it may wait for a write being applied
        return await anyio.to_thread.run_sync(self.catalogue.vector, item_id, attribute)


def get_runtime(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise ApiError(503, "not_ready", "the model and index are still loading")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

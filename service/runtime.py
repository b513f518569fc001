"""What a running service holds (model, catalogue, limits, metrics) and the request-facing steps
that use them: decode an upload, encode off the event loop, look up a query vector, persist."""
from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from fastapi import Depends, Request, Security, UploadFile
from fastapi.security import APIKeyHeader
from PIL import Image

from index import CatalogueIndex, DirectoryUnwritable, validate_id
from model.encoder import Encoder, Explanation
from model.image_input import ImageLimits, ImageTooLarge, decode_image
from service.durability import Compactor
from service.errors import ApiError
from service.guards import InferenceQueue
from service.item_images import IMAGE_KEY, stored_path
from service.metrics import Metrics, StageTimer
from service.settings import Settings

API_KEY_HEADER = "X-API-Key"
logger = logging.getLogger("asen.service")
T = TypeVar("T")


def load_resources(settings: Settings) -> tuple[Encoder, CatalogueIndex]:
    """Load the model and its catalogue; ValueError when they do not belong together.

    Unless memory-mapped (read-only), the catalogue is loaded as its directory's one writer: the
    directory's lock is taken before anything is read and held until shutdown, so a second server
    or an offline compaction or build of the same directory is refused (DirectoryLocked, naming
    this process). A directory that cannot be written at all is loaded without the lock: searches
    work and writes answer 503."""
    encoder = Encoder.from_checkpoint(settings.checkpoint)
    try:
        catalogue = CatalogueIndex.load(settings.index, expected_fingerprint=encoder.fingerprint, mmap=settings.mmap,
                                        writer=not settings.mmap)
    except DirectoryUnwritable as exc:
        logger.error("%s; writes will be refused", exc)
        catalogue = CatalogueIndex.load(settings.index, expected_fingerprint=encoder.fingerprint)
        catalogue.refuse_writes(f"the index directory cannot be written: {exc}")
    try:
        check_compatible(encoder, catalogue)
    except ValueError:
        catalogue.close()
        raise
    return encoder, catalogue


def check_compatible(encoder: Encoder, catalogue: CatalogueIndex) -> None:
    if catalogue.attributes != encoder.attribute_names or catalogue.dim != encoder.dim:
        raise ValueError(f"the index has attributes {catalogue.attributes} of dim {catalogue.dim}; the model "
                         f"has {encoder.attribute_names} of dim {encoder.dim}: rebuild the index with this model")


def check_compatible_manifest(encoder: Encoder, manifest: dict[str, Any]) -> None:
    """The checks of loading, from an index's manifest alone: same model, attributes and dim."""
    if manifest["fingerprint"] != encoder.fingerprint:
        raise ValueError(f"the index at version {manifest['version']} was built by another model (fingerprint "
                         f"{manifest['fingerprint'][:12]}, this checkpoint {encoder.fingerprint[:12]}): rebuild "
                         "it with `asen index build`")
    if manifest["attributes"] != encoder.attribute_names or manifest["dim"] != encoder.dim:
        raise ValueError(f"the index has attributes {manifest['attributes']} of dim {manifest['dim']}; the model "
                         f"has {encoder.attribute_names} of dim {encoder.dim}: rebuild the index with this model")


@dataclass
class Runtime:
    """The loaded service: one per app, in `app.state.runtime`."""

    settings: Settings
    encoder: Encoder
    catalogue: CatalogueIndex
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

    def check_top_k(self, top_k: int | None) -> int:
        top_k = self.settings.default_top_k if top_k is None else top_k
        if not 1 <= top_k <= self.settings.max_top_k:
            raise ApiError(422, "top_k_out_of_range", f"top_k must be between 1 and {self.settings.max_top_k}, "
                           f"got {top_k}")
        return top_k

    def check_item_id(self, item_id: str) -> str:
        try:
            return validate_id(item_id)
        except (TypeError, ValueError) as exc:
            raise ApiError(422, "invalid_item_id", str(exc)) from None

    @staticmethod
    def check_one_query(image: UploadFile | None, item_id: str | None) -> None:
        if (image is None) == (item_id is None):
            raise ApiError(422, "query_required", "send exactly one of `image` (a file) or `item_id`")

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
        """One image -> `[dim]` for one attribute, or `[n_attributes, dim]` for all (attribute None)."""
        attrs = None if attribute is None else [attribute]
        vectors = await self._infer(lambda: self.encoder.encode([image], attrs, batch_size=1), timer)
        return vectors[0] if attribute is None else vectors[0, 0]

    async def explain(self, image: Image.Image, attribute: int, timer: StageTimer) -> Explanation:
        """The attribute's attention map `[h, w]` and RoI box for one image."""
        return await self._infer(lambda: self.encoder.explain(image, attribute), timer)

    async def item_image_path(self, item_id: str) -> Path:
        """The stored image file of a catalogue item; 404 when the item or its image is unknown."""
        # UnknownItem (404 `unknown_item`) when there is no such item
        reference = (await anyio.to_thread.run_sync(self.catalogue.get, item_id)).metadata.get(IMAGE_KEY)
        path = stored_path(self.settings.index, reference)
        if path is None:
            raise ApiError(404, "no_image", f"item {item_id!r} has no stored image (its index was built before "
                           "images were recorded: rebuild it with `asen index build`)")
        return path

    async def item_image(self, item_id: str, timer: StageTimer) -> Image.Image:
        """A catalogue item's stored image, decoded off the event loop."""
        path = await self.item_image_path(item_id)

        def load() -> Image.Image:
            try:
                data = path.read_bytes()
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
        self.check_one_query(image, item_id)
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
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="needed by write endpoints when "
                        "the service has an API key (ASEN_API_KEY)")


def require_api_key(runtime: RuntimeDep, key: Annotated[str | None, Security(_api_key)]) -> None:
    """Write endpoints: 401 unless the configured key (if any) is sent in `X-API-Key`."""
    expected = runtime.settings.api_key
    if expected is None:
        return
    challenge = {"WWW-Authenticate": API_KEY_HEADER}
    if not key:
        raise ApiError(401, "missing_api_key", f"this endpoint needs the {API_KEY_HEADER} header", challenge)
    if not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise ApiError(401, "wrong_api_key", f"the {API_KEY_HEADER} header is wrong", challenge)

"""Uploaded image bytes -> a validated RGB PIL image, and the hard limit on request body size.

Each way an upload can be wrong has its own status: too many bytes 413, too many pixels 413
(decompression bombs are refused from the header, before any pixel is decoded), a format we do not
decode 415, bytes that are no image at all 400, an image that cannot be decoded (truncated,
corrupt) 422.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model.preprocess import to_rgb
from service.errors import ApiError, error_body
from service.settings import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_UPLOAD_BYTES

DECODED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF"})
# Recognised by magic bytes so that they get 415 (a real image we do not decode), not 400.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")
_FOREIGN_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    *((4, b"ftyp" + brand, "HEIC" if brand.startswith(b"he") else "HEIF") for brand in _HEIF_BRANDS),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"), (0, b"\xff\x0a", "JPEG XL"), (0, b"8BPS", "PSD"),
)
_SNIFF_BYTES = 4096  # an SVG's `<svg` tag may follow an XML prolog, a doctype and comments
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


def _foreign_format(head: bytes) -> str | None:
    for offset, magic, name in _FOREIGN_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()  # a UTF-8 byte order mark, then markup
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!doctype", b"<!--")) and b"<svg" in text):
        return "SVG"
    return None


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Validate and decode image bytes into an RGB image (EXIF orientation applied).

    Raises ApiError with status 413 (bytes or pixels), 415 (unsupported format), 400 (not an
    image) or 422 (truncated or corrupt).
    """
    if not data:
        raise ApiError(400, "empty_image", "the image file is empty")
    if len(data) > limits.max_bytes:
        raise ApiError(413, "image_too_large", f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    foreign = _foreign_format(data[:_SNIFF_BYTES])
    if foreign is not None:
        raise ApiError(415, "unsupported_format", f"{foreign} images are not supported; send "
                       f"{', '.join(sorted(DECODED_FORMATS - {'MPO'}))}")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "too_many_pixels", f"image refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ApiError(400, "not_an_image", "the file is not an image (its format could not be identified)") from None
    except _DECODE_ERRORS as exc:
        raise ApiError(422, "corrupt_image", f"the image header could not be read: {exc}") from None
    with img:
        if img.format not in DECODED_FORMATS:
            raise ApiError(415, "unsupported_format", f"{img.format} images are not supported; send "
                           f"{', '.join(sorted(DECODED_FORMATS - {'MPO'}))}")
        width, height = img.size
        if width * height > limits.max_pixels:
            raise ApiError(413, "too_many_pixels", f"the image is {width} x {height} = {width * height} pixels; "
                           f"the limit is {limits.max_pixels}")
        if width < 1 or height < 1:
            raise ApiError(422, "corrupt_image", f"the image has no pixels ({width} x {height})")
        try:
            img.load()
            return to_rgb(img)
        except _DECODE_ERRORS as exc:
            raise ApiError(422, "corrupt_image", f"the {img.format} image could not be decoded "
                           f"(truncated or corrupt): {exc}") from None


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413: at once when Content-Length says so (the body
    is never read), else as soon as the streamed body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        # isascii: str.isdigit() also holds for "²" (latin-1 header bytes), which int() refuses.
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        received, exceeded, app_started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise ApiError(413, "request_too_large", "request body over the limit")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_started
            if exceeded and not app_started:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            app_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or app_started:
                raise
        if exceeded and not app_started:
            await self._refuse(send, received)

    async def _refuse(self, send: Send, size: int) -> None:
        body = json.dumps(error_body("request_too_large", f"the request body has at least {size} bytes; "
                                     f"the limit is {self.max_bytes}")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

"""Image bytes -> a validated RGB PIL image, for every way images come in: uploads to the service,
catalogue files of an index build, stored item images.

Each way bytes can be wrong is its own exception (a subclass of ``ImageRejected``, with a stable
``code``): too many bytes, too many pixels (decompression bombs are refused from the header, before
any pixel is decoded), a format we do not decode, bytes that are no image at all, an image that
cannot be decoded (truncated, corrupt). The service maps them to HTTP statuses in one place
(``service/api/errors.py``); the index build counts them as skipped images.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from asen_search.model.nn.preprocess import to_rgb

MIB = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 10 * MIB
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


class ImageRejected(ValueError):
    """Image bytes that are not taken; ``code`` says why (stable, shown to API clients)."""

    code = "invalid_image"


class EmptyImage(ImageRejected):
    code = "empty_image"


class NotAnImage(ImageRejected):
    code = "not_an_image"


class CorruptImage(ImageRejected):
    code = "corrupt_image"


class UnsupportedFormat(ImageRejected):
    code = "unsupported_format"


class ImageTooLarge(ImageRejected):
    code = "image_too_large"


class TooManyPixels(ImageRejected):
    code = "too_many_pixels"


DECODED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF"})
# Recognised by magic bytes so that they get 415 (a real image we do not decode), not 400.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")
_FOREIGN_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    *((4, b"ftyp" + brand, "HEIC" if brand.startswith(b"he") else "HEIF") for brand in _HEIF_BRANDS),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"8BPS", "PSD"),
)
_SNIFF_BYTES = 4096  # an SVG's `<svg` tag may follow an XML prolog, a doctype and comments
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


def _foreign_format(head: bytes) -> str | None:
    for offset, magic, name in _FOREIGN_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()  # a UTF-8 byte order mark, then markup
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!doctype", b"<!--")) and b"<svg" in text):
        return "SVG"
    return None


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Validate and decode image bytes into an RGB image (EXIF orientation applied).

    Raises an ImageRejected subclass: EmptyImage, ImageTooLarge, UnsupportedFormat, TooManyPixels
    (before any pixel is decoded), NotAnImage or CorruptImage (truncated or corrupt).
    """
    if not data:
        raise EmptyImage("the image file is empty")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    foreign = _foreign_format(data[:_SNIFF_BYTES])
    if foreign is not None:
        raise UnsupportedFormat(
            f"{foreign} images are not supported; send {', '.join(sorted(DECODED_FORMATS - {'MPO'}))}"
        )
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"image refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise NotAnImage("the file is not an image (its format could not be identified)") from None
    except _DECODE_ERRORS as exc:
        raise CorruptImage(f"the image header could not be read: {exc}") from None
    with img:
        if img.format not in DECODED_FORMATS:
            raise UnsupportedFormat(
                f"{img.format} images are not supported; send {', '.join(sorted(DECODED_FORMATS - {'MPO'}))}"
            )
        width, height = img.size
        if width * height > limits.max_pixels:
            raise TooManyPixels(
                f"the image is {width} x {height} = {width * height} pixels; the limit is {limits.max_pixels}"
            )
        if width < 1 or height < 1:
            raise CorruptImage(f"the image has no pixels ({width} x {height})")
        try:
            img.load()
            return to_rgb(img)
        except _DECODE_ERRORS as exc:
            raise CorruptImage(
                f"the {img.format} image could not be decoded (truncated or corrupt): {exc}"
            ) from None

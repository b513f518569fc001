"""Image decoding: each way an image can be wrong has its own domain error and code, and the API's
one mapping (`service/api/errors.py` DOMAIN_STATUS) gives each its status."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from PIL import Image

from asen_search.model.image_input import ImageLimits, ImageRejected, decode_image
from asen_search.service.api.errors import domain_code, status_of

LIMITS = ImageLimits(max_bytes=2_000_000, max_pixels=4_000_000)


def _encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _photo(size: tuple[int, int] = (120, 80)) -> Image.Image:
    return Image.radial_gradient("L").resize(size).convert("RGB")


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    detail: str


def _refused(data: bytes, limits: ImageLimits = LIMITS) -> Refusal:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, limits)
    return Refusal(status_of(domain_code(info.value)), info.value.code, str(info.value))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_supported_formats_decode_to_rgb(fmt: str) -> None:
    image = decode_image(_encoded(_photo(), fmt), LIMITS)
    assert image.mode == "RGB" and image.size == (120, 80)


def test_alpha_grey_and_exif_orientation() -> None:
    rgba = Image.new("RGBA", (10, 6), (255, 0, 0, 0))
    assert decode_image(_encoded(rgba, "PNG"), LIMITS).getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(_encoded(Image.new("L", (5, 5), 9), "PNG"), LIMITS).mode == "RGB"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated = decode_image(_encoded(_photo((120, 80)), "JPEG", exif=exif), LIMITS)
    assert rotated.size == (80, 120)


@pytest.mark.parametrize("data", [b"hello, world", b"%PDF-1.4 not an image", b"\x00" * 64])
def test_not_an_image_is_400(data: bytes) -> None:
    error = _refused(data)
    assert (error.status, error.code) == (400, "not_an_image")


def test_empty_is_400() -> None:
    assert _refused(b"").status == 400


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_is_422(fmt: str) -> None:
    data = _encoded(_photo((300, 200)), fmt)
    error = _refused(data[: len(data) // 2])
    assert (error.status, error.code) == (422, "corrupt_image")


def test_unsupported_formats_are_415() -> None:
    assert _refused(_encoded(_photo((32, 32)), "ICO")).status == 415
    assert _refused(_encoded(_photo((32, 32)), "PPM")).status == 415
    assert _refused(b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>').status == 415
    assert _refused(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64).status == 415


def test_too_many_bytes_is_413() -> None:
    data = _encoded(_photo(), "PNG")
    error = _refused(data, ImageLimits(max_bytes=len(data) - 1, max_pixels=10**9))
    assert (error.status, error.code) == (413, "image_too_large")


def test_decompression_bomb_is_413_before_decoding() -> None:
    bomb = _encoded(Image.new("1", (6000, 6000)), "PNG")  # 36 M pixels in a few kB
    assert len(bomb) < 50_000
    error = _refused(bomb)
    assert (error.status, error.code) == (413, "too_many_pixels")
    assert "6000 x 6000" in error.detail

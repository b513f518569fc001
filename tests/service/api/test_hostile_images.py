"""Hostile and unusual image uploads, through HTTP: every one gets a precise answer (a search, or a
4xx JSON error with its code), never a 5xx, and the service keeps answering afterwards.

Equivalences are checked by ranking: an upload that should decode to the same pixels as a plain
PNG must give exactly the same results (ids and scores) as that PNG."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from asen_search.model.image_input import ImageLimits, ImageRejected, decode_image
from asen_search.service.api.app import create_app
from asen_search.service.api.errors import domain_code, status_of
from asen_search.service.api.settings import Settings

ID = "test-00000"  # catalogue items of the demo test split, by position
OTHER = "test-00017"
ORIENTATION = 0x0112  # EXIF tag
LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000)


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def api(tiny_checkpoint: Path, index_dir: Path) -> Iterator[TestClient]:
    """The service on a writable copy of the index; server errors come back as 500 responses."""
    with TestClient(
        create_app(Settings(checkpoint=tiny_checkpoint, index=index_dir)), raise_server_exceptions=False
    ) as client:
        yield client


def _catalogue_path(demo_dataset: Path, item_id: str) -> Path:
    return demo_dataset / "images" / "test" / f"{int(item_id[5:]):05d}.jpg"


def _catalogue_image(demo_dataset: Path, item_id: str) -> Image.Image:
    with Image.open(_catalogue_path(demo_dataset, item_id)) as img:
        return img.convert("RGB")


def _encoded(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _ranking(client: TestClient, data: bytes, attribute: str = "colour") -> list[tuple[str, float]]:
    """The top 10 (id, score) of a search with `data` as the query image."""
    response = client.post("/search", data={"attribute": attribute}, files={"image": ("q", data)})
    assert response.status_code == 200, response.text
    return [(hit["id"], hit["score"]) for hit in response.json()["results"]]


def _same_ranking(left: list[tuple[str, float]], right: list[tuple[str, float]]) -> bool:
    return [i for i, _ in left] == [i for i, _ in right] and np.allclose(
        [s for _, s in left], [s for _, s in right], atol=1e-5
    )


def _upload_everywhere(client: TestClient, data: bytes) -> list[httpx.Response]:
    """The bytes as the query image of /search, /explain and /rerank, and as a new item's image."""
    image = {"image": ("upload", data)}
    return [
        client.post("/search", data={"attribute": "colour"}, files=image),
        client.post("/explain", data={"attribute": "colour"}, files=image),
        client.post("/rerank", data={"attribute": "colour", "candidates": [ID]}, files=image),
        client.post("/items", data={"id": "hostile-upload"}, files=image),
    ]


def _refused_everywhere(client: TestClient, data: bytes, status: int, code: str) -> None:
    for response in _upload_everywhere(client, data):
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert body["error"] == code and body["detail"], body
    _still_answers(client)


def _still_answers(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200
    response = client.post("/search", data={"attribute": "colour", "item_id": ID, "top_k": "3"})
    assert response.status_code == 200 and len(response.json()["results"]) == 3


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_rgb16(pixels: np.ndarray) -> bytes:
    """A 48-bit (16 bits a channel) RGB PNG of `[h, w, 3]` uint16 pixels (Pillow cannot write one)."""
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return _png(pixels.shape[1], pixels.shape[0], 16, 2, zlib.compress(rows))


# -- not images, broken images ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_are_400_not_an_image(api: TestClient, seed: int) -> None:
    """Random bytes are not an image: 400."""
    _refused_everywhere(api, random.Random(seed).randbytes(4096), 400, "not_an_image")


CODES = {400: {"not_an_image"}, 413: {"too_many_pixels"}, 415: {"unsupported_format"}, 422: {"corrupt_image"}}


@pytest.mark.parametrize(
    "magic",
    [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x10\x00\x00WEBP", b"II*\x00", b"BM"],
)
def test_random_bytes_behind_a_magic_number_are_4xx(api: TestClient, magic: bytes) -> None:
    """Random bytes after a real format's magic number: whatever the noise says (no header, a
    header declaring billions of pixels, undecodable data), a 4xx with its code, never a 5xx."""
    for seed in range(3):
        for response in _upload_everywhere(api, magic + random.Random(seed).randbytes(4096)):
            assert response.status_code in CODES, (magic, seed, response.text)
            assert response.json()["error"] in CODES[response.status_code], (magic, seed, response.text)
    _still_answers(api)


def _seed_images() -> list[bytes]:
    base = Image.radial_gradient("L").resize((48, 32)).convert("RGB")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    frames = [base, base.rotate(90)]
    return [
        _encoded(base, "JPEG", exif=exif),
        _encoded(base, "PNG"),
        _encoded(base.convert("P"), "PNG", transparency=0),
        _encoded(base, "GIF", save_all=True, append_images=frames),
        _encoded(base, "WEBP", exif=exif),
        _encoded(base, "TIFF", compression="tiff_lzw"),
        _encoded(base, "BMP"),
    ]


SEED_IMAGES = _seed_images()


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    st.sampled_from(SEED_IMAGES),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    st.floats(0.05, 1),
)
def test_mutated_images_decode_or_get_a_4xx(
    original: bytes, edits: list[tuple[float, int]], keep: float
) -> None:
    """Valid images of every decoded format with bytes overwritten and the tail cut: the decoder
    behind every upload either returns an RGB image or refuses with a 4xx, nothing else."""
    data = bytearray(original)
    for where, value in edits:
        data[int(where * len(data))] = value
    try:
        image = decode_image(bytes(data[: max(1, int(keep * len(data)))]), LIMITS)
    except ImageRejected as error:
        assert error.code in CODES.get(status_of(domain_code(error)), set()), (
            status_of(domain_code(error)),
            error.code,
        )
    else:
        assert image.mode == "RGB" and min(image.size) >= 1


def test_truncated_jpeg_is_422(api: TestClient, demo_dataset: Path) -> None:
    """A JPEG cut anywhere after its header is corrupt (422), even when only the end marker is
    missing; cut inside its first marker it is not recognisably an image (400)."""
    jpeg = _catalogue_path(demo_dataset, ID).read_bytes()
    for cut in (10, 100, len(jpeg) // 2, len(jpeg) - 2, len(jpeg) - 1):
        _refused_everywhere(api, jpeg[:cut], 422, "corrupt_image")
    _refused_everywhere(api, jpeg[:2], 400, "not_an_image")


def test_truncated_png_is_422(api: TestClient, demo_dataset: Path) -> None:
    """A PNG cut inside its pixel data is corrupt (422); cut inside its header, not an image (400).
    One cut only through the IEND trailer still holds every pixel: it decodes like the whole file."""
    png = _encoded(_catalogue_image(demo_dataset, ID), "PNG")
    for cut in (60, len(png) // 3, len(png) // 2, len(png) - 40):
        _refused_everywhere(api, png[:cut], 422, "corrupt_image")
    for cut in (8, 30):
        _refused_everywhere(api, png[:cut], 400, "not_an_image")
    assert _same_ranking(_ranking(api, png[:-12]), _ranking(api, png))  # IEND (12 bytes) dropped


# -- extreme sizes ---------------------------------------------------------------------------


def test_one_pixel_image_is_searched(api: TestClient) -> None:
    """1 x 1 px: upscaled like any small image; search and explain answer 200."""
    data = _encoded(Image.new("RGB", (1, 1), (180, 30, 40)), "PNG")
    assert len(_ranking(api, data)) == 10
    explained = api.post("/explain", data={"attribute": "colour"}, files={"image": ("q", data)})
    assert explained.status_code == 200, explained.text
    assert (explained.json()["width"], explained.json()["height"]) == (1, 1)


@pytest.mark.parametrize("size", [(1, 20_000), (20_000, 1)])
def test_one_by_twenty_thousand_pixels_is_searched(api: TestClient, size: tuple[int, int]) -> None:
    """1 x 20,000 px is 20,000 pixels, far under the pixel limit, so it is accepted: search and
    explain answer 200 (the model's square crop is 1 px wide), a new item with it is stored, and
    its thumbnail keeps the aspect ratio."""
    data = _encoded(Image.linear_gradient("L").resize(size).convert("RGB"), "PNG")
    assert len(_ranking(api, data)) == 10
    explained = api.post("/explain", data={"attribute": "sleeve_length"}, files={"image": ("q", data)})
    assert explained.status_code == 200, explained.text
    assert (explained.json()["width"], explained.json()["height"]) == size
    assert api.post("/items", data={"id": "thin"}, files={"image": ("q", data)}).status_code == 201
    thumbnail = api.get("/images/thin", params={"size": 16})
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail.content)) as img:
        assert max(img.size) == 16 and min(img.size) == 1


@pytest.mark.parametrize("bomb", ["png_2e10_pixels", "png_64e6_pixels", "gif_4e9_pixels"])
def test_decompression_bomb_is_413_before_decoding(api: TestClient, bomb: str) -> None:
    """A few hundred bytes that declare billions (or just over the 40 M limit) of pixels: 413 from
    the header alone. The pixel data is garbage, so decoding it would have answered 422 instead."""
    garbage = zlib.compress(b"\x00" * 1000)
    data = {
        "png_2e10_pixels": _png(100_000, 200_000, 8, 2, garbage),  # Pillow's own bomb check
        "png_64e6_pixels": _png(8_000, 8_000, 1, 0, garbage),  # over our limit, under Pillow's
        "gif_4e9_pixels": b"GIF89a"
        + struct.pack("<HH", 65535, 65535)
        + b"\x00\x00\x00"
        + b",\x00\x00\x00\x00"
        + struct.pack("<HH", 65535, 65535)
        + b"\x00\x02\x02\x44\x01\x00;",
    }[bomb]
    assert len(data) < 2_000
    _refused_everywhere(api, data, 413, "too_many_pixels")


# -- colour modes ----------------------------------------------------------------------------


def test_cmyk_jpeg_finds_its_catalogue_item(api: TestClient, demo_dataset: Path) -> None:
    """A CMYK JPEG of a catalogue image is converted to RGB: that item comes first."""
    data = _encoded(_catalogue_image(demo_dataset, ID).convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "CMYK"
    ranking = _ranking(api, data)
    assert ranking[0][0] == ID and ranking[0][1] > 0.99


def test_palette_png_decodes_like_its_rgb_pixels(api: TestClient, demo_dataset: Path) -> None:
    """A palette PNG searches exactly like the same pixels as RGB; with a transparent palette
    entry, like those pixels on white."""
    palette = _catalogue_image(demo_dataset, ID).quantize(64)
    as_rgb = _encoded(palette.convert("RGB"), "PNG")
    assert _same_ranking(_ranking(api, _encoded(palette, "PNG")), _ranking(api, as_rgb))
    transparent = int(np.asarray(palette)[0, 0])  # the background's palette entry
    on_white = np.asarray(palette.convert("RGB")).copy()
    on_white[np.asarray(palette) == transparent] = 255
    assert _same_ranking(
        _ranking(api, _encoded(palette, "PNG", transparency=transparent)),
        _ranking(api, _encoded(Image.fromarray(on_white), "PNG")),
    )


def test_sixteen_bit_pngs_are_searched(api: TestClient, demo_dataset: Path) -> None:
    """48-bit RGB PNG: its high bytes are the 8-bit image, so the catalogue item comes first with
    score 1. 16-bit greyscale: scaled so that its brightest pixel is 255 (model/preprocess.to_rgb),
    it searches exactly like that 8-bit greyscale image."""
    rgb = np.asarray(_catalogue_image(demo_dataset, ID)).astype(np.uint16) * 257
    ranking = _ranking(api, _png_rgb16(rgb))
    assert ranking[0][0] == ID and ranking[0][1] == pytest.approx(1.0, abs=1e-4)
    grey16 = np.asarray(_catalogue_image(demo_dataset, OTHER).convert("L")).astype(np.uint16) * 200
    data = _encoded(Image.fromarray(grey16), "PNG")
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "I;16"
    stretched = (grey16 / grey16.max() * 255).astype(np.uint8)
    assert _same_ranking(_ranking(api, data), _ranking(api, _encoded(Image.fromarray(stretched), "PNG")))


def test_alpha_channel_is_composited_on_white(api: TestClient, demo_dataset: Path) -> None:
    """RGBA: opaque pixels as they are (the item first, score 1), transparent ones as white."""
    rgb = _catalogue_image(demo_dataset, ID)
    opaque = rgb.copy()
    opaque.putalpha(255)
    ranking = _ranking(api, _encoded(opaque, "PNG"))
    assert ranking[0][0] == ID and ranking[0][1] == pytest.approx(1.0, abs=1e-4)
    half = np.asarray(rgb).copy()
    alpha = np.zeros(half.shape[:2], np.uint8)
    alpha[:, : half.shape[1] // 2] = 255  # left half opaque, right half transparent
    on_white = half.copy()
    on_white[alpha == 0] = 255
    rgba = Image.fromarray(np.dstack([half, alpha]), "RGBA")
    composited = _encoded(Image.fromarray(on_white), "PNG")
    assert _same_ranking(_ranking(api, _encoded(rgba, "PNG")), _ranking(api, composited))


# -- animations ------------------------------------------------------------------------------


def _frames(demo_dataset: Path) -> list[Image.Image]:
    first = _catalogue_image(demo_dataset, ID)
    return [first] + [_catalogue_image(demo_dataset, i).resize(first.size) for i in (OTHER, "test-00063")]


def test_animated_gif_is_searched_by_its_first_frame(api: TestClient, demo_dataset: Path) -> None:
    """An animated GIF searches exactly like its first frame alone (as a still PNG), not like a
    later frame."""
    data = _encoded(
        _frames(demo_dataset)[0],
        "GIF",
        save_all=True,
        append_images=_frames(demo_dataset)[1:],
        duration=100,
        loop=0,
    )
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.n_frames == 3
        first = gif.convert("RGB")
        gif.seek(1)
        second = gif.convert("RGB")
    ranking = _ranking(api, data)
    assert _same_ranking(ranking, _ranking(api, _encoded(first, "PNG")))
    assert not _same_ranking(ranking, _ranking(api, _encoded(second, "PNG")))


def test_animated_webp_is_searched_by_its_first_frame(api: TestClient, demo_dataset: Path) -> None:
    """A lossless animated WebP whose first frame is a catalogue image finds that item first,
    exactly like the first frame alone, not like a later frame."""
    frames = _frames(demo_dataset)
    data = _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    with Image.open(io.BytesIO(data)) as webp:
        assert webp.n_frames == 3
    ranking = _ranking(api, data)
    assert ranking[0][0] == ID and ranking[0][1] == pytest.approx(1.0, abs=1e-4)
    assert _same_ranking(ranking, _ranking(api, _encoded(frames[0], "PNG")))
    assert not _same_ranking(ranking, _ranking(api, _encoded(frames[1], "PNG")))


# -- EXIF orientation ------------------------------------------------------------------------

# EXIF orientation -> the transpose that, applied to the upright pixels, gives the stored pixels
# (a viewer applies the inverse, and sees the upright photo).
STORED_AS = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
}


@pytest.mark.parametrize("item_id", [ID, OTHER, "test-00063"])
def test_exif_rotated_photo_finds_its_catalogue_item(
    api: TestClient, demo_dataset: Path, item_id: str
) -> None:
    """A catalogue image stored rotated (or mirrored) with the EXIF orientation that shows it
    upright finds that item first under several attributes; the same pixels without the tag do
    not match it as well."""
    upright = _catalogue_image(demo_dataset, item_id)
    for orientation, transpose in STORED_AS.items():
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        stored = upright.transpose(transpose)
        tagged, untagged = (
            _encoded(stored, "JPEG", quality=95, exif=exif),
            _encoded(stored, "JPEG", quality=95),
        )
        for attribute in ("colour", "neckline", "sleeve_length"):
            ranking = _ranking(api, tagged, attribute)
            assert ranking[0][0] == item_id, (orientation, attribute, ranking[:3])
            plain = dict(_ranking(api, untagged, attribute))
            assert plain.get(item_id, -1.0) < ranking[0][1], (orientation, attribute)


# -- formats we do not decode ------------------------------------------------------------------

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
FOREIGN = {
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200,
    "heif_mif1": b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic" + b"\x00" * 200,
    "heic_heix": b"\x00\x00\x00\x18ftypheix\x00\x00\x00\x00mif1heix" + b"\x00" * 200,
    "heif_sequence_msf1": b"\x00\x00\x00\x18ftypmsf1\x00\x00\x00\x00mif1msf1" + b"\x00" * 200,
    "heic_hevx": b"\x00\x00\x00\x18ftyphevx\x00\x00\x00\x00mif1hevx" + b"\x00" * 200,
    "svg": SVG,
    "svg_xml_prolog": b'<?xml version="1.0" encoding="UTF-8"?>\n' + SVG,
    "svg_doctype": b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/'
    b'svg11.dtd">\n' + SVG,
    "svg_bom_comment": b"\xef\xbb\xbf<!-- " + b"x" * 1500 + b" -->\n" + SVG,
}


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_heic_and_svg_are_415(api: TestClient, name: str) -> None:
    """HEIC/HEIF and SVG (bare, after an XML prolog, a doctype, or a byte order mark and a long
    comment) are images we do not decode: 415 naming the format."""
    _refused_everywhere(api, FOREIGN[name], 415, "unsupported_format")
    detail = api.post("/search", data={"attribute": "colour"}, files={"image": ("q", FOREIGN[name])}).json()[
        "detail"
    ]
    assert ("SVG" if name.startswith("svg") else "HEI") in detail

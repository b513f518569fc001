"""Every bad input gets its 4xx status and a JSON body `{"error", "detail"}`; the service keeps
answering afterwards."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings

MAX_UPLOAD = 60_000
API_KEY = "s3cret-key"


@pytest.fixture
def strict(tiny_checkpoint: Path, index_dir: Path) -> Iterator[TestClient]:
    """Small limits and an API key."""
    settings = Settings(
        checkpoint=tiny_checkpoint,
        index=index_dir,
        api_key=API_KEY,
        max_upload_bytes=MAX_UPLOAD,
        max_form_overhead_bytes=20_000,
        max_image_pixels=1_000_000,
        max_top_k=50,
        max_candidates=20,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(size: tuple[int, int] = (200, 150)) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize(size).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def _search(client: TestClient, data: bytes, **fields: str) -> object:
    return client.post("/search", data={"attribute": "colour", **fields}, files={"image": ("q", data)})


def _check(response: object, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) >= {"error", "detail"} and body["detail"], body
    if code is not None:
        assert body["error"] == code, body


def _still_answers(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200
    good = client.post("/search", data={"attribute": "colour", "item_id": "test-00001", "top_k": "3"})
    assert good.status_code == 200 and len(good.json()["results"]) == 3


def test_bad_images(strict: TestClient) -> None:
    jpeg = _jpeg((300, 200))
    icon = io.BytesIO()
    Image.new("RGB", (32, 32)).save(icon, "ICO")
    cases = [
        (b"definitely not an image", 400, "not_an_image"),
        (b"", 400, "empty_image"),
        (jpeg[: len(jpeg) // 2], 422, "corrupt_image"),
        (icon.getvalue(), 415, "unsupported_format"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "unsupported_format"),
        (_png(Image.new("1", (1200, 1000))), 413, "too_many_pixels"),
        (b"\xff\xd8" + b"\x00" * (MAX_UPLOAD + 10), 413, "image_too_large"),
    ]
    for data, status, code in cases:
        _check(_search(strict, data), status, code)
        _check(
            strict.post(
                "/items", data={"id": "x"}, files={"image": ("q", data)}, headers={"X-API-Key": API_KEY}
            ),
            status,
            code,
        )
    _still_answers(strict)


def test_request_over_the_byte_limit_is_413(strict: TestClient) -> None:
    huge = b"\xff\xd8" + b"\x00" * (
        MAX_UPLOAD * 4 // 3 + 30_000
    )  # past room for a base64 image and the fields
    _check(_search(strict, huge), 413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'--b\r\nContent-Disposition: form-data; name="attribute"\r\n\r\ncolour\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="q"\r\n\r\n'
        for _ in range(20):
            yield b"\x00" * 10_000
        yield b"\r\n--b--\r\n"

    streamed = strict.post(
        "/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    _check(streamed, 413, "request_too_large")
    _still_answers(strict)


def test_bad_fields(strict: TestClient) -> None:
    by_id = {"item_id": "test-00001"}
    cases = [
        ({"attribute": "sheen", **by_id}, 422, "unknown_attribute"),
        ({"attribute": "colour", "item_id": "no-such-item"}, 404, "unknown_item"),
        ({"attribute": "colour", "top_k": "0", **by_id}, 422, "top_k_out_of_range"),
        ({"attribute": "colour", "top_k": "51", **by_id}, 422, "top_k_out_of_range"),
        ({"attribute": "colour", "top_k": "ten", **by_id}, 422, "invalid_request"),
        ({"attribute": "colour"}, 422, "query_required"),
        ({"attribute": "colour", "filters": "{not json", **by_id}, 422, "invalid_json"),
        ({"attribute": "colour", "filters": '["a"]', **by_id}, 422, "invalid_filters"),
        ({"attribute": "colour", "filters": '{"colour": {"$ne": 1}}', **by_id}, 422, "invalid_filters"),
        ({**by_id}, 422, "attribute_required"),
    ]
    for fields, status, code in cases:
        _check(strict.post("/search", data=fields), status, code)
    both = strict.post("/search", data={"attribute": "colour", **by_id}, files={"image": ("q", _jpeg())})
    _check(both, 422, "query_required")
    _check(strict.get("/items/no-such-item"), 404, "unknown_item")
    for path in ("/items/bad%0Aid", "/items/%08", "/images/bad%0Aid"):  # any text routes: an id, or no id
        _check(strict.get(path), 422, "invalid_item_id")
    _check(
        strict.patch("/items/bad%0Aid", json={"metadata": {}}, headers={"X-API-Key": API_KEY}),
        422,
        "invalid_item_id",
    )
    _check(strict.get("/no/such/route"), 404)
    _check(strict.put("/search"), 405)
    _still_answers(strict)


def test_bad_rerank(strict: TestClient) -> None:
    base = {"attribute": "colour", "item_id": "test-00001"}
    _check(strict.post("/rerank", data=base), 422, "empty_candidates")
    _check(
        strict.post("/rerank", data={**base, "candidates": [f"c{i}" for i in range(21)]}),
        422,
        "too_many_candidates",
    )
    _check(strict.post("/rerank", data={**base, "candidates": ["test-00002"], "weight": "1.5"}), 422)
    _check(
        strict.post("/rerank", data={**base, "attribute": "sheen", "candidates": ["test-00002"]}),
        422,
        "unknown_attribute",
    )
    _check(strict.post("/rerank", data={**base, "item_id": "zz", "candidates": ["test-00002"]}), 404)
    _still_answers(strict)


def test_api_key_and_write_fields(strict: TestClient) -> None:
    image = {"image": ("q.jpg", _jpeg())}
    _check(strict.post("/items", data={"id": "n1"}, files=image), 401, "missing_api_key")
    _check(
        strict.post("/items", data={"id": "n1"}, files=image, headers={"X-API-Key": "wrong"}),
        401,
        "wrong_api_key",
    )
    _check(strict.delete("/items/test-00001"), 401, "missing_api_key")
    _check(strict.delete("/items/test-00001", headers={"X-API-Key": "nope"}), 401, "wrong_api_key")
    assert strict.get("/items/test-00001").status_code == 200  # reads need no key
    key = {"X-API-Key": API_KEY}
    _check(strict.post("/items", data={"id": "bad\nid"}, files=image, headers=key), 422, "invalid_item_id")
    _check(
        strict.post("/items", data={"id": "n1", "metadata": "[1, 2]"}, files=image, headers=key),
        422,
        "invalid_metadata",
    )
    _check(
        strict.post("/items", data={"id": "n1", "metadata": "{oops"}, files=image, headers=key),
        422,
        "invalid_json",
    )
    _check(strict.post("/items", data={"id": "n1"}, headers=key), 422, "image_required")
    _check(strict.delete("/items/no-such-item", headers=key), 404, "unknown_item")
    assert strict.post("/items", data={"id": "n1"}, files=image, headers=key).status_code == 201
    assert strict.delete("/items/n1", headers=key).status_code == 200
    _still_answers(strict)


def test_read_only_index_refuses_writes(tiny_checkpoint: Path, index_dir: Path) -> None:
    settings = Settings(checkpoint=tiny_checkpoint, index=index_dir, mmap=True)
    with TestClient(create_app(settings)) as client:
        _check(client.delete("/items/test-00001"), 409, "read_only")
        _check(client.post("/items", data={"id": "n"}, files={"image": ("q", _jpeg())}), 409, "read_only")
        _still_answers(client)

"""What the web page stands on, over the in-process client: `POST /explain`, `GET /images/{id}`, the
private image reference in metadata, and the page's own files."""

from __future__ import annotations

import hashlib
import io
import tomllib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from asen_search.index import FaissCatalogue
from asen_search.model.encoder import Encoder
from asen_search.model.nn.preprocess import load_image
from asen_search.service.api.routes.page import STATIC_DIR
from asen_search.service.jobs.item_images import IMAGE_KEY, stored_path
from tests.helpers import ROOT
from tests.helpers.models import image_bytes


def _test_image(demo_dataset: Path, fid: int) -> Path:
    return demo_dataset / "images" / "test" / f"{fid:05d}.jpg"


def test_explain_an_upload_matches_the_encoder(
    client: TestClient, demo_dataset: Path, tiny_checkpoint: Path
) -> None:
    path = _test_image(demo_dataset, 5)
    response = client.post(
        "/explain",
        data={"attribute": "neckline"},
        files={"image": ("q.jpg", image_bytes(path), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = Encoder.from_checkpoint(tiny_checkpoint).explain(
        load_image(path), _attribute_id(client, "neckline")
    )
    attention = np.array(body["attention"])
    assert attention.shape == tuple(body["grid"]) == expected.attention.shape
    assert attention.min() >= 0.0 and attention.max() <= 1.0
    np.testing.assert_allclose(attention, expected.attention, atol=1e-4)
    assert body["image_box"] == pytest.approx(expected.image_box)
    assert body["roi_box"] == pytest.approx(expected.roi_box)
    with Image.open(path) as img:
        assert (body["width"], body["height"]) == img.size
    assert "encode;dur=" in response.headers["Server-Timing"]


def _attribute_id(client: TestClient, name: str) -> int:
    names = [a["name"] for a in client.get("/attributes").json()["attributes"]]
    return names.index(name)


def test_explain_a_catalogue_item_uses_its_stored_image(client: TestClient, demo_dataset: Path) -> None:
    by_item = client.post("/explain", data={"attribute": "pattern", "item_id": "test-00009"}).json()
    by_upload = client.post(
        "/explain",
        data={"attribute": "pattern"},
        files={"image": ("q.jpg", image_bytes(_test_image(demo_dataset, 9)))},
    ).json()
    assert by_item == by_upload
    x0, y0, x1, y1 = by_item["roi_box"]
    assert 0 <= x0 < x1 and 0 <= y0 < y1  # a box inside the picture's frame, in its pixels


@pytest.mark.parametrize(
    ("data", "files", "status", "code"),
    [
        ({"attribute": "colour"}, {"image": ("q.jpg", b"plain text, no image")}, 400, "not_an_image"),
        ({"attribute": "colour", "item_id": "sku-404"}, None, 404, "unknown_item"),
        ({"attribute": "hemline", "item_id": "test-00001"}, None, 422, "unknown_attribute"),
        ({"attribute": "colour"}, None, 422, "query_required"),
    ],
)
def test_explain_errors(client: TestClient, data: dict, files: dict | None, status: int, code: str) -> None:
    response = client.post("/explain", data=data, files=files)
    assert response.status_code == status and response.json()["error"] == code, response.text


def test_item_image_is_the_catalogue_file_with_caching_headers(
    client: TestClient, demo_dataset: Path
) -> None:
    response = client.get("/images/test-00004")
    assert response.status_code == 200
    assert response.content == image_bytes(_test_image(demo_dataset, 4))
    assert response.headers["content-type"] == "image/jpeg"
    assert "max-age" in response.headers["cache-control"]
    etag = response.headers["etag"]
    again = client.get("/images/test-00004", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = client.get("/images/test-00005", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag


def test_item_thumbnail(client: TestClient) -> None:
    response = client.get("/images/test-00004", params={"size": 48})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as img:
        assert max(img.size) == 48
    assert response.headers["etag"] != client.get("/images/test-00004").headers["etag"]
    assert client.get("/images/test-00004", params={"size": 4}).json()["error"] == "invalid_request"


def test_item_image_errors(client: TestClient) -> None:
    missing = client.get("/images/sku-404")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_item"
    catalogue = (
        client.app.state.service_state.catalogue
    )  # an item committed without an image (an older index)
    catalogue.upsert(
        ["bare"],
        np.stack([catalogue.vector("test-00001", a) for a in catalogue.attributes])[None],
        [{"category": "shirt"}],
    )
    for response in (
        client.get("/images/bare"),
        client.post("/explain", data={"attribute": "colour", "item_id": "bare"}),
    ):
        assert response.status_code == 404 and response.json()["error"] == "no_image", response.text


def test_uploaded_item_image_is_kept_under_the_index(client: TestClient, demo_dataset: Path) -> None:
    picture = image_bytes(demo_dataset / "images" / "train" / "00003.jpg")
    added = client.post(
        "/items",
        data={"id": "../../etc/passwd", "metadata": '{"brand": "acme"}'},
        files={"image": ("x.jpg", picture, "image/jpeg")},
    )
    assert added.status_code == 201, added.text
    index_dir = client.app.state.settings.index
    stored = index_dir / "images" / f"{hashlib.sha256(picture).hexdigest()}.jpg"
    assert stored.read_bytes() == picture  # named by content, never by the id
    assert client.get("/images/..%2F..%2Fetc%2Fpasswd").content == picture
    assert (
        client.post("/explain", data={"attribute": "colour", "item_id": "../../etc/passwd"}).status_code
        == 200
    )
    reloaded = FaissCatalogue.load(index_dir).get("../../etc/passwd").metadata
    assert reloaded[IMAGE_KEY] == f"images/{stored.name}"


def test_an_upload_browsers_cannot_show_is_sent_as_png(client: TestClient, demo_dataset: Path) -> None:
    buffer = io.BytesIO()
    with Image.open(_test_image(demo_dataset, 6)) as img:
        img.save(buffer, "TIFF")
    added = client.post("/items", data={"id": "tiff-1"}, files={"image": ("t.tif", buffer.getvalue())})
    assert added.status_code == 201, added.text
    response = client.get("/images/tiff-1")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as img:
        assert img.format == "PNG" and img.size == Image.open(_test_image(demo_dataset, 6)).size


def test_stored_references_are_uploads_or_absolute_paths(tmp_path: Path) -> None:
    upload = "images/" + "ab" * 32 + ".jpg"
    assert stored_path(tmp_path, upload) == tmp_path / upload
    assert stored_path(tmp_path, "/srv/photos/a.jpg") == Path("/srv/photos/a.jpg")
    for bad in (
        "images/../../etc/passwd",
        "../secret.jpg",
        "photos/a.jpg",
        "images/" + "ab" * 32 + ".jpg/..",
        7,
        None,
    ):
        assert stored_path(tmp_path, bad) is None


def test_the_image_reference_stays_private(client: TestClient, demo_dataset: Path) -> None:
    assert IMAGE_KEY in client.app.state.service_state.catalogue.get("test-00002").metadata
    assert IMAGE_KEY not in client.get("/items/test-00002").json()["metadata"]
    hits = client.post("/search", data={"attribute": "colour", "item_id": "test-00002"}).json()["results"]
    reranked = client.post(
        "/rerank",
        data={"attribute": "colour", "item_id": "test-00002", "candidates": ["test-00003", "test-00004"]},
    ).json()["results"]
    assert hits and reranked and all(IMAGE_KEY not in h["metadata"] for h in hits + reranked)
    probe = client.post(
        "/search",
        data={"attribute": "colour", "item_id": "test-00002", "filters": '{"_image": "/etc/passwd"}'},
    )
    assert probe.status_code == 422 and probe.json()["error"] == "invalid_filters"
    planted = client.post(
        "/items",
        data={"id": "evil", "metadata": '{"_image": "/etc/passwd"}'},
        files={"image": ("x.jpg", image_bytes(_test_image(demo_dataset, 1)))},
    )
    assert planted.status_code == 422 and planted.json()["error"] == "invalid_metadata"


def test_page_and_static_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    for name, media in (
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(media)
        assert response.headers["cache-control"] == "no-cache"
        assert (
            client.get(f"/static/{name}", headers={"If-None-Match": response.headers["etag"]}).status_code
            == 304
        )
    for name in ("nope.js", "..%2Froutes_page.py", "%2e%2e/app.py"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_static_files_ship_with_the_package() -> None:
    """`pyproject.toml` ships `service/api/static/*` (files only: the pattern does not recurse)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["asen_search.service.api"]
    assert "static/*" in patterns
    assert all(p.is_file() for p in STATIC_DIR.iterdir())
    assert {"index.html", "app.js", "style.css", "favicon.svg"} <= {p.name for p in STATIC_DIR.iterdir()}

"""The HTTP API on a real tiny model and a real FAISS index (in-process client)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from asen_search.index import FaissCatalogue
from asen_search.model.encoder import Encoder
from asen_search.model.nn.preprocess import load_image
from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from tests.helpers.models import image_bytes


def _test_image(demo_dataset: Path, fid: int) -> Path:
    return demo_dataset / "images" / "test" / f"{fid:05d}.jpg"


def test_search_with_a_catalogue_image_returns_that_item_first(
    client: TestClient, demo_dataset: Path
) -> None:
    for fid in (0, 17, 63):
        files = {"image": ("q.jpg", image_bytes(_test_image(demo_dataset, fid)), "image/jpeg")}
        response = client.post("/search", data={"attribute": "colour", "top_k": "5"}, files=files)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["attribute"] == "colour" and len(body["results"]) == 5
        assert body["results"][0]["id"] == f"test-{fid:05d}"
        assert abs(body["results"][0]["score"] - 1.0) < 1e-4
        scores = [r["score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True)
        assert "encode;dur=" in response.headers["server-timing"]


def test_search_by_item_id_excludes_the_item(tiny_checkpoint: Path, index_dir: Path, n_items: int) -> None:
    settings = Settings(checkpoint=tiny_checkpoint, index=index_dir, max_top_k=n_items)
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/search", data={"attribute": "pattern", "item_id": "test-00005", "top_k": str(n_items)}
        )
    assert response.status_code == 200, response.text
    ids = [r["id"] for r in response.json()["results"]]
    assert len(ids) == n_items - 1 and "test-00005" not in ids


def test_search_by_id_ranks_like_brute_force(
    client: TestClient, tiny_checkpoint: Path, index_dir: Path
) -> None:
    catalogue = FaissCatalogue.load(index_dir)
    ids = catalogue.ids()
    vectors = np.stack([catalogue.vector(i, "neckline") for i in ids])
    query = catalogue.vector("test-00010", "neckline")
    order = [ids[i] for i in np.argsort(-(vectors @ query), kind="stable") if ids[i] != "test-00010"][:10]
    body = client.post("/search", data={"attribute": "neckline", "item_id": "test-00010"}).json()
    assert [r["id"] for r in body["results"]] == order


def test_filtered_search_only_returns_matching_items(client: TestClient, index_dir: Path) -> None:
    catalogue = FaissCatalogue.load(index_dir)
    red = {i for i in catalogue.ids() if catalogue.get(i).metadata.get("colour") == "red"}
    assert red, "the demo test split has red items"
    filters = json.dumps({"colour": "red"})
    body = client.post(
        "/search", data={"attribute": "colour", "item_id": "test-00001", "top_k": "100", "filters": filters}
    ).json()
    got = {r["id"] for r in body["results"]}
    assert got == red - {"test-00001"}
    assert all(r["metadata"]["colour"] == "red" for r in body["results"])
    none = client.post(
        "/search",
        data={"attribute": "colour", "item_id": "test-00001", "filters": json.dumps({"colour": "no-such"})},
    )
    assert none.status_code == 200 and none.json()["results"] == []


def test_rerank_equals_brute_force_cosine(
    client: TestClient, tiny_checkpoint: Path, demo_dataset: Path
) -> None:
    encoder = Encoder.from_checkpoint(tiny_checkpoint)
    candidates = [f"test-{i:05d}" for i in (3, 40, 7, 99, 12, 56, 21, 88)]
    images = [load_image(_test_image(demo_dataset, int(c[5:]))) for c in candidates]
    query_image = _test_image(demo_dataset, 30)
    vectors = encoder.encode(images, [encoder.attribute_id("sleeve_length")])[:, 0]
    query = encoder.encode([load_image(query_image)], [encoder.attribute_id("sleeve_length")])[0, 0]
    cosine = vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)
    expected = [candidates[i] for i in np.argsort(-cosine, kind="stable")]
    response = client.post(
        "/rerank",
        data={"attribute": "sleeve_length", "candidates": candidates + ["nope-1"]},
        files={"image": ("q.jpg", image_bytes(query_image), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["id"] for r in body["results"]] == expected
    np.testing.assert_allclose([r["similarity"] for r in body["results"]], np.sort(cosine)[::-1], atol=1e-5)
    assert body["unknown"] == ["nope-1"]


def test_rerank_weight_blends_the_original_order(client: TestClient) -> None:
    candidates = ["test-00004", "test-00009", "test-00002", "ghost", "test-00004"]
    keep = client.post(
        "/rerank",
        data={"attribute": "colour", "item_id": "test-00050", "candidates": candidates, "weight": "0"},
    ).json()
    assert [r["id"] for r in keep["results"]] == ["test-00004", "test-00009", "test-00002"]
    assert keep["unknown"] == ["ghost"] and keep["duplicates"] == ["test-00004"]
    half = client.post(
        "/rerank",
        data={"attribute": "colour", "item_id": "test-00050", "candidates": candidates, "weight": "0.5"},
    ).json()
    n = 4  # unique candidates, "ghost" included in the positions
    for hit in half["results"]:
        assert abs(hit["score"] - (0.5 * hit["similarity"] + 0.5 * (1 - hit["position"] / n))) < 1e-6


def test_attributes_and_items(client: TestClient, demo_dataset: Path) -> None:
    attributes = client.get("/attributes").json()["attributes"]
    meta = json.loads((demo_dataset / "meta.json").read_text())
    # a checkpoint without prototypes or precision curves: no value search, no precision scores
    assert attributes == [
        {"name": a["name"], "values": a["values"], "value_search": [], "precision_scores": None}
        for a in meta["attributes"]
    ]
    item = client.get("/items/test-00003").json()
    assert item["id"] == "test-00003" and item["metadata"]["split"] == "test"


def test_add_then_search_finds_it_and_delete_removes_it(
    client: TestClient, demo_dataset: Path, n_items: int
) -> None:
    picture = image_bytes(demo_dataset / "images" / "train" / "00007.jpg")
    added = client.post(
        "/items",
        data={"id": "new/shirt-1", "metadata": '{"brand": "acme"}'},
        files={"image": ("n.jpg", picture, "image/jpeg")},
    )
    assert added.status_code == 201, added.text
    assert client.get("/items/new/shirt-1").json()["metadata"] == {"brand": "acme"}
    hits = client.post(
        "/search",
        data={"attribute": "closure", "top_k": "3"},
        files={"image": ("q.jpg", picture, "image/jpeg")},
    ).json()["results"]
    assert hits[0]["id"] == "new/shirt-1"
    assert (
        client.post("/items", data={"id": "new/shirt-1"}, files={"image": ("n.jpg", picture)}).status_code
        == 409
    )
    assert client.get("/readyz").json()["items"] == n_items + 1
    stored = FaissCatalogue.load(client.app.state.settings.index).get("new/shirt-1").metadata
    assert stored == {"brand": "acme", "_image": f"images/{hashlib.sha256(picture).hexdigest()}.jpg"}

    deleted = client.delete("/items/new/shirt-1")
    assert deleted.status_code == 200 and deleted.json() == {"id": "new/shirt-1", "deleted": True}
    for attribute in ("closure", "colour", "neckline"):
        hits = client.post(
            "/search",
            data={"attribute": attribute, "top_k": "100"},
            files={"image": ("q.jpg", picture, "image/jpeg")},
        ).json()["results"]
        assert "new/shirt-1" not in {h["id"] for h in hits}
    assert "new/shirt-1" not in FaissCatalogue.load(client.app.state.settings.index)
    assert client.delete("/items/new/shirt-1").status_code == 404


def test_replace_keeps_one_copy(client: TestClient, demo_dataset: Path, n_items: int) -> None:
    picture = image_bytes(demo_dataset / "images" / "train" / "00001.jpg")
    response = client.post(
        "/items",
        data={"id": "test-00002", "replace": "true", "metadata": '{"v": 2}'},
        files={"image": ("n.jpg", picture, "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    assert client.get("/items/test-00002").json()["metadata"] == {"v": 2}
    assert client.get("/readyz").json()["items"] == n_items


def test_ops_endpoints(client: TestClient, n_items: int) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["items"] == n_items and len(ready["attributes"]) == 7
    client.post("/search", data={"attribute": "colour", "item_id": "test-00001"})
    client.post("/search", data={"attribute": "colour", "item_id": "no-such-item"})
    text = client.get("/metrics").text
    assert 'asen_http_requests_total{handler="/search",method="POST",status="200"} 1.0' in text
    assert 'asen_http_requests_total{handler="/search",method="POST",status="404"} 1.0' in text
    assert "asen_http_request_duration_seconds_bucket" in text
    for stage in ("decode", "encode", "search"):
        assert f'asen_stage_duration_seconds_count{{stage="{stage}"}}' in text
    assert f"asen_catalogue_items {float(n_items)}" in text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/rerank", "/attributes", "/items", "/items/{item_id}", "/healthz", "/readyz"} <= set(
        paths
    )


def test_metrics_count_unmatched_paths_and_stay_per_app(client: TestClient) -> None:
    """Paths no route matches are counted under handler "none" (bounded label values), and the
    in-flight gauge is in this app's own registry."""
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'asen_http_requests_total{handler="none",method="GET",status="404"} 1.0' in text
    assert "asen_http_requests_in_flight 1.0" in text  # the /metrics request itself


def test_search_breadth_settings_reach_the_indexes_or_are_refused(
    tiny_checkpoint: Path, index_dir: Path
) -> None:
    """ASEN_EF_SEARCH reaches an HNSW catalogue's indexes; on a Flat one it stops the start with a
    message naming the setting."""
    from asen_search.service.resources import apply_search_knobs, load_resources

    encoder = Encoder.from_checkpoint(tiny_checkpoint, runtime="torch")
    hnsw = FaissCatalogue.create(encoder.attribute_names, encoder.dim, encoder.fingerprint, "HNSW32")
    apply_search_knobs(hnsw, Settings(checkpoint=tiny_checkpoint, index=index_dir, ef_search=256))
    assert hnsw.search_params()["ef_search"] == 256
    with pytest.raises(ValueError, match="ASEN_EF_SEARCH / ASEN_NPROBE: ef_search applies to HNSW"):
        load_resources(Settings(checkpoint=tiny_checkpoint, index=index_dir, ef_search=64))
    load_resources(Settings(checkpoint=tiny_checkpoint, index=index_dir))[1].close()  # the lock was let go

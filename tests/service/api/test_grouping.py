"""`group_by`: at most one result per value of a metadata field, still top_k groups (the best item
of each of the best groups), on a real catalogue and over the API."""

from __future__ import annotations

import json

import numpy as np
from fastapi.testclient import TestClient

from asen_search.index import FaissCatalogue
from asen_search.service.operations.searching import grouped_search


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_one_result_per_product_and_still_top_k_products() -> None:
    rng = np.random.default_rng(3)
    dim, products, photos = 16, 60, 5
    base = _unit(rng.standard_normal((products, dim)))
    vectors = _unit(np.repeat(base, photos, axis=0) + 0.05 * rng.standard_normal((products * photos, dim)))
    ids = [f"p{p}-{k}" for p in range(products) for k in range(photos)]
    metadata = [
        {"product": f"p{p}", "colour": ["red", "blue"][p % 2]} for p in range(products) for _ in range(photos)
    ]
    metadata[-1] = {"colour": "blue"}  # no product field: a group of its own
    catalogue = FaissCatalogue.create(["colour"], dim, "fp", "Flat")
    catalogue.add(ids, vectors[:, None, :], metadata)
    query = _unit(rng.standard_normal(dim))
    scores = vectors @ query
    groups: dict[str, tuple[float, str]] = {}
    for i, (item, meta) in enumerate(zip(ids, metadata)):
        key = meta.get("product", item)
        if key not in groups or scores[i] > groups[key][0]:
            groups[key] = (float(scores[i]), item)
    expected = [item for _, item in sorted(groups.values(), reverse=True)]

    def fetch(n: int) -> list:
        return catalogue.search(query, "colour", n)

    for top_k in (1, 10, 40):  # 40 groups need far more than the first fetch of 4 x top_k photos
        hits = grouped_search(fetch, len(catalogue), top_k, "product")
        assert [h.id for h in hits] == expected[:top_k]
    everything = grouped_search(fetch, len(catalogue), 500, "product")
    assert len(everything) == len(groups)  # fewer groups than top_k: every group once
    red = grouped_search(
        lambda n: catalogue.search(query, "colour", n, filters={"colour": "red"}),
        len(catalogue),
        10,
        "product",
    )
    assert len(red) == 10 and all(h.metadata["colour"] == "red" for h in red)
    assert len({h.metadata["product"] for h in red}) == 10


def test_search_api_groups_by_a_metadata_field(client: TestClient) -> None:
    first = client.post(
        "/search", data={"attribute": "neckline", "item_id": "test-00002", "top_k": "50"}
    ).json()
    values = {hit["metadata"]["neckline"] for hit in first["results"] if "neckline" in hit["metadata"]}
    grouped = client.post(
        "/search",
        data={"attribute": "neckline", "item_id": "test-00002", "top_k": "50", "group_by": "neckline"},
    )
    assert grouped.status_code == 200, grouped.text
    results = grouped.json()["results"]
    keys = [json.dumps(hit["metadata"].get("neckline", hit["id"])) for hit in results]
    assert len(keys) == len(set(keys)) and len(results) >= len(values)
    assert results[0]["id"] == first["results"][0]["id"]  # the best item is its group's best


def test_group_by_and_fields_name_possible_metadata_keys(client: TestClient) -> None:
    """`group_by` and each of `fields` is a possible metadata key (1 to 256 characters, no control
    characters), at most 64 fields: anything else is 422 `invalid_request`, on every route that takes
    them, rather than an answer grouped or cut by a key no item can hold."""
    query = {"attribute": "colour", "item_id": "test-00001", "top_k": 3}
    assert client.post("/search", json={**query, "group_by": "split", "fields": ["split"]}).status_code == 200
    assert client.get("/items", params={"limit": 2, "fields": ["split", "neckline"]}).status_code == 200
    many = [f"f{i}" for i in range(65)]
    for wrong in (
        {"group_by": "bad\x01key"},
        {"group_by": "k" * 257},
        {"group_by": ""},
        {"fields": ["split", "a\nb"]},
        {"fields": ["x" * 257]},
        {"fields": [""]},
        {"fields": many},
    ):
        answer = client.post("/search", json={**query, **wrong})
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_request", (wrong, answer.text)
        if "fields" in wrong:
            reranked = client.post(
                "/rerank",
                json={"attribute": "colour", "item_id": "test-00001", "candidates": ["test-00002"], **wrong},
            )
            assert reranked.status_code == 422 and reranked.json()["error"] == "invalid_request", (
                reranked.text
            )
    for fields in (["split", "a\x7fb"], many):
        listed = client.get("/items", params={"limit": 2, "fields": fields})
        assert listed.status_code == 422 and listed.json()["error"] == "invalid_request", listed.text

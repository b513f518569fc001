"""The Python client (`asen_search.client`) against a real `asen serve` over a real socket: one
server for the module (the tagging checkpoint, a copy of the tagged index, an API key), its answers
compared with the raw HTTP ones; the error classes, a mock transport and the ASGI transport."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asen_search.client import (
    AsenError,
    Client,
    Conflict,
    InvalidRequest,
    NewItem,
    NotFound,
    QueryPart,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
)
from tests.helpers.serving import served

KEY = "client-test-key"
IMAGE = Path("images") / "test" / "00041.jpg"
OTHER = Path("images") / "test" / "00012.jpg"


@pytest.fixture(scope="module")
def url(
    tmp_path_factory: pytest.TempPathFactory, tagging_checkpoint: Path, tagged_index: Path
) -> Iterator[str]:
    index = Path(shutil.copytree(tagged_index, tmp_path_factory.mktemp("client") / "index"))
    with served(tagging_checkpoint, index, ASEN_API_KEY=KEY) as base:
        yield base


@pytest.fixture(scope="module")
def asen(url: str) -> Iterator[Client]:
    with Client(url, api_key=KEY) as client:
        yield client


@pytest.fixture(scope="module")
def raw(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": KEY}) as client:
        yield client


def _hits(answer: httpx.Response) -> list[tuple[str, float, Any, Any]]:
    assert answer.status_code == 200, answer.text
    return [(h["id"], h["score"], h["metadata"], h.get("precision")) for h in answer.json()["results"]]


def _page_hits(page: Any) -> list[tuple[str, float, Any, Any]]:
    return [(h.id, h.score, h.metadata, h.precision) for h in page.results]


def test_search_by_item_and_by_image_answers_what_the_http_api_does(
    asen: Client, raw: httpx.Client, demo_dataset: Path
) -> None:
    image = demo_dataset / IMAGE
    by_item = asen.search(
        "colour", item_id="test-00001", top_k=5, filters={"predicted.pattern": {"not": "dots"}}
    )
    assert _page_hits(by_item) == _hits(
        raw.post(
            "/search",
            json={
                "attribute": "colour",
                "item_id": "test-00001",
                "top_k": 5,
                "filters": {"predicted.pattern": {"not": "dots"}},
            },
        )
    )
    assert (
        by_item.attribute == "colour"
        and by_item.query is None
        and by_item.offset == 0
        and by_item.next_cursor
    )
    by_image = asen.search("neckline", image=image, top_k=3, fields=["predicted.neckline"])
    form = raw.post(
        "/search",
        data={"attribute": "neckline", "top_k": "3", "fields": "predicted.neckline"},
        files={"image": ("q.jpg", image.read_bytes(), "image/jpeg")},
    )
    assert _page_hits(by_image) == _hits(form)
    assert all(set(h.metadata or {}) <= {"predicted.neckline"} for h in by_image.results)
    assert asen.search("neckline", image=image.read_bytes(), top_k=3) == asen.search(
        "neckline", image=image, top_k=3
    )
    ids_only = asen.search("pattern", value="dots", top_k=4, include_metadata=False)
    assert len(ids_only.results) == 4 and all(h.metadata is None for h in ids_only.results)
    threshold = asen.search("colour", item_id="test-00002", min_score=-1.0, max_results=7)
    assert threshold.truncated and threshold.total is not None and threshold.total > 7
    assert (
        threshold.threshold is not None
        and threshold.threshold.max_results == 7
        and len(threshold.results) == 7
    )


def test_a_composed_search(asen: Client, raw: httpx.Client, demo_dataset: Path) -> None:
    image = demo_dataset / IMAGE
    parts = [
        QueryPart("neckline", image="front"),
        QueryPart("colour", item_id="test-00007", weight=0.5),
        QueryPart("pattern", value="dots", weight=-1),
    ]
    page = asen.search_composed(parts, {"front": image}, top_k=4)
    wire = [
        {"attribute": "neckline", "image": "front"},
        {"attribute": "colour", "item_id": "test-00007", "weight": 0.5},
        {"attribute": "pattern", "value": "dots", "weight": -1},
    ]
    form = raw.post(
        "/search",
        data={"query": json.dumps(wire), "top_k": "4"},
        files={"front": ("f.jpg", image.read_bytes(), "image/jpeg")},
    )
    assert _page_hits(page) == _hits(form)
    assert (
        page.attribute is None
        and page.query is not None
        and [p["attribute"] for p in page.query] == ["neckline", "colour", "pattern"]
    )
    assert "test-00007" not in page.ids


def test_iter_search_follows_cursors_to_the_same_results_as_one_deep_search(asen: Client) -> None:
    deep = asen.search("colour", item_id="test-00001", top_k=30).ids
    assert [h.id for h in asen.iter_search("colour", item_id="test-00001", page_size=10, limit=30)] == deep
    second = asen.search(
        "colour",
        item_id="test-00001",
        top_k=10,
        cursor=asen.search("colour", item_id="test-00001", top_k=10).next_cursor,
    )
    assert second.ids == deep[10:20] and second.offset == 10
    one_page = asen.search("colour", item_id="test-00003", min_score=0.0, max_results=1000)
    assert not one_page.truncated and one_page.total == len(one_page.results) > 25
    paged = list(asen.iter_search("colour", item_id="test-00003", min_score=0.0, page_size=25))
    assert [h.id for h in paged] == one_page.ids
    composed = [
        QueryPart("colour", item_id="test-00001"),
        QueryPart("pattern", item_id="test-00002", weight=0.5),
    ]
    assert [h.id for h in asen.iter_search(parts=composed, page_size=7, limit=20)] == asen.search_composed(
        composed, top_k=20
    ).ids


def test_rerank_tag_explain_and_attributes(asen: Client, demo_dataset: Path) -> None:
    reranked = asen.rerank(
        ["test-00003", "test-00004", "nope", "test-00003", "test-00010"],
        attribute="sleeve_length",
        item_id="test-00001",
        weight=0.7,
    )
    assert sorted(reranked.ids) == ["test-00003", "test-00004", "test-00010"]
    assert reranked.unknown == ("nope",) and reranked.duplicates == ("test-00003",) and reranked.weight == 0.7
    assert [h.score for h in reranked.results] == sorted((h.score for h in reranked.results), reverse=True)
    assert {h.id: h.position for h in reranked.results} == {"test-00003": 0, "test-00004": 1, "test-00010": 3}

    attributes = asen.attributes()
    assert [a.name for a in attributes] == list(asen.ready().attributes)
    assert all(a.values and a.value_search for a in attributes)
    tags = asen.tag(item_id="test-00005")
    assert tags.id == "test-00005" and set(tags.by_attribute()) == {a.name for a in attributes}
    for tag in tags.tags:
        assert tag.value in tag.probabilities and tag.confidence == pytest.approx(
            tag.probabilities[tag.value]
        )
    assert asen.tag(image=demo_dataset / IMAGE).id is None

    explained = asen.explain("neckline", image=demo_dataset / IMAGE)
    assert len(explained.attention) == explained.grid[0] and len(explained.attention[0]) == explained.grid[1]
    assert explained.width > 0 and explained.height > 0 and len(explained.image_box) == 4


def test_add_get_patch_replace_and_delete_an_item(asen: Client, demo_dataset: Path) -> None:
    image = demo_dataset / IMAGE
    item_id = "client/sku 1?"  # a slash, a space, a question mark: one path segment all the same
    added = asen.add_item(item_id, image=image, metadata={"brand": "x", "price": 10})
    assert added.id == item_id and added.metadata is not None and added.metadata["brand"] == "x"
    assert asen.get_item(item_id) == added
    assert asen.get_image(item_id) == image.read_bytes()
    assert asen.search("colour", image=image, top_k=1).ids == [item_id]
    with pytest.raises(Conflict) as exists:
        asen.add_item(item_id, image=image)
    assert exists.value.status == 409 and exists.value.code == "item_exists"
    patched = asen.patch_item(item_id, {"brand": None, "price": 12, "colour": "écru"})
    assert patched.metadata is not None and "brand" not in patched.metadata
    assert patched.metadata["price"] == 12 and patched.metadata["colour"] == "écru"
    replaced = asen.add_item(item_id, image=demo_dataset / OTHER, replace=True)
    assert (
        replaced.metadata is not None
    )  # replace without metadata keeps the item's own (tags are the new image's)
    assert (
        {k: v for k, v in replaced.metadata.items() if not k.startswith("predicted.")}
        == {k: v for k, v in patched.metadata.items() if not k.startswith("predicted.")}
        == {"price": 12, "colour": "écru"}
    )
    asen.delete_item(item_id)
    with pytest.raises(NotFound) as gone:
        asen.get_item(item_id)
    assert gone.value.code == "unknown_item" and gone.value.status == 404
    for dots in (".", ".."):  # dot segments travel as ids, not as paths
        asen.add_item(dots, image=image)
        assert asen.get_item(dots).id == dots
        asen.delete_item(dots)


def test_a_batch_reports_each_item_and_one_bad_one_does_not_stop_the_others(
    asen: Client, demo_dataset: Path
) -> None:
    ready = asen.ready()
    vectors = [[1.0] + [0.0] * (ready.dim - 1)] * len(ready.attributes)
    results = asen.add_items(
        [
            NewItem("batch-1", image=demo_dataset / IMAGE, metadata={"n": 1}),
            NewItem("batch-2", image=b"not an image"),
            NewItem("batch-3", vectors=vectors, fingerprint=ready.fingerprint),
            NewItem("test-00001", image=demo_dataset / IMAGE),
        ]
    )
    assert [(r.id, r.status, r.error) for r in results] == [
        ("batch-1", "created", None),
        ("batch-2", "error", "not_an_image"),
        ("batch-3", "created", None),
        ("test-00001", "error", "item_exists"),
    ]
    assert [r.ok for r in results] == [True, False, True, False] and results[1].detail
    assert results[0].metadata is not None and results[0].metadata["n"] == 1
    assert asen.ready().items == ready.items + 2
    for item_id in ("batch-1", "batch-3"):
        asen.delete_item(item_id)
    assert asen.ready().items == ready.items


def test_listing_pages_cover_the_catalogue_exactly_once(asen: Client) -> None:
    everything = [item.id for item in asen.iter_items(page_size=37)]
    assert everything == sorted(set(everything)) and len(everything) == asen.ready().items
    pages, cursor = [], None
    while True:
        page = asen.list_items(limit=50, cursor=cursor)
        pages += [item.id for item in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == everything
    wanted = {"predicted.colour.confidence": {"gte": 0.5}}
    filtered = list(asen.iter_items(page_size=11, filters=wanted, fields=["predicted.colour.confidence"]))
    assert 0 < len(filtered) < len(everything) and [i.id for i in filtered] == sorted(i.id for i in filtered)
    assert all(
        i.metadata is not None
        and set(i.metadata) == {"predicted.colour.confidence"}
        and i.metadata["predicted.colour.confidence"] >= 0.5
        for i in filtered
    )
    ids_only = asen.list_items(limit=3, include_metadata=False)
    assert len(ids_only.items) == 3 and all(i.metadata is None for i in ids_only.items)


def test_errors_raise_their_family_with_the_code(asen: Client) -> None:
    with pytest.raises(NotFound) as unknown:
        asen.get_item("no-such-item")
    assert isinstance(unknown.value, AsenError) and unknown.value.code == "unknown_item"
    assert "no-such-item" in unknown.value.detail and "unknown_item" in str(unknown.value)
    with pytest.raises(NotFound):
        asen.delete_item("no-such-item")
    with pytest.raises(NotFound, match="unknown_item"):
        asen.search("colour", item_id="no-such-item")
    with pytest.raises(InvalidRequest) as attribute:
        asen.search("no-such-attribute", item_id="test-00001")
    assert attribute.value.code == "unknown_attribute" and attribute.value.status == 422
    with pytest.raises(InvalidRequest, match="top_k_out_of_range"):
        asen.search("colour", item_id="test-00001", top_k=0)
    with pytest.raises(InvalidRequest, match="invalid_cursor"):
        asen.search("colour", item_id="test-00001", cursor="not-a-cursor")
    with pytest.raises(InvalidRequest) as image:
        asen.tag(image=b"not an image")
    assert image.value.status == 400 and image.value.code == "not_an_image"
    assert asen.health() == "ok"


def test_writes_need_the_api_key(url: str, demo_dataset: Path) -> None:
    for key, code in ((None, "missing_api_key"), ("wrong", "wrong_api_key")):
        with Client(url, api_key=key) as anonymous:
            assert anonymous.get_item("test-00001").id == "test-00001"  # reads are open
            with pytest.raises(Unauthorized) as refused:
                anonymous.add_item("keyless", image=demo_dataset / IMAGE)
            assert refused.value.status == 401 and refused.value.code == code
            with pytest.raises(Unauthorized):
                anonymous.delete_item("test-00001")
    with Client(url, api_key=KEY) as keyed:
        assert keyed.get_item("test-00001").id == "test-00001"


def _answer(status: int, body: Any = None, text: str | None = None, **headers: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return httpx.MockTransport(handle)


def test_each_status_maps_to_its_family_with_retry_after() -> None:
    with Client(
        "http://asen",
        transport=_answer(429, {"error": "rate_limited", "detail": "slow down"}, **{"Retry-After": "3"}),
    ) as limited:
        with pytest.raises(RateLimited) as caught:
            limited.health()
    assert caught.value.retry_after == 3.0 and caught.value.code == "rate_limited"
    with Client(
        "http://asen",
        transport=_answer(503, {"error": "overloaded", "detail": "retry later"}, **{"Retry-After": "2"}),
    ) as busy:
        with pytest.raises(Unavailable) as overloaded:
            busy.search("colour", item_id="x")
    assert overloaded.value.retry_after == 2.0 and isinstance(overloaded.value, ServerError)
    with Client("http://asen", transport=_answer(502, text="<html>bad gateway</html>")) as proxied:
        with pytest.raises(ServerError) as gateway:
            proxied.ready()
    assert (
        gateway.value.code == "http_error"
        and gateway.value.status == 502
        and "bad gateway" in gateway.value.detail
    )
    problems = [{"loc": ["body", "top_k"], "msg": "not an integer", "type": "int_parsing"}]
    with Client(
        "http://asen",
        transport=_answer(422, {"error": "invalid_request", "detail": "top_k", "errors": problems}),
    ) as invalid:
        with pytest.raises(InvalidRequest) as wrong:
            invalid.attributes()
    assert wrong.value.errors == tuple(problems)
    copied = pickle.loads(pickle.dumps(wrong.value))
    assert type(copied) is InvalidRequest and (copied.code, copied.errors) == (
        "invalid_request",
        tuple(problems),
    )
    with Client(
        "http://asen", transport=_answer(403, {"error": "writes_disabled", "detail": "set ASEN_API_KEY"})
    ) as c:
        with pytest.raises(Unauthorized, match="writes_disabled"):
            c.delete_item("x")


def test_a_request_body_is_json_with_base64_images() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"attribute": None, "results": [], "query": []})

    with Client("http://asen/prefix", api_key="k", transport=httpx.MockTransport(handle)) as client:
        client.search_composed(
            [QueryPart("colour", image="a"), QueryPart("pattern", value="dots", weight=-0.5)],
            {"a": b"\x89PNG"},
            top_k=3,
            filters={"brand": ["x", "y"]},
            include_metadata=False,
        )
    (request,) = seen
    assert request.url.path == "/prefix/search" and request.headers["X-API-Key"] == "k"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "query": [
            {"attribute": "colour", "image": base64.b64encode(b"\x89PNG").decode(), "weight": 1.0},
            {"attribute": "pattern", "value": "dots", "weight": -0.5},
        ],  # each part holds its image
        "include_metadata": False,
        "top_k": 3,
        "filters": {"brand": ["x", "y"]},
    }
    with (
        Client("http://asen", transport=httpx.MockTransport(handle)) as client,
        pytest.raises(TypeError, match="bytes or a path"),
    ):
        client.tag(image="shirt.jpg")  # type: ignore[arg-type]


def test_an_async_asgi_transport_drives_the_app_in_process(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from asen_search.service.api.app import create_app
    from asen_search.service.api.settings import Settings

    app = create_app(
        Settings(checkpoint=tiny_checkpoint, index=tmp_path)
    )  # its lifespan is not run: not ready
    with Client("http://testserver", transport=httpx.ASGITransport(app=app)) as client:
        assert client.health() == "ok"
        with pytest.raises(Unavailable) as loading:
            client.ready()
        assert loading.value.code == "not_ready" and loading.value.status == 503
        with pytest.raises(Unavailable, match="not_ready"):
            client.get_item("test-00001")

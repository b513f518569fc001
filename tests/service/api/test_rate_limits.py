"""The per-client rate limit covers every route that runs the model or decodes an image: each such
route carries a mark (`openapi_extra=rate_limited(...)`, service/api/overload.py) that the app
collects when it is created. The routes' marks are compared with an explicit list, and each listed
route is driven past its burst until it answers 429 with Retry-After. Thumbnails have their own,
larger budget, so the web page's 100 thumbnails at once pass where searches are limited."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from asen_search.service.api.app import create_app
from asen_search.service.api.overload import (
    IMAGE_BUDGET_FACTOR,
    IMAGES,
    MODEL,
    RATE_LIMIT_KEY,
    limited_operations,
)
from asen_search.service.api.settings import Settings

# Every route that runs the model (a forward pass, or a write that encodes) or decodes a stored
# image, with the budget it is counted in and the query parameter that makes it expensive. A new
# expensive route belongs here and gets `openapi_extra=rate_limited(...)`.
EXPECTED: dict[tuple[str, str], tuple[str, str | None]] = {
    ("POST", "/search"): (MODEL, None),
    ("POST", "/copies"): (MODEL, None),
    ("POST", "/rerank"): (MODEL, None),
    ("POST", "/explain"): (MODEL, None),
    ("POST", "/tag"): (MODEL, None),
    ("POST", "/items"): (MODEL, None),
    ("POST", "/items:batch"): (MODEL, None),
    ("GET", "/images/{item_id:item_id}"): (IMAGES, "size"),
    ("HEAD", "/images/{item_id:item_id}"): (IMAGES, "size"),  # HEAD's twin of a GET decodes as much
}
BURST = 2
SLOW = 0.001  # tokens a second: no refill during a test, so exactly the burst passes


def _jpeg(dataset: Path, n: int) -> bytes:
    return (dataset / "images" / "test" / f"{n:05d}.jpg").read_bytes()


def _request(operation: tuple[str, str], dataset: Path) -> Callable[[TestClient, int], httpx.Response]:
    """The n-th request of a route, one that works (so 200s turn into 429s, nothing else changes)."""
    query = {"attribute": "colour", "item_id": "test-00001"}
    requests: dict[tuple[str, str], Callable[[TestClient, int], httpx.Response]] = {
        ("POST", "/search"): lambda c, n: c.post("/search", data={**query, "top_k": "2"}),
        ("POST", "/copies"): lambda c, n: c.post(
            "/copies", files={"image": ("q.jpg", _jpeg(dataset, 6), "image/jpeg")}
        ),
        ("POST", "/rerank"): lambda c, n: c.post("/rerank", data={**query, "candidates": ["test-00002"]}),
        ("POST", "/explain"): lambda c, n: c.post("/explain", data=query),
        ("POST", "/tag"): lambda c, n: c.post(
            "/tag", files={"image": ("q.jpg", _jpeg(dataset, 4), "image/jpeg")}
        ),
        ("POST", "/items"): lambda c, n: c.post(
            "/items", data={"id": f"new-{n}"}, files={"image": ("q.jpg", _jpeg(dataset, 5), "image/jpeg")}
        ),
        ("GET", "/images/{item_id:item_id}"): lambda c, n: c.get(
            f"/images/test-{n % 50:05d}", params={"size": 48}
        ),
        ("HEAD", "/images/{item_id:item_id}"): lambda c, n: c.head(
            f"/images/test-{n % 50:05d}", params={"size": 48}
        ),
        ("POST", "/items:batch"): lambda c, n: c.post(
            "/items:batch",
            json={"items": [{"id": f"batch-{n}", "image": base64.b64encode(_jpeg(dataset, 5)).decode()}]},
        ),
    }
    return requests[operation]


@contextmanager
def _limited(checkpoint: Path, index: Path, rate: float = SLOW, burst: int = BURST) -> Iterator[TestClient]:
    with TestClient(
        create_app(Settings(checkpoint=checkpoint, index=index, rate_limit=rate, rate_burst=burst))
    ) as client:
        yield client


def _app_routes(checkpoint: Path) -> dict[tuple[str, str], tuple[str, str | None]]:
    app = create_app(Settings(checkpoint=checkpoint, index=Path("unused")))
    return limited_operations(app.router.routes)


def test_the_expensive_routes_are_the_marked_ones(tiny_checkpoint: Path) -> None:
    """The marks on the app's routes are exactly the list above: a route that loses its mark, or a
    new marked route not listed here, fails."""
    assert _app_routes(tiny_checkpoint) == EXPECTED
    paths = create_app(Settings(checkpoint=tiny_checkpoint, index=Path("unused"))).openapi()["paths"]
    for (method, path), (budget, when) in EXPECTED.items():
        if method == "HEAD":  # the twins of GET routes are not in the schema
            continue
        operation = paths[path.replace(":item_id}", "}")][method.lower()]
        assert operation[RATE_LIMIT_KEY] == {"budget": budget, **({"when_query": when} if when else {})}
        assert "429" in operation["responses"], f"{method} {path} does not declare its 429"


@pytest.mark.parametrize("operation", sorted(EXPECTED), ids=lambda op: f"{op[0]} {op[1]}")
def test_each_expensive_route_answers_429_beyond_its_burst(
    operation: tuple[str, str],
    tagging_checkpoint: Path,
    tagged_index: Path,
    demo_dataset: Path,
    tmp_path: Path,
) -> None:
    index = Path(shutil.copytree(tagged_index, tmp_path / "index"))  # POST /items writes it
    send = _request(operation, demo_dataset)
    budget, _ = EXPECTED[operation]
    burst = BURST * (IMAGE_BUDGET_FACTOR if budget == IMAGES else 1)
    with _limited(tagging_checkpoint, index) as client:
        answers = [send(client, n) for n in range(burst)]
        assert [a.status_code for a in answers] == [
            201 if operation == ("POST", "/items") else 200
        ] * burst, [a.text for a in answers if a.status_code >= 300][:1]
        refused = send(client, burst)
        assert refused.status_code == 429, refused.text
        assert operation[0] == "HEAD" or refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        # the other budget is untouched: images and the model are counted apart
        if budget == IMAGES:
            assert (
                client.post("/search", data={"attribute": "colour", "item_id": "test-00001"}).status_code
                == 200
            )
        else:
            assert client.get("/images/test-00001", params={"size": 48}).status_code == 200


def test_cheap_requests_are_not_counted(tiny_checkpoint: Path, index_dir: Path) -> None:
    """The stored file itself (no `size`: nothing decoded), reads and operations stay free."""
    with _limited(tiny_checkpoint, index_dir, burst=1) as client:
        for n in range(3 * IMAGE_BUDGET_FACTOR):
            assert client.get(f"/images/test-{n:05d}").status_code == 200
        for _ in range(5):
            assert client.get("/items/test-00001").status_code == 200
            assert client.get("/attributes").status_code == 200
            assert client.get("/readyz").status_code == 200
        assert (
            client.post("/search", data={"attribute": "colour", "item_id": "test-00001"}).status_code == 200
        )
        assert (
            client.post("/search", data={"attribute": "colour", "item_id": "test-00001"}).status_code == 429
        )


def test_a_page_of_thumbnails_passes_where_searches_are_limited(
    tiny_checkpoint: Path, index_dir: Path
) -> None:
    """The web page at the compose file's burst (ASEN_RATE_BURST, default 20): a search for 100
    results, then its query preview (640 px) and 100 thumbnails (320 px) at once, none refused.
    (With thumbnails in the model's budget, the 21st would be.)"""
    with _limited(tiny_checkpoint, index_dir, burst=20) as client:
        found = client.post("/search", data={"attribute": "colour", "item_id": "test-00001", "top_k": "100"})
        assert found.status_code == 200 and len(found.json()["results"]) == 100
        assert client.get("/images/test-00001", params={"size": 640}).status_code == 200
        thumbs = [client.get(f"/images/{hit['id']}", params={"size": 320}) for hit in found.json()["results"]]
        assert [t.status_code for t in thumbs] == [200] * 100

"""What users of search engines reach for: JSON bodies beside forms (the same answers), paging by
offset or cursor, listing the catalogue with a cursor, the filter language through the API, batch
writes with a result each, metadata-only changes, items with vectors made elsewhere, smaller hits,
HEAD, and a 405 that names every method of its path."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from asen_search.index import parse_filters
from asen_search.index.wal import log_path, read_log
from asen_search.service.api.app import create_app
from asen_search.service.api.errors import status_of
from asen_search.service.api.requests import encode_cursor
from asen_search.service.api.settings import Settings

IMAGE = Path("images") / "test" / "00041.jpg"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _same(a: Any, b: Any) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.json() == b.json()


def test_each_query_as_json_and_as_a_form_answers_the_same(
    tagging_client: TestClient, demo_dataset: Path
) -> None:
    image = demo_dataset / IMAGE
    file = {"image": ("q.jpg", image.read_bytes(), "image/jpeg")}
    cases: list[tuple[str, dict[str, Any], bool]] = [
        ("/search", {"attribute": "colour", "item_id": "test-00001", "top_k": 5}, False),
        ("/search", {"attribute": "neckline", "top_k": 3}, True),
        ("/search", {"attribute": "pattern", "value": "dots", "top_k": 4, "include_metadata": False}, False),
        (
            "/search",
            {"attribute": "colour", "item_id": "test-00002", "min_score": 0.5, "max_results": 7},
            False,
        ),
        (
            "/search",
            {
                "attribute": "colour",
                "item_id": "test-00003",
                "top_k": 3,
                "filters": {"predicted.colour.confidence": {"gte": 0.5}, "split": {"not": "train"}},
            },
            False,
        ),
        (
            "/rerank",
            {
                "attribute": "sleeve_length",
                "item_id": "test-00001",
                "weight": 0.7,
                "candidates": ["test-00003", "test-00004", "nope"],
            },
            False,
        ),
        ("/tag", {"item_id": "test-00005"}, False),
        ("/tag", {}, True),
        ("/explain", {"attribute": "neckline"}, True),
    ]
    for path, fields, with_image in cases:
        as_json = {**fields, **({"image": _b64(image)} if with_image else {})}
        as_form = {
            k: json.dumps(v)
            if isinstance(v, dict)
            else str(v).lower()
            if isinstance(v, bool)
            else v
            if isinstance(v, list)
            else str(v)
            for k, v in fields.items()
        }
        _same(
            tagging_client.post(path, json=as_json),
            tagging_client.post(path, data=as_form, files=file if with_image else None),
        )
    parts = [
        {"attribute": "neckline", "image": "front"},
        {"attribute": "colour", "item_id": "test-00007", "weight": 0.5},
    ]
    inline = [{**parts[0], "image": _b64(image)}, parts[1]]  # JSON: the image in its part
    by_json = tagging_client.post("/search", json={"query": inline, "top_k": 4}).json()
    by_form = tagging_client.post(
        "/search",
        data={"query": json.dumps(parts), "top_k": "4"},
        files={"front": ("f.jpg", image.read_bytes(), "image/jpeg")},
    ).json()
    assert by_json["results"] == by_form["results"] and by_json["query"][0]["image"] == "query[0].image"


def test_writes_as_json_and_as_a_form(client: TestClient, demo_dataset: Path) -> None:
    image = demo_dataset / IMAGE
    by_form = client.post(
        "/items",
        data={"id": "via-form", "metadata": '{"k": "é"}'},
        files={"image": ("q.jpg", image.read_bytes(), "image/jpeg")},
    )
    by_json = client.post("/items", json={"id": "via-json", "metadata": {"k": "é"}, "image": _b64(image)})
    assert (
        by_form.status_code == by_json.status_code == 201
        and by_form.json()["metadata"] == by_json.json()["metadata"]
    )
    assert (
        client.post("/search", json={"attribute": "colour", "item_id": "via-form", "top_k": 1}).json()[
            "results"
        ][0]["id"]
        == "via-json"
    )  # the same image, the same vectors
    assert (
        client.post("/items", json={"id": "via-json", "image": "not base64!"}).json()["error"]
        == "invalid_base64"
    )


def test_paging_by_offset_and_cursor_equals_one_deep_search(client: TestClient) -> None:
    query = {"attribute": "colour", "item_id": "test-00001"}
    deep = [h["id"] for h in client.post("/search", json={**query, "top_k": 30}).json()["results"]]
    pages, cursor = [], None
    for _ in range(3):
        page = client.post(
            "/search", json={**query, "top_k": 10, **({"cursor": cursor} if cursor else {})}
        ).json()
        pages += [h["id"] for h in page["results"]]
        cursor = page["next_cursor"]
    assert pages == deep
    assert [
        h["id"] for h in client.post("/search", json={**query, "top_k": 10, "offset": 20}).json()["results"]
    ] == deep[20:]
    listing = client.get("/items", params={"limit": 2}).json()["next_cursor"]
    other = client.post("/search", json={**query, "top_k": 10, "cursor": listing})
    assert other.status_code == 422 and other.json()["error"] == "invalid_cursor"  # a listing's cursor
    too_deep = client.post("/search", json={**query, "top_k": 10, "offset": 1000})  # ASEN_MAX_SEARCH_DEPTH
    assert too_deep.status_code == 422 and too_deep.json()["error"] == "offset_out_of_range"
    skipped = client.post("/search", json={**query, "top_k": 10, "cursor": encode_cursor("search", 10) + "*"})
    assert (
        skipped.status_code == 422 and skipped.json()["error"] == "invalid_cursor"
    )  # no base64url character


def test_the_deepest_page_ends_at_the_search_depth(tiny_checkpoint: Path, index_dir: Path) -> None:
    """A page that would reach past ASEN_MAX_SEARCH_DEPTH ends there (shorter, and the last); an offset
    at the depth or past it is refused."""
    with TestClient(
        create_app(Settings(checkpoint=tiny_checkpoint, index=index_dir, max_top_k=20, max_search_depth=25))
    ) as client:
        query = {"attribute": "colour", "item_id": "test-00001", "top_k": 10}
        deep = [h["id"] for h in client.post("/search", json={**query, "top_k": 20}).json()["results"]]
        deep += [
            h["id"]
            for h in client.post("/search", json={**query, "top_k": 5, "offset": 20}).json()["results"]
        ]
        assert len(deep) == len(set(deep)) == 25  # a page within the depth: not cut
        middle = client.post("/search", json={**query, "offset": 10}).json()
        assert [h["id"] for h in middle["results"]] == deep[10:20] and middle["next_cursor"] is not None
        last = client.post("/search", json={**query, "cursor": middle["next_cursor"]}).json()
        assert [h["id"] for h in last["results"]] == deep[20:25] and last["next_cursor"] is None
        cut = client.post("/search", json={**query, "offset": 24}).json()
        assert [h["id"] for h in cut["results"]] == deep[24:] and cut["next_cursor"] is None
        for offset in (25, 40):
            refused = client.post("/search", json={**query, "offset": offset})
            assert refused.status_code == 422 and refused.json()["error"] == "offset_out_of_range"


def test_a_threshold_search_that_is_cut_says_how_many_pass_and_pages_on(client: TestClient) -> None:
    query = {"attribute": "colour", "item_id": "test-00001", "min_score": -1.0}
    first = client.post("/search", json={**query, "max_results": 40}).json()
    assert (
        first["truncated"] and first["total"] == len(client.app.state.service_state.catalogue) - 1
    )  # all but the query
    second = client.post("/search", json={**query, "max_results": 40, "cursor": first["next_cursor"]}).json()
    everything = client.post("/search", json={**query, "max_results": 80}).json()["results"]
    assert [h["id"] for h in first["results"] + second["results"]] == [h["id"] for h in everything]


def _list_all(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    seen, cursor = [], None
    while True:
        page = client.get("/items", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return seen


def test_listing_pages_through_the_catalogue_with_filters_and_fields(tagging_client: TestClient) -> None:
    catalogue = tagging_client.app.state.service_state.catalogue
    listed = _list_all(tagging_client, limit=37)
    assert [i["id"] for i in listed] == sorted(catalogue.ids()) and "_image" not in listed[0]["metadata"]
    wanted = {"predicted.colour.confidence": {"gte": 0.6}, "predicted.pattern": {"not": "solid"}}
    filtered = _list_all(tagging_client, limit=11, filters=json.dumps(wanted), fields="predicted.pattern")
    reference = parse_filters(wanted)
    assert [i["id"] for i in filtered] == sorted(
        i for i in catalogue.ids() if reference.matches(catalogue.get(i).metadata)
    )
    assert all(set(i["metadata"]) <= {"predicted.pattern"} for i in filtered)
    ids_only = tagging_client.get("/items", params={"limit": 3, "include_metadata": "false"}).json()["items"]
    assert all(i["metadata"] is None for i in ids_only)


def test_batch_writes_each_item_once_in_one_log_append(
    client: TestClient, demo_dataset: Path, settings: Any
) -> None:
    image = demo_dataset / IMAGE
    catalogue = client.app.state.service_state.catalogue
    before = len(read_log(log_path(settings.index, catalogue._store.version))[0])
    answer = client.post(
        "/items:batch",
        json={
            "items": [
                {"id": "b1", "image": _b64(image), "metadata": {"n": 1}},
                {"id": "test-00001", "image": _b64(image)},  # exists: reported, not written
                {"id": "b2", "image": base64.b64encode(b"not an image").decode()},  # reported with its code
                {
                    "id": "b3",
                    "vectors": [[1.0] + [0.0] * (catalogue.dim - 1)] * len(catalogue.attributes),
                    "fingerprint": catalogue.fingerprint,
                },
                {"id": "b1", "image": _b64(image)},
            ]
        },
    )  # twice in the batch: reported
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["created", "error", "error", "created", "error"]
    assert [r["error"] for r in results] == [None, "item_exists", "not_an_image", None, "invalid_request"]
    assert "b1" in catalogue and "b3" in catalogue and "b2" not in catalogue
    records = read_log(log_path(settings.index, catalogue._store.version))[0]
    assert len(records) == before + 1 and sorted(records[-1].ids) == ["b1", "b3"]  # one append for the batch
    form = client.post(
        "/items:batch",
        data={"items": json.dumps([{"id": "f1", "image": "pic"}])},
        files={"pic": ("p.jpg", image.read_bytes(), "image/jpeg")},
    )
    assert form.json()["results"][0]["status"] == "created"


def _unit_vectors(catalogue: Any) -> list[list[float]]:
    return [[1.0] + [0.0] * (catalogue.dim - 1)] * len(catalogue.attributes)


def test_a_batch_item_that_is_not_what_the_schema_describes_refuses_the_batch_whole(
    client: TestClient, demo_dataset: Path, settings: Any
) -> None:
    """Its code and its position in the detail; nothing of the batch written, however valid the rest."""
    catalogue = client.app.state.service_state.catalogue
    log = log_path(settings.index, catalogue._store.version)
    before = len(read_log(log)[0])
    good = {"id": "whole-1", "vectors": _unit_vectors(catalogue), "fingerprint": catalogue.fingerprint}
    given = {"vectors": good["vectors"], "fingerprint": catalogue.fingerprint}
    refusals: list[tuple[dict[str, Any], str, str]] = [
        ({"id": "b\x00", **given}, "invalid_item_id", "items[1] ('b\\x00')"),
        ({"id": "m", **given, "metadata": {"n": [1, 2**63]}}, "invalid_metadata", "items[1] ('m')"),
        ({"id": "m", **given, "metadata": {"predicted.colour": "red"}}, "invalid_metadata", "items[1] ('m')"),
        (
            {"id": "v", "vectors": good["vectors"][:1], "fingerprint": catalogue.fingerprint},
            "invalid_vectors",
            "items[1] ('v')",
        ),
        (
            {"id": "f", "vectors": good["vectors"], "fingerprint": "another-model"},
            "fingerprint_mismatch",
            "items[1] ('f')",
        ),
        ({"id": "i"}, "image_required", "items[1] ('i')"),
        ({"id": "e", "image": ""}, "empty_image", "items[1] ('e')"),
        ({"id": "n", "image": "not base64!"}, "invalid_base64", "items[1] ('n')"),
        ({"id": "z", **given, "metadata": None}, "invalid_request", "`items[1].metadata` is null"),
    ]
    for bad, code, named in refusals:
        answer = client.post("/items:batch", json={"items": [good, bad]})
        assert answer.status_code == status_of(code) and answer.json()["error"] == code, (bad, answer.text)
        assert named in answer.json()["detail"], answer.text
    picture = (demo_dataset / IMAGE).read_bytes()
    form = client.post(
        "/items:batch",
        files={"pic": ("p.jpg", picture, "image/jpeg")},
        data={"items": json.dumps([good, {"id": "g", "image": "pic"}, {"id": "h", "image": "nope"}])},
    )
    assert form.status_code == 422 and form.json()["error"] == "image_not_uploaded"
    assert "items[2] ('h')" in form.json()["detail"]
    strict = client.post("/items:batch", data={"items": json.dumps([{**good, "vectors": [[True]]}])})
    assert strict.json()["error"] == "invalid_request"  # JSON in a form is read as strictly as a JSON body
    assert "whole-1" not in catalogue and "g" not in catalogue and len(read_log(log)[0]) == before


def test_an_empty_form_field_is_refused_as_json_refuses_null(client: TestClient, demo_dataset: Path) -> None:
    """A form field sent empty is no value: 422 `invalid_request` naming it (leave it out instead), as a
    JSON field sent as null; left out, the same request is answered."""
    file = {"image": ("q.jpg", (demo_dataset / IMAGE).read_bytes(), "image/jpeg")}
    assert client.post("/search", data={"attribute": "colour", "top_k": "3"}, files=file).status_code == 200
    for empty in ({"value": ""}, {"top_k": ""}, {"fields": ["split", ""]}):
        answer = client.post("/search", data={"attribute": "colour", **empty}, files=file)
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_request", answer.text
        assert f"`{next(iter(empty))}` is sent empty" in answer.json()["detail"]
    empty_id = client.post("/items", data={"id": ""}, files=file)
    assert empty_id.status_code == 422 and "`id` is sent empty" in empty_id.json()["detail"]
    null = client.post("/search", json={"attribute": "colour", "item_id": "test-00001", "value": None})
    assert null.status_code == 422 and "`value` is null" in null.json()["detail"]


def test_a_whole_number_is_an_integer_however_it_is_written(client: TestClient) -> None:
    """As in the schema (JSON Schema's integers are the numbers without a fraction): 5.0 is 5, in JSON
    and in a form (also 5e0); 5.5 is no integer."""
    query = {"attribute": "colour", "item_id": "test-00001"}

    def ids(answer: Any) -> list[str]:
        assert answer.status_code == 200, answer.text
        return [h["id"] for h in answer.json()["results"]]

    five = ids(client.post("/search", json={**query, "top_k": 5}))
    assert len(five) == 5 and ids(client.post("/search", json={**query, "top_k": 5.0})) == five
    assert ids(client.post("/search", json={**query, "top_k": 3.0, "offset": 2.0})) == five[2:]
    for text in ("5", "5.0", "5e0", "50e-1"):
        assert ids(client.post("/search", data={**query, "top_k": text})) == five
    for refused in (
        client.post("/search", json={**query, "top_k": 5.5}),
        client.post("/search", data={**query, "top_k": "5.5"}),
        client.post("/search", data={**query, "top_k": "nan"}),
    ):
        assert refused.status_code == 422 and refused.json()["error"] == "invalid_request", refused.text


def test_items_with_vectors_made_elsewhere_are_checked_and_searchable(client: TestClient) -> None:
    catalogue = client.app.state.service_state.catalogue
    vectors = np.stack([catalogue.vector("test-00009", a) for a in catalogue.attributes])
    ok = client.post(
        "/items",
        json={"id": "encoded-elsewhere", "vectors": vectors.tolist(), "fingerprint": catalogue.fingerprint},
    )
    assert ok.status_code == 201, ok.text
    top = client.post("/search", json={"attribute": "colour", "item_id": "test-00009", "top_k": 1}).json()[
        "results"
    ]
    assert top[0]["id"] == "encoded-elsewhere" and top[0]["score"] == pytest.approx(1.0, abs=1e-5)
    other = client.post(
        "/items", json={"id": "x", "vectors": vectors.tolist(), "fingerprint": "another-model"}
    )
    assert other.json()["error"] == "fingerprint_mismatch"
    short = client.post(
        "/items", json={"id": "x", "vectors": vectors[:, :-1].tolist(), "fingerprint": catalogue.fingerprint}
    )
    assert short.json()["error"] == "invalid_vectors"
    both = client.post(
        "/items",
        json={"id": "x", "vectors": vectors.tolist(), "fingerprint": catalogue.fingerprint, "image": "AAAA"},
    )
    assert both.json()["error"] == "image_required"


def test_patch_changes_metadata_only_and_replace_keeps_it(client: TestClient, demo_dataset: Path) -> None:
    catalogue = client.app.state.service_state.catalogue
    image = demo_dataset / IMAGE
    client.post("/items", json={"id": "p1", "image": _b64(image), "metadata": {"price": 10, "brand": "x"}})
    before = catalogue.vector("p1", "colour")
    patched = client.patch("/items/p1", json={"metadata": {"price": 12, "brand": None, "colour": "écru"}})
    assert patched.status_code == 200 and patched.json()["metadata"] == {"price": 12, "colour": "écru"}
    np.testing.assert_allclose(catalogue.vector("p1", "colour"), before)
    assert "_image" in catalogue.get("p1").metadata  # the stored image stays
    refused = client.patch("/items/p1", json={"metadata": {"predicted.colour": "red"}})
    assert refused.json()["error"] == "invalid_metadata"
    assert client.patch("/items/nope", json={"metadata": {"a": 1}}).json()["error"] == "unknown_item"
    replaced = client.post("/items", json={"id": "p1", "image": _b64(image), "replace": True})
    assert replaced.status_code == 200 and replaced.json()["metadata"] == {"price": 12, "colour": "écru"}


def test_head_works_wherever_get_does_and_405_names_every_method(client: TestClient) -> None:
    for path in (
        "/",
        "/healthz",
        "/readyz",
        "/attributes",
        "/items/test-00001",
        "/images/test-00001",
        "/items",
    ):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200 and head.content == b"", path
    refused = client.put("/items/test-00001")
    assert refused.status_code == 405 and refused.json()["error"] == "method_not_allowed"
    assert set(refused.headers["Allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}


def test_every_body_field_is_declared_with_the_type_the_service_reads() -> None:
    """The OpenAPI bodies (JSON and form) declare each boolean, integer and number field of every
    request model as such: a field left to the schema's fallback (a string) makes clients send what
    the service refuses, and the schema accept what it should not."""
    from asen_search.service.api import requests
    from asen_search.service.api.openapi_bodies import ModelFacts, body_schema

    wanted = {bool: "boolean", int: "integer", float: "number"}
    specs = [spec for spec in vars(requests).values() if isinstance(spec, requests.BodySpec)]
    checked = 0
    for spec in specs:
        for form in (False, True):
            properties = body_schema(spec, Settings.model_construct(), ModelFacts(), form)["properties"]
            for name, field in spec.model.model_fields.items():
                kind = next((t for t in wanted if field.annotation in (t, t | None)), None)
                if kind is not None and name in properties:
                    assert properties[name].get("type") == wanted[kind], (spec.model.__name__, form, name)
                    checked += 1
    assert checked > 20

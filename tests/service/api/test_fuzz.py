"""Schemathesis fuzzes every operation of the service's OpenAPI schema, in process, against a real
tiny checkpoint and a writable copy of a real index: no answer is a 5xx, and every answer matches
the status codes, content types and response schemas the schema declares.

Pure fuzzing almost never produces a known attribute, a catalogue id or a decodable image, so it
would only ever see 4xx answers; the hooks below mix those in, so success bodies are checked too."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from asen_search.model.data.synth import ATTRIBUTES
from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings

SEED = 20240611
MAX_EXAMPLES = 25


_BINARY = {"type": "string", "contentMediaType": "application/octet-stream"}


def _for_schemathesis(node: Any) -> Any:
    """The app's schema with two equivalent rewrites that schemathesis 4.32 needs.

    - `prefixItems` of one repeated schema (pydantic's `tuple[float, ...]`) -> `items`: schemathesis
      rewrites `prefixItems` into draft-4 array-form `items` and then validates responses with a
      draft 2020-12 validator, which rejects the schema itself ("Invalid Schema Object in response
      definition"; same family as schemathesis issues #3842, #4099). `minItems`/`maxItems` still
      bind the length.
    - an optional upload, `anyOf: [binary, null]` -> `binary`: schemathesis sends a form property as
      a file part only when the binary marker is at its top level, so it never uploaded a query
      image. A multipart field cannot be null; absent is how it is left out, either way."""
    if isinstance(node, list):
        return [_for_schemathesis(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _for_schemathesis(v) for k, v in node.items()}
    prefix = out.get("prefixItems")
    if prefix and "items" not in out and all(p == prefix[0] for p in prefix):
        del out["prefixItems"]
        out["items"] = prefix[0]
    if out.get("anyOf") in ([_BINARY, {"type": "null"}], [{"type": "null"}, _BINARY]):
        del out["anyOf"]
        out.update(_BINARY)
    return out


# The schema is the app's own; building it loads nothing, so placeholder paths do.
_UNLOADED = create_app(Settings(checkpoint=Path("unused.pt"), index=Path("unused")))
schema = schemathesis.openapi.from_dict(
    _for_schemathesis(_UNLOADED.openapi()),
    config=schemathesis.Config.from_dict({"seed": SEED, "phases": {"coverage": {"enabled": False}}}),
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _encoded(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize(size).convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


KNOWN_ATTRIBUTES = st.sampled_from([name for name, _ in ATTRIBUTES])
CATALOGUE_IDS = st.integers(0, 40).map(lambda i: f"test-{i:05d}")  # in the demo test split
# base64, as a JSON body carries an image (a form's image field is then text, not a file: a declared 422)
IMAGES = st.sampled_from(
    [
        base64.b64encode(_encoded(fmt, size)).decode()
        for fmt, size in (("PNG", (40, 60)), ("JPEG", (90, 30)), ("GIF", (8, 8)))
    ]
)


# A sensible value for each form field the service reads; `None` drops the field.
SENSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "attribute": KNOWN_ATTRIBUTES,
    "top_k": st.none() | st.integers(1, 100),
    "filters": st.none() | st.sampled_from([{}, {"colour": ["red", "blue"]}, {"split": "test"}]),
    "candidates": st.lists(CATALOGUE_IDS | st.text(max_size=8), min_size=1, max_size=6),
    "weight": st.floats(0.0, 1.0),
    "metadata": st.none() | st.just({"colour": "red"}),
    "replace": st.booleans(),
}
# A query is an image or an item id, never both.
QUERY = st.fixed_dictionaries({"image": IMAGES, "item_id": st.none()}) | st.fixed_dictionaries(
    {"image": st.none(), "item_id": CATALOGUE_IDS}
)


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Form bodies: as generated, or with every field the service reads made sensible."""
    if not isinstance(body, dict):
        return st.just(body)
    fields = {name: strategy for name, strategy in SENSIBLE.items() if name in body}
    if "item_id" in body:
        query = QUERY
    elif "image" in body:  # POST /items: an image, always
        query = st.fixed_dictionaries({"image": IMAGES})
    else:
        query = st.just({})
    sensible = st.tuples(st.fixed_dictionaries(fields), query).map(
        lambda parts: {k: v for k, v in {**body, **parts[0], **parts[1]}.items() if v is not None}
    )
    return st.just(body) | sensible


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: Any
) -> st.SearchStrategy[Any]:
    """`{item_id}`: sometimes a catalogue id."""
    if not isinstance(path_parameters, dict) or "item_id" not in path_parameters:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), CATALOGUE_IDS.map(lambda i: {**path_parameters, "item_id": i}))


@pytest.fixture(scope="module")
def fuzz_app(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, built_index: Path
) -> Iterator[FastAPI]:
    """The service on a writable copy of the index, its lifespan started (model and index loaded)."""
    index = Path(shutil.copytree(built_index, tmp_path_factory.mktemp("fuzz") / "index"))
    app = create_app(Settings(checkpoint=tiny_checkpoint, index=index))
    with asgi.get_client(app):  # starts the lifespan; it runs until shutdown_lifespans()
        assert app.state.service_state is not None
    yield app
    asgi.shutdown_lifespans()
    assert app.state.service_state is None


# The operations that write or search get four times the examples of the rest.
_BUSY = {"method_regex": "^(POST|DELETE)$", "path_regex": "^/(search|copies|rerank|items)"}
# Health checks kept on: every one but these. `function_scoped_fixture`: the app fixture is module
# scoped on purpose (one loaded model for all examples); `too_slow`: each example runs a real
# forward pass, slower than Hypothesis assumes of a unit test, by design.
NOISE = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@schema.include(**_BUSY).parametrize()
@settings(
    max_examples=4 * MAX_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=NOISE
)
def test_write_and_search_operations_conform(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    """No 5xx, declared status codes and content types, bodies matching the declared schemas."""
    case.call_and_validate(app=fuzz_app, checks=CHECKS)


@schema.exclude(**_BUSY).parametrize()
@settings(
    max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=NOISE
)
def test_every_other_operation_conforms(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    """The same for the read-only operations."""
    case.call_and_validate(app=fuzz_app, checks=CHECKS)


# -- answers the fuzzer cannot reach on its own, checked against the same schema -------------------


def _conforms(method: str, path: str, response: httpx.Response, **case: Any) -> None:
    operation = schema[path][method]
    operation.Case(**case).validate_response(response, checks=CHECKS)


@pytest.fixture
def limited(tiny_checkpoint: Path, index_dir: Path) -> Iterator[TestClient]:
    """The service on a writable copy of the index, rate-limited to a burst of 2 expensive requests."""
    with TestClient(
        create_app(Settings(checkpoint=tiny_checkpoint, index=index_dir, rate_limit=0.001, rate_burst=2))
    ) as test_client:
        yield test_client


def test_replacing_an_item_answers_a_declared_status(client: TestClient) -> None:
    """POST /items with replace=true on an existing id."""
    files = {"image": ("q.png", _encoded("PNG", (40, 60)))}
    assert client.post("/items", data={"id": "twice"}, files=files).status_code == 201
    replaced = client.post("/items", data={"id": "twice", "replace": "true"}, files=files)
    assert replaced.status_code == 200
    _conforms(
        "POST", "/items", replaced, body={"id": "twice", "replace": True}, media_type="multipart/form-data"
    )


def test_a_gif_item_image_has_a_declared_content_type(client: TestClient) -> None:
    """GET /images/{id} of an item added with a GIF."""
    assert (
        client.post(
            "/items", data={"id": "gif"}, files={"image": ("q.gif", _encoded("GIF", (8, 8)))}
        ).status_code
        == 201
    )
    image = client.get("/images/gif")
    assert image.status_code == 200 and image.headers["content-type"] == "image/gif"
    _conforms("GET", "/images/{item_id}", image, path_parameters={"item_id": "gif"})


def test_a_rate_limited_answer_is_declared(limited: TestClient) -> None:
    """POST /search past the rate limit's burst answers 429, which the schema declares. (Checked
    by hand: schemathesis drops every failure on a 429 response by design.)"""
    for _ in range(2):
        assert (
            limited.post("/search", data={"attribute": "colour", "item_id": "test-00001"}).status_code == 200
        )
    refused = limited.post("/search", data={"attribute": "colour", "item_id": "test-00001"})
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert "429" in schema["/search"]["POST"].definition.raw["responses"]

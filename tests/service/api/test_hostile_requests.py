"""Hostile and unusual requests (bodies, multipart, fields, ids, attribute names, top_k): each gets
a precise 2xx or a 4xx JSON error `{"error", "detail"}`, never a 5xx, nothing is written outside
the index directory, and the service keeps answering afterwards."""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from tests.helpers.serving import served

ID = "test-00001"  # a catalogue item of the demo test split


@pytest.fixture
def api(tiny_checkpoint: Path, index_dir: Path) -> Iterator[TestClient]:
    """The service on a writable copy of the index; server errors come back as 500 responses."""
    with TestClient(
        create_app(Settings(checkpoint=tiny_checkpoint, index=index_dir)), raise_server_exceptions=False
    ) as client:
        yield client


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((60, 80)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    body = response.json()
    assert isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"], body
    if code is not None:
        assert body["error"] == code, body
    return body


def _still_answers(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200
    response = client.post("/search", data={"attribute": "colour", "item_id": ID, "top_k": "3"})
    assert response.status_code == 200 and len(response.json()["results"]) == 3


# -- bodies over the limit, on a real socket ---------------------------------------------------

LIMIT = 20_000  # ASEN_MAX_UPLOAD_BYTES + ASEN_MAX_FORM_OVERHEAD_BYTES below


@pytest.fixture(scope="module")
def small_limit_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, built_index: Path
) -> Iterator[tuple[str, int]]:
    """`asen serve` on a copy of the index with a 20,000-byte request limit: (host, port)."""
    index = Path(shutil.copytree(built_index, tmp_path_factory.mktemp("socket") / "index"))
    with served(
        tiny_checkpoint, index, ASEN_MAX_UPLOAD_BYTES="10000", ASEN_MAX_FORM_OVERHEAD_BYTES="10000"
    ) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def _answer(sock: socket.socket, timeout_s: float = 10.0) -> tuple[int, dict[str, object], float]:
    """Read one HTTP response (status, JSON body, seconds waited) while the client still owes body bytes."""
    sock.settimeout(timeout_s)
    start, data = time.monotonic(), b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _content_length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), time.monotonic() - start


def _content_length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_oversized_body_is_refused_before_it_is_read(small_limit_server: tuple[str, int]) -> None:
    """Over a real socket: a request declaring 50 MB gets 413 after the client sent only 1 kB of
    it; a chunked body (no Content-Length) gets 413 as soon as it passes the limit, while the
    client has not finished it. Neither body is ever sent in full."""
    host, port = small_limit_server
    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="q"\r\n\r\n' + b"\x00" * 1000
    head = (
        f"POST /search HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    ).encode()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(head + b"Content-Length: 50000000\r\n\r\n" + part)
        status, body, waited = _answer(sock)
    assert status == 413 and body["error"] == "request_too_large", body
    assert waited < 5, waited

    with socket.create_connection((host, port)) as sock:
        sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(LIMIT // 4_000 + 2):  # 4 kB chunks until past the limit; the last chunk is never sent
            chunk = part[:100] + b"\x00" * 3_900
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        status, body, waited = _answer(sock)
    assert status == 413 and body["error"] == "request_too_large", body
    assert waited < 5, waited
    assert httpx.get(f"http://{host}:{port}/readyz", timeout=5).status_code == 200


def test_dot_dot_in_a_raw_request_path_is_an_unknown_id(small_limit_server: tuple[str, int]) -> None:
    """Over a real socket (no client-side URL normalisation): `/items/../../etc/passwd` and
    `/images/../..` reach the routes as ids, and are unknown items (404)."""
    host, port = small_limit_server
    for target in ("/items/../../etc/passwd", "/images/../../etc/passwd", "/items/..%2F..%2Fetc%2Fpasswd"):
        with socket.create_connection((host, port)) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            status, body, _ = _answer(sock)
        assert (status, body["error"]) == (404, "unknown_item"), (target, body)


def test_non_ascii_digits_in_content_length_are_not_a_server_error(
    tiny_checkpoint: Path, index_dir: Path
) -> None:
    """`Content-Length: ²` (a latin-1 byte that str.isdigit() accepts and int() refuses) reaches
    the app from an ASGI server that does not validate it: no 5xx (it was a ValueError, 500)."""
    app = create_app(Settings(checkpoint=tiny_checkpoint, index=index_dir))
    body = f"attribute=colour&item_id={ID}".encode()
    with TestClient(app):  # the lifespan loads the model and index
        for declared in (b"\xb2", b"\xb9\xb2", b"1\xbd"):
            status, _ = anyio.run(
                _asgi_post,
                app,
                "/search",
                body,
                [(b"content-type", b"application/x-www-form-urlencoded"), (b"content-length", declared)],
            )
            assert status == 200, declared


async def _asgi_post(
    app: FastAPI, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    """One request straight into the ASGI app, headers exactly as given."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc,arg-type]


# -- multipart -----------------------------------------------------------------------------------

MANY = 5_000


def test_multipart_with_many_parts_is_400(api: TestClient) -> None:
    """5,000 form fields, 5,000 files or 5,000 repeated `candidates`: 400 from the form parser's
    limits (1,000 fields, 1,000 files), quickly, on every form endpoint."""
    fields = {f"field{i}": "x" for i in range(MANY)}
    files = [(f"file{i}", (f"f{i}", b"x")) for i in range(MANY)]
    start = time.monotonic()
    for path in ("/search", "/explain", "/rerank", "/items"):
        _error(
            api.post(path, data={"attribute": "colour", "item_id": ID, "id": "n", **fields}),
            400,
            "invalid_form",
        )
        _error(
            api.post(path, data={"attribute": "colour", "item_id": ID, "id": "n"}, files=files),
            400,
            "invalid_form",
        )
    _error(
        api.post("/rerank", data={"attribute": "colour", "item_id": ID, "candidates": [ID] * MANY}),
        400,
        "invalid_form",
    )
    assert time.monotonic() - start < 60
    _still_answers(api)


def test_rerank_takes_max_candidates_ids(api: TestClient) -> None:
    """As many candidates as `max_candidates` allows (1,000 by default) are reranked."""
    candidates = [f"test-{i % 300:05d}" for i in range(1_000)]
    response = api.post("/rerank", data={"attribute": "colour", "item_id": ID, "candidates": candidates})
    assert response.status_code == 200, response.text


MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}
FIELD = b'--b\r\nContent-Disposition: form-data; name="attribute"\r\n'


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (FIELD + b"\r\ncolour\r\n--b--\r\n", {"Content-Type": "multipart/form-data"}, 400),  # no boundary
        (FIELD + b"\r\ncolour\r\n--b--\r\n", {"Content-Type": "multipart/form-data; boundary=zz"}, 400),
        (b"\x00" * 1000, MULTIPART, 400),
        (b"--b\r\n\r\ncolour\r\n--b--\r\n", MULTIPART, 400),  # a part without Content-Disposition
        (
            FIELD + b"X-Pad: " + b"a" * 200_000 + b"\r\n\r\ncolour\r\n--b--\r\n",
            MULTIPART,
            400,
        ),  # a huge part header
        (
            FIELD + b"X-Pad: a\r\n" * 10_000 + b"\r\ncolour\r\n--b--\r\n",
            MULTIPART,
            400,
        ),  # 10,000 part headers
        (FIELD + b"\r\ncolour", MULTIPART, 422),  # no closing boundary: the cut-off field is dropped
        (b"", MULTIPART, 422),
    ],
    ids=[
        "no-boundary",
        "wrong-boundary",
        "garbage",
        "no-disposition",
        "huge-header",
        "many-headers",
        "unterminated",
        "empty",
    ],
)
def test_malformed_multipart_is_4xx(
    api: TestClient, body: bytes, headers: dict[str, str], status: int
) -> None:
    """Broken multipart bodies: 400 when the parser refuses them, 422 when what it parsed lacks
    the required fields."""
    _error(api.post("/search", content=body, headers=headers), status)
    _still_answers(api)


# -- unknown fields -------------------------------------------------------------------------------


def test_unknown_fields_and_query_parameters_are_refused_naming_the_closest(api: TestClient) -> None:
    """A field or query parameter the endpoint does not take is a mistake the caller should hear of
    (`topk` for `top_k` must not answer 10 results): 422 `unknown_field`, naming the closest field."""
    base = {"attribute": "colour", "item_id": ID}
    for extra, hint in (
        ({"topk": "3"}, "top_k"),
        ({"filter": '{"colour": "red"}'}, "filters"),
        ({"attributes": "neckline"}, "attribute"),
        ({"_image": "/etc/passwd"}, None),
        ({"üñï": "✓"}, None),
    ):
        body = _error(api.post("/search", data={**base, **extra}), 422, "unknown_field")
        assert next(iter(extra)) in body["detail"] and (
            hint is None or f"did you mean `{hint}`" in body["detail"]
        )
        assert (
            _error(api.post("/search", json={**base, **extra}), 422, "unknown_field")["detail"]
            == body["detail"]
        )
    _error(
        api.post("/search", data=base, params={"top_k": "1"}), 422, "unknown_field"
    )  # a body field in the URL
    rerank = {**base, "candidates": ["test-00002", "test-00003"]}
    _error(api.post("/rerank", data={**rerank, "debug": "1"}), 422, "unknown_field")
    _error(
        api.post("/items", data={"id": "extra-fields", "colour": "red"}, files={"image": ("q.jpg", _jpeg())}),
        422,
        "unknown_field",
    )
    _error(api.get("/items", params={"limt": "5"}), 422, "unknown_field")
    assert api.get("/items/extra-fields").status_code == 404  # nothing was written
    _still_answers(api)


def test_json_bodies_answer_as_forms_do(api: TestClient) -> None:
    """The same request as JSON or as a form gets the same answer; an image sent under a name no
    query part uses is refused, not ignored."""
    payload = {
        "attribute": "colour",
        "item_id": ID,
        "candidates": ["test-00002", "test-00003"],
        "weight": 0.5,
    }
    assert api.post("/rerank", json=payload).json() == api.post("/rerank", data=payload).json()
    search = {"attribute": "colour", "item_id": ID, "top_k": 4, "filters": {"split": "test"}}
    as_form = {**search, "filters": json.dumps(search["filters"])}
    assert api.post("/search", json=search).json() == api.post("/search", data=as_form).json()
    _error(
        api.post("/search", data={"attribute": "colour"}, files={"photo": ("q.jpg", _jpeg())}),
        422,
        "unknown_field",
    )  # an image under a name no query part uses is no query
    _error(
        api.post("/search", json={**search, "top_k": "4"}), 422, "invalid_request"
    )  # JSON's types are the schema's
    _error(
        api.post("/search", content=b"attribute=colour", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    _still_answers(api)


# -- hostile ids ----------------------------------------------------------------------------------

PATH_IDS = ["a/b", "../../etc/passwd", "..", "../..", "/etc/passwd", "a\\..\\b", "images/../../x"]
BAD_IDS = ["a\x00b", "x" * 10_000]


def _files_outside(root: Path, inside: Path) -> set[Path]:
    return {p for p in root.rglob("*") if inside != p and inside not in p.parents}


@pytest.fixture
def outside_index(tmp_path: Path, index_dir: Path) -> Iterator[None]:
    """Fails the test if any file appears or disappears outside the index directory (in the
    whole pytest base temp directory)."""
    root = tmp_path.parent
    before = _files_outside(root, index_dir)
    yield
    assert _files_outside(root, index_dir) == before


def _in_path(item_id: str) -> str:
    """Percent-encoded for a path segment, dots too (else the client resolves `..` itself)."""
    return quote(item_id, safe="").replace(".", "%2E")


def _unknown_everywhere(
    client: TestClient, item_id: str, status: int = 404, code: str = "unknown_item"
) -> None:
    """GET, DELETE, image and as a query: 404 `unknown_item` (or what an id that can never exist gets);
    as a rerank candidate: unknown."""
    path = _in_path(item_id)
    for response in (
        client.get(f"/items/{path}"),
        client.delete(f"/items/{path}"),
        client.get(f"/images/{path}"),
        client.get(f"/images/{path}", params={"size": 64}),
        client.post("/search", data={"attribute": "colour", "item_id": item_id}),
        client.post("/explain", data={"attribute": "colour", "item_id": item_id}),
        client.post("/rerank", data={"attribute": "colour", "item_id": item_id, "candidates": [ID]}),
    ):
        _error(response, status, code)
    reranked = client.post(
        "/rerank", data={"attribute": "colour", "item_id": ID, "candidates": [item_id, "test-00002"]}
    )
    assert reranked.status_code == 200 and reranked.json()["unknown"] == [item_id]


@pytest.mark.usefixtures("outside_index")
@pytest.mark.parametrize("item_id", PATH_IDS)
def test_ids_with_path_separators_are_only_ids(api: TestClient, index_dir: Path, item_id: str) -> None:
    """Ids with `/`, `\\` or `..` are unknown items (404) everywhere; POST /items accepts them as
    opaque ids (201: no request text reaches a file path), they round-trip through the
    percent-encoded URL, and no file is written outside the index directory."""
    _unknown_everywhere(api, item_id)
    added = api.post("/items", data={"id": item_id}, files={"image": ("../../evil.jpg", _jpeg())})
    assert added.status_code == 201 and added.json()["id"] == item_id, added.text
    path = _in_path(item_id)
    assert api.get(f"/items/{path}").json()["id"] == item_id
    image = api.get(f"/images/{path}")
    assert image.status_code == 200 and image.content == _jpeg()
    assert api.delete(f"/items/{path}").status_code == 200
    _error(api.get(f"/items/{path}"), 404, "unknown_item")
    assert all(index_dir in p.resolve().parents for p in index_dir.rglob("*"))
    _still_answers(api)


@pytest.mark.usefixtures("outside_index")
@pytest.mark.parametrize("item_id", BAD_IDS, ids=["nul", "10000-chars"])
def test_nul_and_ten_thousand_character_ids(api: TestClient, item_id: str) -> None:
    """An id with a NUL byte, or 10,000 characters long, can never be an item's: 422
    `invalid_item_id` everywhere (the same on every catalogue engine); as a rerank candidate it is
    unknown."""
    _error(
        api.post("/items", data={"id": item_id}, files={"image": ("q.jpg", _jpeg())}), 422, "invalid_item_id"
    )
    _unknown_everywhere(api, item_id, 422, "invalid_item_id")
    _still_answers(api)


# -- attribute names and top_k ----------------------------------------------------------------------

UNICODE_ATTRIBUTES = [
    "ärmel",
    "袖",
    "👗",
    "كم",
    "\u202ecolour",
    "colo\u200bur",
    "c\u043elour",
    "colour\u0301",
    "COLOUR",
    " colour",
]


@pytest.mark.parametrize(
    "attribute",
    UNICODE_ATTRIBUTES,
    ids=[
        "umlaut",
        "cjk",
        "emoji",
        "rtl",
        "rtl-override",
        "zero-width",
        "cyrillic-o",
        "combining",
        "upper",
        "space",
    ],
)
def test_unicode_attribute_names_are_422(api: TestClient, attribute: str) -> None:
    """Unicode (and look-alike) attribute names are unknown: 422 `unknown_attribute`, listing the
    known names, on every endpoint that takes one."""
    for path in ("/search", "/explain", "/rerank"):
        fields = {
            "attribute": attribute,
            "item_id": ID,
            **({"candidates": [ID]} if path == "/rerank" else {}),
        }
        body = _error(api.post(path, data=fields), 422, "unknown_attribute")
        assert "colour" in str(body["detail"])
    _still_answers(api)


@pytest.mark.parametrize(
    ("top_k", "code"),
    [
        ("-1", "top_k_out_of_range"),
        ("0", "top_k_out_of_range"),
        (str(10**12), "top_k_out_of_range"),
        (str(10**30), "top_k_out_of_range"),
        ("101", "top_k_out_of_range"),
        ("abc", "invalid_request"),
        ("1.5", "invalid_request"),
        ("1e3", "top_k_out_of_range"),
        ("٣", "invalid_request"),
        ("nan", "invalid_request"),
        ("inf", "invalid_request"),
        ("1e400", "invalid_request"),
    ],
)
def test_top_k_out_of_range_or_not_a_number_is_422(api: TestClient, top_k: str, code: str) -> None:
    """top_k below 1, above max_top_k (100) or not an integer: 422 (1e3 is the whole number 1000)."""
    _error(api.post("/search", data={"attribute": "colour", "item_id": ID, "top_k": top_k}), 422, code)


def test_an_empty_top_k_is_refused_and_a_left_out_one_is_the_default(api: TestClient) -> None:
    """An empty `top_k` field is no value (422, leave it out instead); left out: the default (10)."""
    _error(
        api.post("/search", data={"attribute": "colour", "item_id": ID, "top_k": ""}), 422, "invalid_request"
    )
    response = api.post("/search", data={"attribute": "colour", "item_id": ID})
    assert response.status_code == 200 and len(response.json()["results"]) == 10

"""Secure by default: a server bound beyond loopback refuses writes (403 `writes_disabled`, saying how
to enable them) until an API key is set or open writes are allowed explicitly; searches keep working.
On loopback, without a key, writes stay open (with a warning), as `make serve` and the tests use them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from asen_search.service.api.app import create_app
from asen_search.service.api.auth import is_loopback
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import build_parser
from asen_search.service.cli.service_commands import serve_settings

KEY = "a-key-for-the-write-tests-5d1e"
SEARCH = {"attribute": "colour", "item_id": "test-00001", "top_k": "3"}


@contextmanager
def _client(checkpoint: Path, index: Path, **settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(checkpoint=checkpoint, index=index, **settings))) as client:
        yield client


def _image(demo_dataset: Path) -> dict[str, tuple[str, bytes, str]]:
    return {"image": ("a.jpg", (demo_dataset / "images" / "test" / "00003.jpg").read_bytes(), "image/jpeg")}


def _writes(client: TestClient, demo_dataset: Path, headers: dict[str, str] | None = None) -> list[Any]:
    """POST /items, POST /items with replace=true, DELETE /items/{id}: every write route."""
    return [
        client.post("/items", data={"id": "sku/1"}, files=_image(demo_dataset), headers=headers),
        client.post(
            "/items", data={"id": "sku/1", "replace": "true"}, files=_image(demo_dataset), headers=headers
        ),
        client.delete("/items/test-00002", headers=headers),
    ]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "asen.internal"])
def test_beyond_loopback_without_a_key_writes_are_refused_and_searches_work(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path, host: str
) -> None:
    with _client(tiny_checkpoint, index_dir, host=host) as client:
        for answer in _writes(client, demo_dataset):
            assert answer.status_code == 403, answer.text
            body = answer.json()
            assert body["error"] == "writes_disabled"
            assert "ASEN_API_KEY" in body["detail"] and "X-API-Key" in body["detail"]
            assert "ASEN_ALLOW_OPEN_WRITES=1" in body["detail"] and "--allow-open-writes" in body["detail"]
        # even a malformed write (no image) is refused first: nothing about the request is looked at
        assert client.post("/items", data={"id": "x"}).status_code == 403
        assert client.delete("/items/no-such-item").status_code == 403
        # nothing was written; reads and searches answer
        assert client.get("/items/sku/1").status_code == 404
        assert client.get("/items/test-00002").status_code == 200
        found = client.post("/search", data=SEARCH)
        assert found.status_code == 200 and len(found.json()["results"]) == 3
        assert (
            client.post(
                "/rerank", data={"attribute": "colour", "item_id": "test-00001", "candidates": ["test-00002"]}
            ).status_code
            == 200
        )
        assert client.get("/images/test-00002", params={"size": 32}).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_beyond_loopback_with_a_key_writes_need_it(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path
) -> None:
    with _client(tiny_checkpoint, index_dir, host="0.0.0.0", api_key=KEY) as client:
        for answer in _writes(client, demo_dataset):
            assert answer.status_code == 401 and answer.json()["error"] == "missing_api_key", answer.text
        for answer in _writes(client, demo_dataset, {"X-API-Key": KEY + "x"}):
            assert answer.status_code == 401 and answer.json()["error"] == "wrong_api_key", answer.text
        added, replaced, deleted = _writes(client, demo_dataset, {"X-API-Key": KEY})
        assert (added.status_code, replaced.status_code, deleted.status_code) == (201, 200, 200)
        assert client.get("/items/sku/1").status_code == 200
        assert client.post("/search", data=SEARCH).status_code == 200


@pytest.mark.parametrize(
    ("host", "settings"),
    [
        ("0.0.0.0", {"allow_open_writes": True}),  # said explicitly
        ("127.0.0.1", {}),  # loopback: today's behaviour
        ("127.8.9.10", {}),
        ("::1", {}),
        ("localhost", {}),
    ],
)
def test_open_writes_when_allowed_explicitly_or_on_loopback(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path, host: str, settings: dict[str, Any]
) -> None:
    with _client(tiny_checkpoint, index_dir, host=host, **settings) as client:
        added, replaced, deleted = _writes(client, demo_dataset)
        assert (added.status_code, replaced.status_code, deleted.status_code) == (201, 200, 200), added.text
        assert client.post("/search", data=SEARCH).status_code == 200


def test_allow_open_writes_from_the_environment_and_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"checkpoint": Path("x.pt"), "index": Path("x")}
    assert Settings(**base).allow_open_writes is False
    monkeypatch.setenv("ASEN_ALLOW_OPEN_WRITES", "1")
    assert Settings(**base).allow_open_writes is True
    monkeypatch.delenv("ASEN_ALLOW_OPEN_WRITES")
    args = ["serve", "--checkpoint", "x.pt", "--index", "x", "--host", "0.0.0.0"]
    assert serve_settings(build_parser().parse_args(args)).allow_open_writes is False
    assert serve_settings(build_parser().parse_args([*args, "--allow-open-writes"])).allow_open_writes is True
    monkeypatch.setenv("ASEN_ALLOW_OPEN_WRITES", "true")  # the flag's absence does not override the variable
    assert serve_settings(build_parser().parse_args(args)).allow_open_writes is True


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.255.0.3", "::1", "[::1]", "localhost", "LocalHost.", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in (
        "0.0.0.0",
        "::",
        "",
        "10.0.0.5",
        "192.168.1.20",
        "fe80::1",
        "::ffff:10.0.0.1",
        "example.com",
        "localhost.example.com",
        "128.0.0.1",
    ):
        assert not is_loopback(host), host


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"host": "0.0.0.0"}, "writes are refused"),
        ({"host": "0.0.0.0", "allow_open_writes": True}, "open to anyone"),
        ({"host": "127.0.0.1"}, "open to anyone"),
    ],
)
def test_a_clear_warning_at_start(
    tiny_checkpoint: Path,
    index_dir: Path,
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, Any],
    expected: str,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="asen.service"),
        _client(tiny_checkpoint, index_dir, **settings),
    ):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(expected in w and "ASEN_API_KEY" in w for w in warnings), warnings
    if expected == "writes are refused":
        assert any("ASEN_ALLOW_OPEN_WRITES=1" in w and "0.0.0.0" in w for w in warnings), warnings


def test_no_warning_with_a_key(
    tiny_checkpoint: Path, index_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="asen.service"),
        _client(tiny_checkpoint, index_dir, host="0.0.0.0", api_key=KEY),
    ):
        pass
    text = caplog.text
    assert "writes are refused" not in text and "open to anyone" not in text and KEY not in text


def test_openapi_declares_the_403_on_every_write(tiny_checkpoint: Path) -> None:
    paths = create_app(Settings(checkpoint=tiny_checkpoint, index=Path("unused"))).openapi()["paths"]
    assert "403" in paths["/items"]["post"]["responses"]
    assert "403" in paths["/items/{item_id}"]["delete"]["responses"]
    assert "403" not in paths["/search"]["post"]["responses"]

"""The service on the Milvus backend (a real Milvus Lite engine): every endpoint answers as on the
FAISS directory, the catalogue is copied there by the real `asen index copy`, `asen check` reads it,
and acknowledged writes survive a restart of a real server process (the engine's durability)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import main
from tests.helpers.models import image_bytes, write_checkpoint
from tests.helpers.serving import free_port, serving


@pytest.fixture
def milvus_index(tmp_path: Path, built_index: Path) -> str:
    """The built test index copied into a Milvus Lite collection by the real command."""
    location = f"milvus-lite:{tmp_path}/catalogue.db#catalogue"
    assert main(["index", "copy", "--from", str(built_index), "--to", location]) == 0
    return location


@pytest.fixture
def both(
    tiny_checkpoint: Path, index_dir: Path, milvus_index: str, tmp_path: Path
) -> Iterator[tuple[TestClient, TestClient]]:
    """(FAISS app, Milvus app) on the same catalogue."""
    faiss_settings = Settings(checkpoint=tiny_checkpoint, index=index_dir)
    milvus_settings = Settings(
        checkpoint=tiny_checkpoint, index=milvus_index, images_dir=tmp_path / "uploads"
    )
    with (
        TestClient(create_app(faiss_settings)) as faiss_app,
        TestClient(create_app(milvus_settings)) as milvus_app,
    ):
        yield faiss_app, milvus_app


def test_settings_keep_a_milvus_location_as_given(tiny_checkpoint: Path) -> None:
    settings = Settings(checkpoint=tiny_checkpoint, index="milvus://db.internal:19530/shop")
    assert (
        settings.milvus
        and settings.index == "milvus://db.internal:19530/shop"
        and settings.images_root is None
    )


def test_reads_answer_as_on_the_faiss_directory(
    both: tuple[TestClient, TestClient], demo_dataset: Path
) -> None:
    faiss_app, milvus_app = both
    assert milvus_app.get("/readyz").json()["items"] == faiss_app.get("/readyz").json()["items"]
    files = {"image": ("q.jpg", image_bytes(demo_dataset / "images" / "test" / "00017.jpg"), "image/jpeg")}
    for form, extra in (
        ({"attribute": "colour", "top_k": "8"}, {"files": files}),
        ({"attribute": "neckline", "item_id": "test-00010", "top_k": "12"}, {}),
        (
            {"attribute": "sleeve_length", "item_id": "test-00003", "filters": '{"colour": ["red", "blue"]}'},
            {},
        ),
    ):
        want = faiss_app.post("/search", data=form, **extra).json()["results"]
        got = milvus_app.post("/search", data=form, **extra).json()["results"]
        assert [r["id"] for r in got] == [r["id"] for r in want] and want
        assert all(abs(g["score"] - w["score"]) < 1e-5 for g, w in zip(got, want))
    rerank = {
        "attribute": "pattern",
        "item_id": "test-00001",
        "candidates": ["test-00004", "test-00002", "nope"],
        "weight": "0.5",
    }
    assert milvus_app.post("/rerank", data=rerank).json() == faiss_app.post("/rerank", data=rerank).json()
    assert milvus_app.get("/items/test-00004").json() == faiss_app.get("/items/test-00004").json()
    explain = {"attribute": "neckline", "item_id": "test-00002"}
    assert milvus_app.post("/explain", data=explain).json() == faiss_app.post("/explain", data=explain).json()


def test_writes_and_uploaded_images(both: tuple[TestClient, TestClient], demo_dataset: Path) -> None:
    _, app = both
    before = app.get("/readyz").json()["items"]
    data = image_bytes(demo_dataset / "images" / "test" / "00020.jpg")
    added = app.post(
        "/items",
        data={"id": "new-1", "metadata": '{"colour": "teal"}'},
        files={"image": ("n.jpg", data, "image/jpeg")},
    )
    assert added.status_code == 201, added.text
    assert (
        app.post("/items", data={"id": "new-1"}, files={"image": ("n.jpg", data, "image/jpeg")}).status_code
        == 409
    )
    assert app.get("/readyz").json()["items"] == before + 1
    hits = app.post(
        "/search", data={"attribute": "colour", "item_id": "test-00020", "filters": '{"colour": "teal"}'}
    )
    assert [h["id"] for h in hits.json()["results"]] == ["new-1"]
    assert app.get("/images/new-1").status_code == 200
    assert app.delete("/items/new-1").status_code == 200
    assert app.get("/items/new-1").status_code == 404 and app.delete("/items/new-1").status_code == 404
    assert "new-1" not in [
        h["id"]
        for h in app.post(
            "/search", data={"attribute": "colour", "item_id": "test-00020", "top_k": "100"}
        ).json()["results"]
    ]


def test_check_reads_a_milvus_catalogue(
    tiny_checkpoint: Path, milvus_index: str, tmp_path: Path, demo_dataset: Path
) -> None:
    assert main(["check", "--checkpoint", str(tiny_checkpoint), "--index", milvus_index]) == 0
    other = write_checkpoint(tmp_path / "other.pt", demo_dataset, seed=1)
    assert main(["check", "--checkpoint", str(other), "--index", milvus_index]) == 2


def test_an_acknowledged_write_survives_a_server_restart(
    tiny_checkpoint: Path, milvus_index: str, demo_dataset: Path, tmp_path: Path
) -> None:
    """Real HTTP over a socket: `asen serve --index milvus-lite:...`, a write, SIGTERM, a new server."""
    data = image_bytes(demo_dataset / "images" / "test" / "00030.jpg")
    for round_ in range(2):
        port = free_port()
        args = [
            "serve",
            "--checkpoint",
            str(tiny_checkpoint),
            "--index",
            milvus_index,
            "--images-dir",
            str(tmp_path / "uploads"),
            "--port",
            str(port),
        ]
        with serving(args, {}, port) as url:
            if round_ == 0:
                assert (
                    httpx.post(
                        f"{url}/items",
                        data={"id": "kept"},
                        files={"image": ("k.jpg", data, "image/jpeg")},
                        timeout=60,
                    ).status_code
                    == 201
                )
            else:
                assert httpx.get(f"{url}/items/kept", timeout=30).status_code == 200
                assert httpx.get(f"{url}/images/kept", timeout=30).status_code == 200


def test_ids_filters_and_metadata_in_any_script_through_the_api(
    both: tuple[TestClient, TestClient], demo_dataset: Path
) -> None:
    """Ids with accents, quotes, backslashes, CJK, emoji; filter and metadata values in any script: the
    same answers on both engines, where Milvus used to answer 500; text no engine can store is the same
    422 on both."""
    data = image_bytes(demo_dataset / "images" / "test" / "00011.jpg")
    answers = []
    for app in both:
        for item_id in ("café", "a'b\"c", "back\\slash", "日本語", "👗 dress", "50% off"):
            added = app.post(
                "/items",
                data={"id": item_id, "metadata": json.dumps({"colour": "écru", "name": item_id})},
                files={"image": ("a.jpg", data, "image/jpeg")},
            )
            assert added.status_code == 201, added.text
            found = app.post(
                "/search",
                json={"attribute": "colour", "item_id": item_id, "top_k": 10, "filters": {"colour": "écru"}},
            )
            assert found.status_code == 200, found.text
            answers.append(sorted(h["id"] for h in found.json()["results"]))
            assert app.get(f"/items/{quote(item_id, safe='')}").json()["metadata"]["name"] == item_id
        surrogate = app.post(
            "/items",
            content=json.dumps(
                {"id": "s", "image": base64.b64encode(data).decode(), "metadata": {"k": "\ud800"}}
            ),  # escaped: \\ud800
            headers={"Content-Type": "application/json"},
        )
        assert surrogate.status_code == 422 and surrogate.json()["error"] == "invalid_metadata"
        assert app.delete(f"/items/{quote('a' + chr(39) + 'b' + chr(34) + 'c', safe='')}").status_code == 200
    half = len(answers) // 2
    assert answers[:half] == answers[half:]


def test_listing_with_cursors_while_another_client_writes(both: tuple[TestClient, TestClient]) -> None:
    """Every item that exists throughout a listing is listed exactly once, on either engine, while
    another client adds and deletes items between the pages."""
    for app in both:
        catalogue = app.app.state.service_state.catalogue  # type: ignore[attr-defined]
        lasting = sorted(catalogue.ids())
        doomed = lasting[::7]
        vectors = np.stack([catalogue.vector(lasting[0], a) for a in catalogue.attributes])[None]
        seen: list[str] = []
        cursor, page_number = None, 0
        while True:
            page = app.get(
                "/items",
                params={"limit": 23, "include_metadata": "false", **({"cursor": cursor} if cursor else {})},
            ).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            # between pages: another client adds items before and after the cursor, and deletes some
            catalogue.add(
                [
                    f"{lasting[page_number * 13 % len(lasting)]}~new{page_number}",
                    f"zz-new{page_number}",
                    f"0-new{page_number}",
                ],
                np.repeat(vectors, 3, axis=0),
            )
            if page_number < len(doomed):
                catalogue.remove([doomed[page_number]])
            page_number += 1
            if cursor is None:
                break
        throughout = [i for i in lasting if i not in set(doomed[:page_number])]
        assert len(seen) == len(set(seen)), "an item was listed twice"
        assert set(throughout) <= set(seen), sorted(set(throughout) - set(seen))[:5]

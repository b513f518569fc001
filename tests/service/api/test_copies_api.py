"""`POST /copies` (design protection) over the app, on the demo catalogue built by the real command:
the answers equal copy scores computed by brute force from the catalogue's own vectors (top k,
thresholds, filters, paging, image and item designs); a real copy calibration (`calibrate_copies` on
the tiny checkpoint, as `asen calibrate-copies` writes it) judges the modified attributes; every
refusal is its own 4xx code; the same answers over real HTTP with the Python client, and on a
Milvus Lite copy of the catalogue."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from asen_search.client import Client, CopiesPage, InvalidRequest
from asen_search.copy_score import copy_scores
from asen_search.index import Catalogue
from asen_search.model.copy_calibration import CopyCalibration, calibrate_copies, save_copy_calibration
from asen_search.model.copy_verify import FLOOR, WEIGHT, inliers, local_features, verification
from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.model.nn.preprocess import load_image
from asen_search.service.api.app import create_app
from asen_search.service.api.errors import ERRORS
from asen_search.service.api.requests import encode_cursor
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import main
from tests.helpers.serving import served

DESIGN = "test-00010"


@pytest.fixture(scope="module")
def calibrated_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, demo_dataset: Path
) -> Path:
    """The tiny checkpoint with a copy calibration beside it (`<stem>.copies.json`), made on the demo
    validation split as `asen calibrate-copies` makes it (120 images: a few seconds)."""
    path = Path(shutil.copy(tiny_checkpoint, tmp_path_factory.mktemp("copies") / "tiny.pt"))
    calibration = calibrate_copies(
        Encoder.from_checkpoint(path), load_dataset(demo_dataset), max_images=120, progress=False
    )
    save_copy_calibration(path, calibration)
    return path


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, calibrated_checkpoint: Path, built_index: Path
) -> Iterator[TestClient]:
    """The calibrated model on a private copy of the built catalogue (reads only)."""
    index = Path(shutil.copytree(built_index, tmp_path_factory.mktemp("copies-index") / "index"))
    with TestClient(create_app(Settings(checkpoint=calibrated_checkpoint, index=index))) as client:
        yield client


def _runtime(client: TestClient) -> Any:
    return client.app.state.service_state  # type: ignore[attr-defined]


def _calibration(client: TestClient) -> CopyCalibration:
    calibration = _runtime(client).encoder.copy_calibration
    assert calibration is not None
    return calibration


def brute_force(
    catalogue: Catalogue, design: dict[str, np.ndarray], modified: int, keep: Any = lambda item_id: True
) -> list[tuple[str, float, dict[str, float]]]:
    """Every item (that `keep` keeps) with its copy score and attribute scores, best first, computed
    from the catalogue's stored vectors alone."""
    attributes = catalogue.attributes
    ids = [i for i in catalogue.ids() if keep(i)]
    scores = np.array(
        [
            [
                float(catalogue.vector(i, a).astype(np.float64) @ design[a].astype(np.float64))
                for a in attributes
            ]
            for i in ids
        ]
    )
    totals = copy_scores(scores, max(1, len(attributes) - modified))
    rows = [(ids[n], float(totals[n]), dict(zip(attributes, scores[n].tolist()))) for n in range(len(ids))]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def item_design(catalogue: Catalogue, item_id: str) -> dict[str, np.ndarray]:
    return {a: catalogue.vector(item_id, a) for a in catalogue.attributes}


def assert_same(results: list[dict[str, Any]], expected: list[tuple[str, float, dict[str, float]]]) -> None:
    assert [r["id"] for r in results] == [e[0] for e in expected]
    for got, (_, score, scores) in zip(results, expected):
        assert got["score"] == pytest.approx(score, abs=1e-5)
        assert set(got["scores"]) == set(scores)
        assert all(got["scores"][a] == pytest.approx(s, abs=1e-5) for a, s in scores.items())


def test_top_k_equals_brute_force_and_each_hit_is_explained(app: TestClient) -> None:
    catalogue, calibration = _runtime(app).catalogue, _calibration(app)
    attributes = catalogue.attributes
    design = item_design(catalogue, DESIGN)
    for modified in (None, 0, 4):
        sent = {"item_id": DESIGN, "top_k": 12, **({} if modified is None else {"modified": modified})}
        answer = app.post("/copies", json=sent)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        used = calibration.modified if modified is None else modified
        assert body["modified_allowed"] == used and body["calibrated"] is True and body["threshold"] is None
        expected = brute_force(catalogue, design, used, keep=lambda i: i != DESIGN)[:12]
        assert_same(body["results"], expected)
        for hit in body["results"]:
            assert set(hit["scores"]) == set(attributes)
            best = sorted(hit["scores"].values(), reverse=True)[: len(attributes) - used]
            assert hit["score"] == pytest.approx(sum(best) / len(best), abs=1e-6)
            below = [a for a in attributes if hit["scores"][a] < calibration.changed_below[a]]
            assert hit["modified"] == sorted(below, key=lambda a: hit["scores"][a])
            assert hit["false_match_rate"] == (
                calibration.rate_at(hit["score"]) if used == calibration.modified else None
            )
    judged = app.post("/copies", json={"item_id": DESIGN, "top_k": 100}).json()["results"]
    assert any(h["modified"] for h in judged)  # the lines judge (the exact copy judges none: the image test)


POOL = 16  # the verified pool in these tests (50 in service): the same mechanism at a third of the cost
_FEATURES: dict[str, Any] = {}  # local features by stored picture, computed once for the whole module


@pytest.fixture
def small_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("asen_search.service.operations.copies.VERIFY_POOL", POOL)


def verified_ranking(
    catalogue: Catalogue, design_id: str, modified: int = 2, passing: int | None = None
) -> list[dict[str, Any]]:
    """The copies of a catalogue item as a verified search ranks them, computed here: the best
    POOL by brute-force copy score (of the first `passing` only: a threshold), each checked against
    the design by geometric verification of the stored pictures and re-ranked by copy score + WEIGHT x
    verification, the rest after them."""
    ranked = brute_force(
        catalogue, item_design(catalogue, design_id), modified, keep=lambda i: i != design_id
    )[:passing]

    def features(item_id: str) -> Any:
        path = catalogue.get(item_id).metadata["_image"]
        if path not in _FEATURES:
            _FEATURES[path] = local_features(load_image(Path(path)))
        return _FEATURES[path]

    design = features(design_id)
    pool = []
    for item_id, score, _ in ranked[:POOL]:
        count = inliers(design, features(item_id))
        pool.append(
            {
                "id": item_id,
                "score": score + WEIGHT * verification(count),
                "copy_score": score,
                "inliers": count,
            }
        )
    pool.sort(key=lambda h: -h["score"])  # stable: ties stay in copy-score order
    rest = [{"id": i, "score": s, "copy_score": s, "inliers": None} for i, s, _ in ranked[POOL:]]
    return pool + rest


def test_verify_reranks_the_best_copies_by_their_pictures_and_pages_one_ranking(
    app: TestClient, small_pool: None
) -> None:
    catalogue = _runtime(app).catalogue
    expected = verified_ranking(catalogue, DESIGN)
    body = app.post("/copies", json={"item_id": DESIGN, "top_k": 20, "verify": True}).json()
    assert body["verified"] is True
    got = [{k: h[k] for k in ("id", "score", "copy_score", "inliers")} for h in body["results"]]
    assert [h["id"] for h in got] == [h["id"] for h in expected[:20]]
    for hit, want in zip(got, expected):
        assert hit["inliers"] == want["inliers"]
        assert hit["score"] == pytest.approx(want["score"], abs=1e-5)
        assert hit["copy_score"] == pytest.approx(want["copy_score"], abs=1e-5)
    # verification moved items: the verified order is not the copy score's, and some were verified
    assert [h["id"] for h in got] != [h["id"] for h in sorted(got, key=lambda h: -h["copy_score"])]
    assert max(h["inliers"] or 0 for h in got) > FLOOR
    # the pages of one request are cut from one ranking, across the end of the verified pool
    deep = app.post(
        "/copies", json={"item_id": DESIGN, "top_k": 6, "offset": POOL - 3, "verify": True}
    ).json()["results"]
    assert [h["id"] for h in deep] == [h["id"] for h in expected[POOL - 3 : POOL + 3]]
    assert [h["inliers"] is None for h in deep] == [False] * 3 + [True] * 3
    assert all(h["score"] == h["copy_score"] for h in deep[3:])
    # with a threshold: the threshold chooses on the copy score (exactly 20 pass), verification orders
    chosen = brute_force(catalogue, item_design(catalogue, DESIGN), 2, keep=lambda i: i != DESIGN)
    threshold = (chosen[19][1] + chosen[20][1]) / 2
    sent = {"item_id": DESIGN, "modified": 2, "min_score": threshold, "verify": True}
    passing = app.post("/copies", json={**sent, "max_results": 100}).json()
    assert passing["verified"] and passing["total"] == 20 and passing["truncated"] is False
    assert [h["id"] for h in passing["results"]] == [
        h["id"] for h in verified_ranking(catalogue, DESIGN, 2, 20)
    ]
    assert all(h["copy_score"] >= threshold and h["score"] >= h["copy_score"] for h in passing["results"])
    second = app.post("/copies", json={**sent, "max_results": 8, "offset": 8}).json()
    assert [h["id"] for h in second["results"]] == [h["id"] for h in passing["results"][8:16]]
    assert second["truncated"] is True and second["next_cursor"] is not None
    plain = app.post("/copies", json={"item_id": DESIGN, "top_k": 5}).json()
    assert plain["verified"] is False and all(
        h["inliers"] is None and h["copy_score"] is None for h in plain["results"]
    )


def test_min_score_returns_exactly_the_items_passing_and_pages_on(app: TestClient) -> None:
    catalogue = _runtime(app).catalogue
    expected = brute_force(catalogue, item_design(catalogue, DESIGN), 2, keep=lambda i: i != DESIGN)
    threshold = (expected[19][1] + expected[20][1]) / 2  # exactly 20 pass
    body = app.post(
        "/copies", json={"item_id": DESIGN, "modified": 2, "min_score": threshold, "max_results": 100}
    ).json()
    assert_same(body["results"], expected[:20])
    assert body["total"] == 20 and body["truncated"] is False and body["next_cursor"] is None
    rate = _calibration(app).rate_at(threshold)
    assert body["threshold"] == {
        "min_score": threshold,
        "max_false_match_rate": None,
        "false_match_rate": rate,
        "max_results": 100,
    }
    pages, cursor = [], None
    while True:  # 6 a page: the range lists are cut, and each page is still the next 6 of the exact list
        sent = {
            "item_id": DESIGN,
            "modified": 2,
            "min_score": threshold,
            "max_results": 6,
            **({} if cursor is None else {"cursor": cursor}),
        }
        page = app.post("/copies", data={k: str(v) for k, v in sent.items()}).json()
        pages += page["results"]
        cursor = page["next_cursor"]
        assert page["truncated"] is (cursor is not None)
        if cursor is None:
            break
    assert_same(pages, expected[:20])


def test_a_false_match_rate_becomes_the_calibrated_score(app: TestClient) -> None:
    catalogue, calibration = _runtime(app).catalogue, _calibration(app)
    rate = 0.5
    score = calibration.score_for_rate(rate)
    body = app.post(
        "/copies", json={"item_id": DESIGN, "max_false_match_rate": rate, "max_results": 1000}
    ).json()
    assert body["threshold"] == {
        "min_score": score,
        "max_false_match_rate": rate,
        "false_match_rate": calibration.rate_at(score),
        "max_results": 1000,
    }
    expected = [
        e
        for e in brute_force(
            catalogue, item_design(catalogue, DESIGN), calibration.modified, keep=lambda i: i != DESIGN
        )
        if e[1] >= score
    ]
    assert_same(body["results"], expected)
    assert body["total"] == len(expected) and all(h["false_match_rate"] <= rate for h in body["results"])


def test_json_and_form_give_the_same_answer(app: TestClient) -> None:
    fields: dict[str, Any] = {
        "item_id": DESIGN,
        "modified": 1,
        "min_score": 0.5,
        "max_results": 15,
        "filters": {"split": "test", "colour": {"exists": False}},
        "fields": ["split"],
    }
    as_json = app.post("/copies", json=fields)
    form = {
        **{k: str(v) for k, v in fields.items() if k not in ("filters", "fields")},
        "filters": json.dumps(fields["filters"]),
        "fields": "split",
    }
    as_form = app.post("/copies", data=form)
    assert as_json.status_code == 200 and as_json.json() == as_form.json()
    assert len(as_json.json()["results"]) == 15
    assert all(h["metadata"] == {"split": "test"} for h in as_json.json()["results"])
    bare = app.post("/copies", data={"item_id": DESIGN, "include_metadata": "false", "top_k": "3"}).json()
    assert [h["metadata"] for h in bare["results"]] == [None] * 3


def test_paging_by_cursor_and_offset_equals_one_big_page(app: TestClient) -> None:
    whole = app.post("/copies", json={"item_id": DESIGN, "top_k": 20}).json()["results"]
    by_cursor, cursor = [], None
    for _ in range(4):
        page = app.post(
            "/copies", json={"item_id": DESIGN, "top_k": 5, **({} if cursor is None else {"cursor": cursor})}
        ).json()
        by_cursor += page["results"]
        cursor = page["next_cursor"]
    by_offset = app.post("/copies", json={"item_id": DESIGN, "top_k": 10, "offset": 10}).json()
    assert by_cursor == whole and by_offset["results"] == whole[10:] and by_offset["offset"] == 10


def test_filters_are_respected(app: TestClient) -> None:
    catalogue = _runtime(app).catalogue
    wanted = {"colour": ["red", "blue"]}
    body = app.post("/copies", json={"item_id": DESIGN, "top_k": 8, "filters": wanted}).json()
    expected = brute_force(
        catalogue,
        item_design(catalogue, DESIGN),
        2,
        keep=lambda i: i != DESIGN and catalogue.get(i).metadata.get("colour") in ("red", "blue"),
    )
    assert_same(body["results"], expected[:8])
    assert all(h["metadata"]["colour"] in ("red", "blue") for h in body["results"])


def test_an_uploaded_design_is_encoded_for_every_attribute(app: TestClient, demo_dataset: Path) -> None:
    """The picture of test-00017 as the design: it finds test-00017 first (every attribute ~1), then
    the catalogue ranked as by the item's own vectors (an image design excludes nothing)."""
    catalogue = _runtime(app).catalogue
    picture = (demo_dataset / "images" / "test" / "00017.jpg").read_bytes()
    body = app.post("/copies", data={"top_k": "10"}, files={"image": ("d.jpg", picture, "image/jpeg")}).json()
    top = body["results"][0]
    assert top["id"] == "test-00017" and min(top["scores"].values()) > 0.999 and top["modified"] == []
    assert_same(body["results"], brute_force(catalogue, item_design(catalogue, "test-00017"), 2)[:10])


def test_ids_in_any_script_are_found_and_returned(client: TestClient, small_pool: None) -> None:
    """An item with an id and metadata in several scripts, quotes included, holding the design's own
    vectors: it is the design's first copy, and as the design itself it finds the original."""
    catalogue = client.app.state.service_state.catalogue  # type: ignore[attr-defined]
    odd = "東京-robe 'é\"ü"
    vectors = np.stack([catalogue.vector(DESIGN, a) for a in catalogue.attributes]).tolist()
    added = client.post(
        "/items",
        json={
            "id": odd,
            "vectors": vectors,
            "fingerprint": catalogue.fingerprint,
            "metadata": {"name": 'ドレス "x"', "colour": "écru"},
        },
    )
    assert added.status_code == 201, added.text
    first = client.post("/copies", json={"item_id": DESIGN, "top_k": 1}).json()["results"][0]
    assert first["id"] == odd and first["score"] == pytest.approx(1.0, abs=1e-5)
    assert first["metadata"] == {"name": 'ドレス "x"', "colour": "écru"}
    back = client.post("/copies", data={"item_id": odd, "top_k": "1", "filters": '{"split": "test"}'}).json()
    assert back["results"][0]["id"] == DESIGN
    filtered = client.post(
        "/copies", json={"item_id": DESIGN, "min_score": 0.0, "filters": {"colour": "écru"}}
    )
    assert [h["id"] for h in filtered.json()["results"]] == [odd]
    # verified: the item added by its vectors has no picture to verify (it keeps its copy score), and
    # as the design it has none to compare with (404 no_image)
    verified = client.post("/copies", json={"item_id": DESIGN, "top_k": 3, "verify": True}).json()["results"]
    mine = next(h for h in verified if h["id"] == odd)
    assert mine["inliers"] is None and mine["score"] == mine["copy_score"] == pytest.approx(1.0, abs=1e-5)
    assert any(h["inliers"] is not None for h in verified)
    refused = client.post("/copies", json={"item_id": odd, "top_k": 3, "verify": True})
    assert refused.status_code == 404 and refused.json()["error"] == "no_image", refused.text


def test_without_a_calibration_nothing_is_judged_and_rates_are_refused(client: TestClient) -> None:
    body = client.post("/copies", json={"item_id": DESIGN, "top_k": 30}).json()
    assert body["calibrated"] is False and body["modified_allowed"] == 2
    assert all(h["modified"] == [] and h["false_match_rate"] is None for h in body["results"])
    threshold = client.post("/copies", json={"item_id": DESIGN, "min_score": 0.9}).json()["threshold"]
    assert threshold["false_match_rate"] is None
    refused = client.post("/copies", json={"item_id": DESIGN, "max_false_match_rate": 0.01})
    assert refused.status_code == 422 and refused.json()["error"] == "no_copy_calibration"
    assert "asen calibrate-copies" in refused.json()["detail"]


# every refusal: (the request, the code it must answer)
REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({}, "query_required"),
    ({"item_id": DESIGN, "image": "aGVsbG8="}, "query_required"),
    ({"item_id": "nope"}, "unknown_item"),
    ({"item_id": "bad\x01id"}, "invalid_item_id"),
    ({"image": "not base64!"}, "invalid_base64"),
    ({"image": "aGVsbG8="}, "not_an_image"),
    ({"item_id": DESIGN, "top_k": 0}, "top_k_out_of_range"),
    ({"item_id": DESIGN, "top_k": 101}, "top_k_out_of_range"),
    (
        {"item_id": DESIGN, "top_k": 10, "offset": 1000},
        "offset_out_of_range",
    ),  # the depth (a page to 995 is cut)
    ({"item_id": DESIGN, "min_score": 0.5, "max_results": 100, "offset": 1000}, "offset_out_of_range"),
    ({"item_id": DESIGN, "cursor": encode_cursor("copies", 10) + "*"}, "invalid_cursor"),
    ({"item_id": DESIGN, "cursor": "garbage"}, "invalid_cursor"),
    ({"item_id": DESIGN, "cursor": encode_cursor("search", 10)}, "invalid_cursor"),
    ({"item_id": DESIGN, "cursor": encode_cursor("copies", 10), "offset": 10}, "invalid_request"),
    ({"item_id": DESIGN, "filters": {"price": {"gte": "ten"}}}, "invalid_filters"),
    ({"item_id": DESIGN, "max_results": 10}, "max_results_without_threshold"),
    ({"item_id": DESIGN, "min_score": 0.5, "max_false_match_rate": 0.1}, "conflicting_threshold"),
    ({"item_id": DESIGN, "min_score": 0.5, "top_k": 5}, "threshold_with_top_k"),
    ({"item_id": DESIGN, "max_false_match_rate": 0.1, "top_k": 5}, "threshold_with_top_k"),
    ({"item_id": DESIGN, "min_score": 0.5, "max_results": 0}, "max_results_out_of_range"),
    ({"item_id": DESIGN, "min_score": 1.5}, "min_score_out_of_range"),
    ({"item_id": DESIGN, "modified": -1}, "modified_out_of_range"),
    ({"item_id": DESIGN, "modified": 7}, "modified_out_of_range"),
    ({"item_id": DESIGN, "max_false_match_rate": 1.5}, "max_false_match_rate_out_of_range"),
    ({"item_id": DESIGN, "max_false_match_rate": 0.1, "modified": 1}, "modified_not_calibrated"),
    ({"item_id": DESIGN, "max_false_match_rate": 0.0001}, "false_match_rate_unmeasurable"),
    ({"item_id": DESIGN, "top_k": "5"}, "invalid_request"),
    ({"item_id": DESIGN, "attribute": "colour"}, "unknown_field"),
]


@pytest.mark.parametrize(("sent", "code"), REFUSALS, ids=[f"{n}-{c}" for n, (_, c) in enumerate(REFUSALS)])
def test_each_refusal_is_its_own_4xx(app: TestClient, sent: dict[str, Any], code: str) -> None:
    answer = app.post("/copies", json=sent)
    assert answer.status_code == ERRORS[code][0] and 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"] == code, answer.text


def test_refusals_cover_every_code_copies_added_and_the_route_declares_them(app: TestClient) -> None:
    added = {
        "modified_out_of_range",
        "max_false_match_rate_out_of_range",
        "no_copy_calibration",
        "modified_not_calibrated",
        "false_match_rate_unmeasurable",
    }
    assert added <= set(ERRORS)
    assert added - {"no_copy_calibration"} <= {code for _, code in REFUSALS}  # no_copy_calibration: above
    operation = app.get("/openapi.json").json()["paths"]["/copies"]["post"]
    declared = " ".join(r["description"] for r in operation["responses"].values())
    assert all(f"`{code}`" in declared for _, code in REFUSALS) and "`no_copy_calibration`" in declared
    assert set(operation["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["modified"]["maximum"] == 6 and body["properties"]["min_score"]["maximum"] == 1
    assert {
        "if": {"required": ["max_false_match_rate"]},
        "then": {"properties": {"modified": {"const": 2}}},
    } in body["allOf"]  # a rate only for the modified the calibration was made for
    assert operation["x-rate-limit"] == {"budget": "model"}  # counted with /search (service/api/overload.py)


def test_get_is_405_naming_post(app: TestClient) -> None:
    """Rate limiting: tests/service/api/test_rate_limits.py drives /copies past its burst."""
    for method in ("GET", "HEAD", "PUT"):
        wrong = app.request(method, "/copies")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert app.get("/copies").json()["error"] == "method_not_allowed"


def test_real_http_and_the_python_client(
    calibrated_checkpoint: Path, index_dir: Path, demo_dataset: Path
) -> None:
    """`asen serve` over a real socket: raw HTTP (form and JSON) and `Client.copies` answer the same,
    and `iter_copies` pages to the same list as one deep page."""
    picture = demo_dataset / "images" / "test" / "00017.jpg"
    with (
        served(calibrated_checkpoint, index_dir) as url,
        httpx.Client(base_url=url, timeout=60) as http,
        Client(url) as asen,
    ):
        form = http.post(
            "/copies",
            data={"top_k": "8", "modified": "1"},
            files={"image": ("d.jpg", picture.read_bytes(), "image/jpeg")},
        )
        assert form.status_code == 200, form.text
        typed = asen.copies(image=picture, top_k=8, modified=1)
        assert isinstance(typed, CopiesPage) and typed == CopiesPage.from_json(form.json())
        assert typed.ids[0] == "test-00017" and typed.calibrated and typed.modified_allowed == 1
        by_json = http.post("/copies", json={"item_id": DESIGN, "min_score": 0.92, "max_results": 300}).json()
        deep = asen.copies(item_id=DESIGN, min_score=0.92, max_results=300)
        assert (
            deep == CopiesPage.from_json(by_json)
            and deep.threshold is not None
            and deep.total == len(deep.ids)
        )
        assert 7 < len(deep.ids) < 300 and not deep.truncated  # several pages of 7
        paged = list(asen.iter_copies(item_id=DESIGN, min_score=0.92, page_size=7))
        assert [h.id for h in paged] == deep.ids and [h.scores for h in paged] == [
            h.scores for h in deep.results
        ]
        verified = asen.copies(item_id=DESIGN, top_k=5, verify=True)
        raw = http.post("/copies", json={"item_id": DESIGN, "top_k": 5, "verify": True}).json()
        assert verified == CopiesPage.from_json(raw) and verified.verified
        assert all(h.copy_score is not None and h.inliers is not None for h in verified.results)
        with pytest.raises(InvalidRequest) as refused:
            asen.copies(item_id=DESIGN, max_false_match_rate=0.1, modified=0)
        assert refused.value.code == "modified_not_calibrated" and refused.value.status == 422


def test_milvus_lite_answers_as_brute_force(
    tmp_path: Path, calibrated_checkpoint: Path, built_index: Path, app: TestClient, small_pool: None
) -> None:
    """The catalogue copied into Milvus Lite by the real `asen index copy`: top k, a threshold (cut
    into pages) and a filtered search equal brute force over the Milvus catalogue's vectors, and the
    FAISS directory's answers."""
    location = f"milvus-lite:{tmp_path}/catalogue.db#catalogue"
    assert main(["index", "copy", "--from", str(built_index), "--to", location]) == 0
    settings = Settings(checkpoint=calibrated_checkpoint, index=location, images_dir=tmp_path / "uploads")
    with TestClient(create_app(settings)) as milvus:
        catalogue = _runtime(milvus).catalogue
        expected = brute_force(catalogue, item_design(catalogue, DESIGN), 2, keep=lambda i: i != DESIGN)
        threshold = (expected[14][1] + expected[15][1]) / 2
        requests: list[dict[str, Any]] = [
            {"item_id": DESIGN, "top_k": 10},
            {"item_id": DESIGN, "min_score": threshold, "max_results": 100},
            {"item_id": DESIGN, "min_score": threshold, "max_results": 4, "offset": 8},
            {"item_id": DESIGN, "top_k": 5, "filters": {"colour": ["red", "blue"]}},
        ]
        answers = [milvus.post("/copies", json=sent).json() for sent in requests]
        assert_same(answers[0]["results"], expected[:10])
        assert_same(answers[1]["results"], expected[:15]) and answers[1]["total"] == 15
        assert_same(answers[2]["results"], expected[8:12]) and answers[2]["truncated"]
        colour = brute_force(
            catalogue,
            item_design(catalogue, DESIGN),
            2,
            keep=lambda i: i != DESIGN and catalogue.get(i).metadata.get("colour") in ("red", "blue"),
        )
        assert_same(answers[3]["results"], colour[:5])
        for sent, got in zip(requests, answers):
            want = app.post("/copies", json=sent).json()
            assert [h["id"] for h in got["results"]] == [h["id"] for h in want["results"]]
            assert got["modified_allowed"] == want["modified_allowed"] and got["calibrated"]
        # a verified search reads the stored pictures the Milvus catalogue names: the same ranking
        verified = milvus.post("/copies", json={"item_id": DESIGN, "top_k": 10, "verify": True}).json()
        want = verified_ranking(catalogue, DESIGN)[:10]
        assert verified["verified"] and [h["id"] for h in verified["results"]] == [h["id"] for h in want]
        assert [h["inliers"] for h in verified["results"]] == [h["inliers"] for h in want]

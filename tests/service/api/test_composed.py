"""Composed queries, search by value and tagging over the API, on the demo catalogue indexed by
`asen index build` with a checkpoint that has value prototypes (`asen prototypes`): results equal a
brute-force weighted sum over every item; every malformed query is a 422 naming its problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from asen_search.index import FaissCatalogue
from asen_search.model.checkpoint import CheckpointError, read_payload, update_extra
from asen_search.model.encoder import Encoder
from asen_search.model.image_input import decode_image
from asen_search.service.jobs.tags import PREDICTED

IMAGE = "images/test/00005.jpg"


def _catalogue_vectors(client: TestClient) -> tuple[list[str], np.ndarray, list[dict]]:
    """Every item's id, vectors `[n, n_attributes, dim]` and metadata, read from the served catalogue."""
    ids, vectors, metas = [], [], []
    for chunk_ids, chunk_vectors, chunk_metas in client.app.state.service_state.catalogue.iter_items(1000):
        ids += chunk_ids
        vectors.append(chunk_vectors)
        metas += chunk_metas
    return ids, np.concatenate(vectors), metas


def _brute_force(
    client: TestClient,
    parts: list[tuple[str, np.ndarray, float]],
    k: int,
    exclude: set[str] = frozenset(),
    keep=lambda meta: True,
) -> list[tuple[str, float]]:
    ids, vectors, metas = _catalogue_vectors(client)
    names = client.app.state.service_state.encoder.attribute_names
    total = np.zeros(len(ids))
    for attribute, query, weight in parts:
        total += weight * (vectors[:, names.index(attribute)].astype(np.float64) @ query.astype(np.float64))
    ranked = sorted(
        (i for i in range(len(ids)) if ids[i] not in exclude and keep(metas[i])), key=lambda i: -total[i]
    )
    return [(ids[i], float(total[i])) for i in ranked[:k]]


def _image_vectors(client: TestClient, path: Path, attributes: list[str]) -> np.ndarray:
    state = client.app.state.service_state
    image = decode_image(path.read_bytes(), state.service.limits.images)
    return state.encoder.encode([image], [state.encoder.attribute_id(a) for a in attributes])[0]


def _check_same(answer: dict, expected: list[tuple[str, float]]) -> None:
    assert [h["id"] for h in answer["results"]] == [i for i, _ in expected]
    assert [h["score"] for h in answer["results"]] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_a_composed_query_equals_the_brute_force_weighted_sum(
    tagging_client: TestClient, demo_dataset: Path
) -> None:
    state = tagging_client.app.state.service_state
    prototypes = state.encoder.prototypes
    item = "test-00007"
    query = [
        {"attribute": "neckline", "image": "front"},
        {"attribute": "colour", "item_id": item, "weight": 0.5},
        {"attribute": "pattern", "value": "dots", "weight": -1},
    ]
    answer = tagging_client.post(
        "/search",
        data={"query": json.dumps(query), "top_k": "40"},
        files={"front": (IMAGE, (demo_dataset / IMAGE).read_bytes(), "image/jpeg")},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["attribute"] is None and body["query"] == [
        {"attribute": "neckline", "image": "front", "weight": 1.0},
        {"attribute": "colour", "item_id": item, "weight": 0.5},
        {"attribute": "pattern", "value": "dots", "weight": -1.0},
    ]
    expected = _brute_force(
        tagging_client,
        [
            ("neckline", _image_vectors(tagging_client, demo_dataset / IMAGE, ["neckline"])[0], 1.0),
            ("colour", state.catalogue.vector(item, "colour"), 0.5),
            ("pattern", prototypes.vector("pattern", "dots"), -1.0),
        ],
        40,
        exclude={item},
    )
    _check_same(body, expected)


def test_one_image_serves_several_parts_and_filters_apply(
    tagging_client: TestClient, demo_dataset: Path
) -> None:
    query = [
        {"attribute": "neckline", "image": "image", "weight": 0.8},
        {"attribute": "sleeve_length", "image": "image", "weight": 0.3},
    ]
    wanted = {"predicted.closure": ["none", "zip"]}
    answer = tagging_client.post(
        "/search",
        data={"query": json.dumps(query), "top_k": "30", "filters": json.dumps(wanted)},
        files={"image": ("a.jpg", (demo_dataset / IMAGE).read_bytes(), "image/jpeg")},
    )
    assert answer.status_code == 200, answer.text
    vectors = _image_vectors(tagging_client, demo_dataset / IMAGE, ["neckline", "sleeve_length"])
    expected = _brute_force(
        tagging_client,
        [("neckline", vectors[0], 0.8), ("sleeve_length", vectors[1], 0.3)],
        30,
        keep=lambda meta: meta.get("predicted.closure") in ("none", "zip"),
    )
    _check_same(answer.json(), expected)
    assert all(h["metadata"]["predicted.closure"] in ("none", "zip") for h in answer.json()["results"])


def test_a_value_query_ranks_by_the_value_prototype(tagging_client: TestClient) -> None:
    prototypes = tagging_client.app.state.service_state.encoder.prototypes
    answer = tagging_client.post(
        "/search", data={"query": json.dumps([{"attribute": "neckline", "value": "round"}])}
    )
    assert answer.status_code == 200, answer.text
    _check_same(
        answer.json(),
        _brute_force(tagging_client, [("neckline", prototypes.vector("neckline", "round"), 1.0)], 10),
    )
    listed = {a["name"]: a for a in tagging_client.get("/attributes").json()["attributes"]}
    assert listed["neckline"]["value_search"] == listed["neckline"]["values"]


def test_rerank_and_group_by_take_a_composed_query(tagging_client: TestClient) -> None:
    state = tagging_client.app.state.service_state
    query = [
        {"attribute": "colour", "item_id": "test-00003"},
        {"attribute": "pocket", "item_id": "test-00009", "weight": -0.5},
    ]
    candidates = ["test-00011", "test-00012", "test-00013", "test-00003", "nope"]
    answer = tagging_client.post("/rerank", data={"query": json.dumps(query), "candidates": candidates})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = {
        i: 1.0 * float(state.catalogue.vector(i, "colour") @ state.catalogue.vector("test-00003", "colour"))
        - 0.5 * float(state.catalogue.vector(i, "pocket") @ state.catalogue.vector("test-00009", "pocket"))
        for i in candidates[:4]
    }
    assert {h["id"]: h["similarity"] for h in body["results"]} == pytest.approx(expected, abs=1e-5)
    assert body["unknown"] == ["nope"] and body["query"][1]["weight"] == -0.5
    grouped = tagging_client.post(
        "/search", data={"query": json.dumps(query), "top_k": "4", "group_by": "predicted.colour"}
    ).json()["results"]
    assert len(grouped) == 4 and len({h["metadata"]["predicted.colour"] for h in grouped}) == 4


MALFORMED: list[tuple[object, str, str]] = [
    ([{"attribute": "fabric", "value": "silk"}], "unknown_attribute", "unknown attribute 'fabric'"),
    ([{"attribute": "neckline", "image": "front"}], "image_not_uploaded", "'front'"),
    ([{"attribute": "neckline", "item_id": "test-00001", "weight": 1.5}], "weight_out_of_range", "[-1, 1]"),
    ([{"attribute": "neckline", "item_id": "test-00001", "weight": -2}], "weight_out_of_range", "[-1, 1]"),
    (
        [
            {"attribute": "neckline", "item_id": "test-00001", "weight": 0},
            {"attribute": "colour", "value": "red", "weight": 0},
        ],
        "zero_weights",
        "weight 0",
    ),
    (
        [{"attribute": "neckline", "item_id": "test-00001"}, {"attribute": "neckline", "value": "round"}],
        "duplicate_attribute",
        "both about 'neckline'",
    ),
    ([{"attribute": "neckline", "value": "turtle"}], "unknown_value", "no value 'turtle'"),
    ([{"attribute": "neckline"}], "invalid_query", "exactly one of"),
    (
        [{"attribute": "neckline", "value": "round", "item_id": "test-00001"}],
        "invalid_query",
        "exactly one of",
    ),
    ([{"attribute": "neckline", "value": "round", "colour": "red"}], "invalid_query", "unknown keys"),
    ([], "invalid_query", "non-empty"),
    ({"attribute": "neckline"}, "invalid_query", "list"),
]


def test_the_schema_refuses_every_malformed_composed_query(tagging_client: TestClient) -> None:
    """The OpenAPI body of /search (a form's: parts by item or by value) admits a good composed query
    and none of those the server refuses (one source a part: a value outside its attribute's values
    beside an item_id is no item_id part)."""
    document = tagging_client.get("/openapi.json").json()
    body = document["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    validator = Draft202012Validator({**body, "components": document["components"]})
    assert validator.is_valid(
        {
            "query": [
                {"attribute": "neckline", "value": "round"},
                {"attribute": "colour", "item_id": "test-00001", "weight": -0.5},
            ]
        }
    )
    for query, code, _ in MALFORMED:
        assert not validator.is_valid({"query": query}), (query, code)
    assert not validator.is_valid(
        {"query": [{"attribute": "neckline", "item_id": "test-00001", "value": "zz"}]}
    )


@pytest.mark.parametrize(("query", "code", "words"), MALFORMED)
def test_a_malformed_composed_query_is_a_422(
    tagging_client: TestClient, query: object, code: str, words: str
) -> None:
    answer = tagging_client.post("/search", data={"query": json.dumps(query)})
    assert answer.status_code == 422 and answer.json()["error"] == code, answer.text
    assert words in answer.json()["detail"]


def test_query_and_the_single_form_do_not_mix(tagging_client: TestClient) -> None:
    query = json.dumps([{"attribute": "neckline", "value": "round"}])
    both = tagging_client.post(
        "/search", data={"query": query, "attribute": "colour", "item_id": "test-00001"}
    )
    assert both.status_code == 422 and both.json()["error"] == "ambiguous_query"
    neither = tagging_client.post("/search", data={"item_id": "test-00001"})
    assert neither.status_code == 422 and neither.json()["error"] == "attribute_required"
    assert tagging_client.post("/search", data={"query": "[not json"}).json()["error"] == "invalid_json"
    unknown_item = tagging_client.post(
        "/search", data={"query": json.dumps([{"attribute": "colour", "item_id": "x"}])}
    )
    assert unknown_item.status_code == 404 and unknown_item.json()["error"] == "unknown_item"


def test_without_prototypes_value_parts_and_tags_are_a_clear_422(client: TestClient) -> None:
    value = client.post("/search", data={"query": json.dumps([{"attribute": "neckline", "value": "round"}])})
    assert value.status_code == 422 and value.json()["error"] == "no_prototypes"
    assert "asen prototypes" in value.json()["detail"]
    tag = client.post("/tag", data={"item_id": "test-00001"})
    assert tag.status_code == 422 and tag.json()["error"] == "no_prototypes"
    assert all(a["value_search"] == [] for a in client.get("/attributes").json()["attributes"])
    # the rest of a composed query still works without prototypes
    ok = client.post(
        "/search", data={"query": json.dumps([{"attribute": "neckline", "item_id": "test-00001"}])}
    )
    assert ok.status_code == 200, ok.text


def test_tag_answers_the_calibrated_prediction_of_every_attribute(
    tagging_client: TestClient, demo_dataset: Path
) -> None:
    state = tagging_client.app.state.service_state
    item = tagging_client.post("/tag", data={"item_id": "test-00005"})
    assert item.status_code == 200, item.text
    vectors = np.stack([state.catalogue.vector("test-00005", a) for a in state.encoder.attribute_names])
    expected = state.encoder.prototypes.tag(vectors)
    tags = item.json()["tags"]
    assert [t["attribute"] for t in tags] == state.encoder.attribute_names
    for t in tags:
        assert (t["value"], t["confidence"]) == (
            expected[t["attribute"]][0],
            pytest.approx(expected[t["attribute"]][1], abs=1e-4),
        )
        assert sum(t["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    # the same image uploaded: the predictions stored in its catalogue item at build time
    upload = tagging_client.post(
        "/tag", files={"image": ("x.jpg", (demo_dataset / IMAGE).read_bytes(), "image/jpeg")}
    )
    stored = state.catalogue.get("test-00005").metadata
    for t in upload.json()["tags"]:
        assert stored[PREDICTED + t["attribute"]] == t["value"]
        assert stored[f"{PREDICTED}{t['attribute']}.confidence"] == pytest.approx(t["confidence"], abs=2e-3)


def test_built_and_added_items_carry_predicted_tags_usable_in_filters(
    tagging_client: TestClient, demo_dataset: Path
) -> None:
    _, _, metas = _catalogue_vectors(tagging_client)
    names = tagging_client.app.state.service_state.encoder.attribute_names
    assert all(PREDICTED + a in m and f"{PREDICTED}{a}.confidence" in m for m in metas for a in names)
    image = (demo_dataset / IMAGE).read_bytes()
    added = tagging_client.post(
        "/items",
        data={"id": "new-1", "metadata": json.dumps({"brand": "x", "neckline": "mine"})},
        files={"image": ("a.jpg", image, "image/jpeg")},
    )
    assert added.status_code == 201, added.text
    stored = tagging_client.get("/items/new-1").json()["metadata"]
    assert stored["brand"] == "x" and stored["neckline"] == "mine", "user metadata is kept as sent"
    assert (
        stored[PREDICTED + "neckline"] in tagging_client.app.state.service_state.encoder.attributes[0].values
    )
    found = tagging_client.post(
        "/search",
        data={
            "attribute": "colour",
            "item_id": "test-00001",
            "top_k": "100",
            "filters": json.dumps({PREDICTED + "neckline": stored[PREDICTED + "neckline"], "brand": "x"}),
        },
    ).json()["results"]
    assert [h["id"] for h in found] == ["new-1"]
    refused = tagging_client.post(
        "/items",
        data={"id": "new-2", "metadata": json.dumps({"predicted.neckline": "v"})},
        files={"image": ("a.jpg", image, "image/jpeg")},
    )
    assert refused.status_code == 422 and refused.json()["error"] == "invalid_metadata"
    assert "reserved" in refused.json()["detail"]
    assert tagging_client.get("/items/new-2").status_code == 404


def test_a_catalogue_source_with_reserved_keys_is_refused_before_encoding(
    tmp_path: Path, demo_dataset: Path
) -> None:
    from asen_search.service.jobs.sources import read_catalogue

    source = tmp_path / "items.jsonl"
    source.write_text(
        json.dumps({"id": "a", "path": str(demo_dataset / IMAGE), "predicted.colour": "red"}) + "\n"
    )
    with pytest.raises(ValueError, match="reserved for predicted tags"):
        read_catalogue(source)


def test_an_index_built_without_prototypes_has_no_predicted_keys(built_index: Path) -> None:
    catalogue = FaissCatalogue.load(built_index)
    assert not any(k.startswith(PREDICTED) for k in catalogue.get(catalogue.ids()[0]).metadata)


def test_prototypes_travel_in_the_checkpoint(
    tmp_path: Path, tagging_checkpoint: Path, tiny_checkpoint: Path
) -> None:
    encoder = Encoder.from_checkpoint(tagging_checkpoint, runtime="torch")
    assert encoder.prototypes is not None
    assert [a.name for a in encoder.prototypes.attributes] == encoder.attribute_names
    assert Encoder.from_checkpoint(tiny_checkpoint, runtime="torch").prototypes is None
    broken = Path(shutil.copy(tagging_checkpoint, tmp_path / "broken.pt"))
    extra = read_payload(broken)["extra"]["prototypes"]
    extra["neckline"]["values"] = ["a", "b"]
    update_extra(broken, prototypes=extra)
    with pytest.raises(CheckpointError, match="asen prototypes"):
        Encoder.from_checkpoint(broken, runtime="torch")


def test_eval_reports_tagging_and_writes_the_plots(
    tmp_path: Path, tagging_checkpoint: Path, demo_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asen_search.service.cli.main import main

    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "--data",
                str(demo_dataset),
                "--checkpoint",
                str(tagging_checkpoint),
                "--json",
                str(out),
                "--plots",
                str(tmp_path / "plots"),
                "--runtime",
                "torch",
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())["tagging"]
    assert set(report["accuracy"]) == {a.name for a in Encoder.from_checkpoint(tagging_checkpoint).attributes}
    assert report["worst"] == min(report["accuracy"], key=report["accuracy"].get)
    for name, matrix in report["confusion"].items():
        assert np.trace(np.array(matrix)) / np.sum(matrix) == pytest.approx(report["accuracy"][name])
    assert "tag accuracy" in capsys.readouterr().out
    for png in ("confusion_worst.png", "reliability.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"

"""Threshold searches ("everything at least this similar") and `asen scan`, on the demo catalogue
indexed by `asen index build` with a checkpoint that has precision curves: results equal a brute-force
filter of every item's score; the cap, `truncated`, min_precision and the 422s behave; the scan's CSV
equals what `/search` answers, and its report opens in a real browser showing every match."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi.testclient import TestClient

from asen_search.index import FaissCatalogue
from asen_search.service.cli.main import main
from tests.helpers.browser import Console

if TYPE_CHECKING:
    from playwright.sync_api import Browser

DESIGNS = ("images/test/00005.jpg", "images/test/00012.jpg", "images/test/00031.jpg")


def _all_scores(
    client: TestClient, weights: dict[str, tuple[np.ndarray, float]]
) -> tuple[list[str], np.ndarray, list]:
    ids, vectors, metas = [], [], []
    for chunk_ids, chunk_vectors, chunk_metas in client.app.state.service_state.catalogue.iter_items(1000):
        ids += chunk_ids
        vectors.append(chunk_vectors)
        metas += chunk_metas
    stacked = np.concatenate(vectors)
    names = client.app.state.service_state.encoder.attribute_names
    total = sum(
        w * (stacked[:, names.index(a)].astype(np.float64) @ q.astype(np.float64))
        for a, (q, w) in weights.items()
    )
    return ids, np.asarray(total), metas


def _between(scores: np.ndarray, rank: int) -> float:
    """A threshold between the scores ranked `rank` and `rank + 1` (no item sits on it)."""
    ordered = np.sort(scores)[::-1]
    return float((ordered[rank - 1] + ordered[rank]) / 2)


def test_min_score_returns_every_item_at_or_above_it_best_first(tagging_client: TestClient) -> None:
    catalogue = tagging_client.app.state.service_state.catalogue
    query = catalogue.vector("test-00004", "colour")
    ids, scores, metas = _all_scores(tagging_client, {"colour": (query, 1.0)})
    scores[ids.index("test-00004")] = -np.inf  # a query by item never returns it
    threshold = _between(scores, 37)
    expected = [ids[i] for i in np.argsort(-scores, kind="stable") if scores[i] >= threshold]
    answer = tagging_client.post(
        "/search",
        data={
            "attribute": "colour",
            "item_id": "test-00004",
            "min_score": str(threshold),
            "max_results": "500",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [h["id"] for h in body["results"]] == expected and len(expected) == 37
    assert body["truncated"] is False and body["threshold"]["min_score"] == threshold
    capped = tagging_client.post(
        "/search",
        data={
            "attribute": "colour",
            "item_id": "test-00004",
            "min_score": str(threshold),
            "max_results": "10",
        },
    ).json()
    assert [h["id"] for h in capped["results"]] == expected[:10] and capped["truncated"] is True
    exact_cap = tagging_client.post(
        "/search",
        data={
            "attribute": "colour",
            "item_id": "test-00004",
            "min_score": str(threshold),
            "max_results": "37",
        },
    ).json()
    assert len(exact_cap["results"]) == 37 and exact_cap["truncated"] is False
    wanted = {"predicted.pattern": metas[0]["predicted.pattern"]}
    filtered = tagging_client.post(
        "/search",
        data={
            "attribute": "colour",
            "item_id": "test-00004",
            "min_score": str(threshold),
            "filters": json.dumps(wanted),
        },
    ).json()
    assert [h["id"] for h in filtered["results"]] == [
        i for i in expected if metas[ids.index(i)]["predicted.pattern"] == wanted["predicted.pattern"]
    ]


def test_a_composed_query_takes_a_threshold_too(tagging_client: TestClient) -> None:
    catalogue = tagging_client.app.state.service_state.catalogue
    parts = [
        {"attribute": "neckline", "item_id": "test-00002"},
        {"attribute": "colour", "item_id": "test-00002", "weight": -0.5},
    ]
    ids, scores, _ = _all_scores(
        tagging_client,
        {
            "neckline": (catalogue.vector("test-00002", "neckline"), 1.0),
            "colour": (catalogue.vector("test-00002", "colour"), -0.5),
        },
    )
    scores[ids.index("test-00002")] = -np.inf
    threshold = _between(scores, 80)  # more than the first fetch of 64: the search grows
    answer = tagging_client.post(
        "/search", data={"query": json.dumps(parts), "min_score": str(threshold), "max_results": "1000"}
    ).json()
    assert [h["id"] for h in answer["results"]] == [ids[i] for i in np.argsort(-scores, kind="stable")[:80]]
    assert answer["results"][-1]["score"] >= threshold and answer["truncated"] is False
    wide = tagging_client.post("/search", data={"query": json.dumps(parts), "min_score": "-1.4"})
    assert wide.status_code == 200, "a composed score may lie in [-sum |w|, sum |w|]"
    out = tagging_client.post("/search", data={"query": json.dumps(parts), "min_score": "1.6"}).json()
    assert (
        out["results"] == []
        and "above every score this query can give (1.5)" in out["threshold"]["unreachable"]
    )


def test_min_precision_goes_through_the_attribute_curve(tagging_client: TestClient) -> None:
    thresholds = tagging_client.app.state.service_state.encoder.thresholds
    listed = {
        a["name"]: a["precision_scores"] for a in tagging_client.get("/attributes").json()["attributes"]
    }
    assert listed == {name: thresholds.levels(name) for name in listed}
    curve = thresholds.curves["neckline"]
    reachable = float(curve.precision[curve.support >= 50][0])  # the highest trusted threshold's precision
    answer = tagging_client.post(
        "/search", data={"attribute": "neckline", "item_id": "test-00001", "min_precision": str(reachable)}
    )
    assert answer.status_code == 200, answer.text
    used = answer.json()["threshold"]
    assert (
        used["min_score"] == pytest.approx(curve.score_for(reachable)) and used["min_precision"] == reachable
    )
    assert all(
        h["score"] >= used["min_score"]
        and h["precision"] == pytest.approx(curve.precision_at(h["score"]), abs=1e-4)
        for h in answer.json()["results"]
    )


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"min_score": "16.5"}, "min_score_out_of_range"),
        ({"min_score": "-17"}, "min_score_out_of_range"),
        ({"min_score": "0.5", "top_k": "5"}, "threshold_with_top_k"),
        ({"min_score": "0.5", "min_precision": "0.9"}, "conflicting_threshold"),
        ({"min_score": "0.5", "max_results": "0"}, "max_results_out_of_range"),
        ({"min_score": "0.5", "max_results": "100000"}, "max_results_out_of_range"),
        ({"max_results": "10"}, "max_results_without_threshold"),
        ({"min_score": "0.5", "group_by": "split"}, "threshold_with_group_by"),
        ({"min_precision": "1.5"}, "min_precision_out_of_range"),
        ({"min_precision": "0.0"}, "min_precision_out_of_range"),
    ],
)
def test_threshold_conflicts_and_ranges_are_422(tagging_client: TestClient, fields: dict, code: str) -> None:
    answer = tagging_client.post("/search", data={"attribute": "colour", "item_id": "test-00001", **fields})
    assert answer.status_code == 422 and answer.json()["error"] == code, answer.text


def test_a_threshold_beyond_every_score_is_an_empty_answer_below_every_score_all(
    tagging_client: TestClient,
) -> None:
    """min_score above what the query's scores can reach (1 for one attribute) asks a valid question
    whose answer is empty; below it, every item passes."""
    query = {"attribute": "colour", "item_id": "test-00001"}
    above = tagging_client.post("/search", json={**query, "min_score": 1.5}).json()
    assert (
        above["results"] == []
        and above["total"] == 0
        and "nothing passes" in above["threshold"]["unreachable"]
    )
    below = tagging_client.post("/search", json={**query, "min_score": -3, "max_results": 1000}).json()
    assert (
        below["total"] == len(tagging_client.app.state.service_state.catalogue) - 1
        and below["threshold"]["min_score"] == -1
    )


def test_min_precision_needs_curves_and_one_attribute(client: TestClient, tagging_client: TestClient) -> None:
    none = client.post(
        "/search", data={"attribute": "colour", "item_id": "test-00001", "min_precision": "0.9"}
    )
    assert (
        none.status_code == 422
        and none.json()["error"] == "no_thresholds"
        and "asen eval" in none.json()["detail"]
    )
    composed = tagging_client.post(
        "/search",
        data={
            "min_precision": "0.9",
            "query": json.dumps([{"attribute": "colour", "item_id": "test-00001"}]),
        },
    )
    assert composed.status_code == 422 and composed.json()["error"] == "precision_needs_one_attribute"
    thresholds = tagging_client.app.state.service_state.encoder.thresholds
    unreachable = next(
        (n for n, c in thresholds.curves.items() if c.precision[c.support >= 50][0] < 1.0), None
    )
    if unreachable is not None:
        answer = tagging_client.post(
            "/search", data={"attribute": unreachable, "item_id": "test-00001", "min_precision": "1.0"}
        )
        # a valid question whose answer is empty: no score reaches that precision, so nothing passes
        assert answer.status_code == 200 and answer.json()["results"] == [] and answer.json()["total"] == 0
        assert "no score reaches precision 1" in answer.json()["threshold"]["unreachable"]


@pytest.mark.parametrize("scan", [True, False])
def test_search_range_on_approximate_indexes_finds_the_exact_set(
    tagged_index: Path, scan: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HNSW by a scan of its stored vectors, or (beyond RANGE_SCAN_MAX) growing top-k searches: the
    same items as exact on this catalogue."""
    if not scan:
        monkeypatch.setattr("asen_search.index.attribute_index.RANGE_SCAN_MAX", 0)
    flat = FaissCatalogue.load(tagged_index)
    ids, vectors, metas = [], [], []
    for chunk in flat.iter_items():
        ids += chunk[0]
        vectors.append(chunk[1])
        metas += chunk[2]
    hnsw = FaissCatalogue.create(flat.attributes, flat.dim, flat.fingerprint, "HNSW16")
    hnsw.add(ids, np.concatenate(vectors), metas)
    query = flat.vector(ids[3], "pocket")
    scores = np.concatenate(vectors)[:, flat.attributes.index("pocket")] @ query
    threshold = _between(scores, 150)
    exact, _ = flat.search_range(query, "pocket", threshold, 1000)
    found, truncated = hnsw.search_range(query, "pocket", threshold, 1000)
    assert [h.id for h in found] == [h.id for h in exact] and len(exact) == 150 and not truncated


def _scan(args: list[str]) -> int:
    return main(["scan", *args])


def test_scan_matches_equal_search_with_min_score_and_the_run_resumes(
    tmp_path: Path,
    tagging_checkpoint: Path,
    tagged_index: Path,
    demo_dataset: Path,
    tagging_client: TestClient,
) -> None:
    designs = tmp_path / "designs"
    designs.mkdir()
    for n, name in enumerate(DESIGNS):
        shutil.copy(demo_dataset / name, designs / f"design{n}.jpg")
    (designs / "broken.jpg").write_text("not a picture")
    out = tmp_path / "report"

    def scan_args(min_score: str) -> list[str]:
        return [
            "--checkpoint",
            str(tagging_checkpoint),
            "--index",
            str(tagged_index),
            "--designs",
            str(designs),
            "--attribute",
            "pocket",
            "--min-score",
            min_score,
            "--max-results",
            "40",
            "--out",
            str(out),
            "--runtime",
            "torch",
        ]

    args = scan_args("0.55")
    assert _scan(args) == 0
    rows = list(csv.DictReader((out / "matches.csv").open()))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unreadable"][0]["design"] == "broken" and summary["designs"] == 4
    for n in range(len(DESIGNS)):
        answer = tagging_client.post(
            "/search",
            data={"attribute": "pocket", "min_score": "0.55", "max_results": "40"},
            files={"image": ("d.jpg", (designs / f"design{n}.jpg").read_bytes(), "image/jpeg")},
        )
        expected = [(h["id"], h["score"], h["precision"]) for h in answer.json()["results"]]
        mine = [
            (r["item_id"], float(r["score"]), float(r["estimated_precision"]))
            for r in rows
            if r["design"] == f"design{n}"
        ]
        assert [i for i, _, _ in mine] == [i for i, _, _ in expected] and expected, n
        assert [s for _, s, _ in mine] == pytest.approx([s for _, s, _ in expected], abs=1e-4)
        assert [p for _, _, p in mine] == pytest.approx([p for _, _, p in expected], abs=1e-3)
        assert (f"design{n}" in summary["truncated"]) == answer.json()["truncated"]
    before = (out / "matches.csv").read_text()
    (out / ".scan" / "design-000001.json").unlink()  # as if interrupted before the second design finished
    assert _scan(args) == 0
    assert (out / "matches.csv").read_text() == before
    changed = scan_args("0.6")
    with pytest.raises(ValueError, match="different min_score"):
        from asen_search.service.jobs.scan import ScanConfig, scan

        scan(
            ScanConfig(
                tagging_checkpoint,
                tagged_index,
                designs,
                "pocket",
                out,
                min_score=0.6,
                max_results=40,
                progress=False,
                runtime="torch",
            )
        )
    assert _scan([*changed, "--restart"]) == 0
    assert all(float(r["score"]) >= 0.6 for r in csv.DictReader((out / "matches.csv").open()))


def test_scan_refuses_bad_thresholds_and_attributes(
    tmp_path: Path,
    tagging_checkpoint: Path,
    tiny_checkpoint: Path,
    tagged_index: Path,
    built_index: Path,
    demo_dataset: Path,
) -> None:
    from asen_search.model.encoder import UnknownAttribute
    from asen_search.service.jobs.scan import ScanConfig, scan

    designs = tmp_path / "list.txt"
    designs.write_text(str(demo_dataset / DESIGNS[0]) + "\n")
    base = dict(
        checkpoint=tagging_checkpoint, index=tagged_index, designs=designs, out=tmp_path / "o", progress=False
    )
    with pytest.raises(UnknownAttribute):
        scan(ScanConfig(attribute="fabric", min_score=0.5, **base))
    with pytest.raises(ValueError, match="exactly one of"):
        scan(ScanConfig(attribute="pocket", **base))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        scan(ScanConfig(attribute="pocket", min_score=1.5, **base))
    with pytest.raises(ValueError, match="no precision curves"):
        scan(
            ScanConfig(
                attribute="pocket",
                min_precision=0.9,
                **{**base, "checkpoint": tiny_checkpoint, "index": built_index},
            )
        )


def test_the_scan_report_opens_in_a_browser_and_shows_every_match(
    tmp_path: Path, tagging_checkpoint: Path, tagged_index: Path, demo_dataset: Path, browser: Browser
) -> None:
    designs = tmp_path / "designs.txt"
    designs.write_text("\n".join(str(demo_dataset / name) for name in DESIGNS) + "\nmissing.jpg\n")
    out = tmp_path / "report"
    assert (
        _scan(
            [
                "--checkpoint",
                str(tagging_checkpoint),
                "--index",
                str(tagged_index),
                "--designs",
                str(designs),
                "--allow-any-url",  # the list names the dataset's images, outside its own folder
                "--attribute",
                "neckline",
                "--min-score",
                "0.7",
                "--max-results",
                "15",
                "--out",
                str(out),
                "--runtime",
                "torch",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((out / "matches.csv").open()))
    assert rows
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console = Console(page)
    page.goto((out / "report.html").as_uri())
    page.wait_for_load_state("load")
    shown = page.locator("figure.match").evaluate_all("els => els.map(e => e.dataset.id)")
    assert shown == [r["item_id"] for r in rows], "every match, in the CSV's order"
    page.evaluate(
        "() => Promise.all([...document.images].map(i => { i.loading = 'eager'; return i.decode(); }))"
    )
    sizes = page.locator("img").evaluate_all("els => els.map(e => e.naturalWidth)")
    assert len(sizes) == 2 * (len(DESIGNS) + len(rows)) and min(sizes) > 0, (
        "both pictures of every design and match"
    )
    assert page.locator("section.design .warn").filter(has_text="unreadable").count() == 1  # missing.jpg
    assert console.errors == []
    page.close()


@pytest.mark.slow  # Milvus Lite, a copy of the catalogue and two scans: about half a minute
def test_scan_reads_a_milvus_catalogue_the_same_way(
    tmp_path: Path, tagging_checkpoint: Path, tagged_index: Path, demo_dataset: Path
) -> None:
    """The same designs against the same items copied into Milvus Lite: the same matches."""
    location = f"milvus-lite:{tmp_path}/c.db#scan"
    assert main(["index", "copy", "--from", str(tagged_index), "--to", location]) == 0
    designs = tmp_path / "designs"
    designs.mkdir()
    for n, name in enumerate(DESIGNS[:2]):
        shutil.copy(demo_dataset / name, designs / f"design{n}.jpg")
    outputs = []
    for index, out in ((str(tagged_index), tmp_path / "faiss"), (location, tmp_path / "milvus")):
        assert (
            _scan(
                [
                    "--checkpoint",
                    str(tagging_checkpoint),
                    "--index",
                    index,
                    "--designs",
                    str(designs),
                    "--attribute",
                    "colour",
                    "--min-score",
                    "0.6",
                    "--max-results",
                    "80",
                    "--out",
                    str(out),
                    "--runtime",
                    "torch",
                ]
            )
            == 0
        )
        rows = list(csv.DictReader((out / "matches.csv").open()))
        outputs.append([(r["design"], r["item_id"], round(float(r["score"]), 4)) for r in rows])
        assert len(list((out / "report_files").glob("*-why.jpg"))) == 2 + len(rows), (
            "every match has its pictures"
        )
    assert outputs[0] == outputs[1] and outputs[0]

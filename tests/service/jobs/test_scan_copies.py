"""`asen scan --copies` on the demo catalogue indexed by `asen index build` (FAISS) and on a Milvus
Lite copy of it, with a copy calibration made by `calibrate_copies` beside a copy of the tiny
checkpoint: matches.csv equals a brute-force copy score over the catalogue's stored vectors
(`Catalogue.vector`) for every design (every item passing, none else, every attribute's score, the
attributes below their calibrated line as `modified`); an interrupted scan resumes to the same
outputs; an attribute scan's work is never resumed as a copies scan (nor the other way round);
refused flag combinations exit 2 with their message; without a calibration nothing is judged; the
report opens from disk in headless Chromium showing every match's breakdown, copied and changed
details, and overlays that load."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from asen_search.index import Catalogue
from asen_search.index.transfer import open_catalogue
from asen_search.model.copy_calibration import CopyCalibration, calibrate_copies, save_copy_calibration
from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.service.cli.main import main
from tests.helpers.browser import Console

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# Three designs outside the catalogue (the train split) and one in it (the test split: an exact copy).
DESIGNS = (
    "images/train/00003.jpg",
    "images/train/00017.jpg",
    "images/train/00042.jpg",
    "images/test/00012.jpg",
)


@dataclass(frozen=True)
class Setup:
    checkpoint: Path  # a copy of the tiny checkpoint with its copy calibration beside it
    calibration: CopyCalibration
    encoder: Encoder
    designs: Path  # the designs' folder (and one unreadable file)
    vectors: dict[str, np.ndarray]  # design id -> its vectors [A, D]
    min_score: float  # a copy score that 24 items pass, over all the designs


@dataclass(frozen=True)
class Expected:
    score: float
    scores: dict[str, float]
    modified: set[str]


def _stored_vectors(catalogue: Catalogue) -> tuple[list[str], np.ndarray]:
    """Every item's stored vectors, one `Catalogue.vector` at a time: `[n, A, D]`."""
    ids = catalogue.ids()
    return ids, np.array(
        [[catalogue.vector(i, a) for a in catalogue.attributes] for i in ids], dtype=np.float64
    )


def _brute_force(
    ids: list[str],
    stored: np.ndarray,
    names: list[str],
    design: np.ndarray,
    min_score: float,
    kept: int,
    lines: dict[str, float],
) -> dict[str, Expected]:
    """Every item whose copy score (mean of its best `kept` attribute scores) reaches `min_score`."""
    scores = np.einsum("nad,ad->na", stored, design.astype(np.float64))
    copy = np.sort(scores, axis=1)[:, ::-1][:, :kept].mean(axis=1)
    return {
        ids[j]: Expected(
            float(copy[j]),
            dict(zip(names, scores[j].tolist())),
            {a for k, a in enumerate(names) if a in lines and scores[j, k] < lines[a]},
        )
        for j in np.flatnonzero(copy >= min_score)
    }


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "matches.csv").open()))


def _scan(setup: Setup, out: Path, *extra: str, index: str | Path, checkpoint: Path | None = None) -> int:
    return main(
        [
            "scan",
            "--copies",
            "--checkpoint",
            str(checkpoint or setup.checkpoint),
            "--index",
            str(index),
            "--designs",
            str(setup.designs),
            "--max-results",
            "200",
            "--out",
            str(out),
            "--runtime",
            "torch",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, built_index: Path, demo_dataset: Path
) -> Setup:
    root = tmp_path_factory.mktemp("copies")
    checkpoint = Path(shutil.copy(tiny_checkpoint, root / "tiny.pt"))  # the fixture's is session-wide
    plain = Encoder.from_checkpoint(checkpoint, "cpu", runtime="torch")
    calibration = calibrate_copies(plain, load_dataset(demo_dataset), max_images=120, progress=False)
    save_copy_calibration(checkpoint, calibration)
    encoder = Encoder.from_checkpoint(checkpoint, "cpu", runtime="torch")
    assert encoder.copy_calibration is not None and encoder.copy_calibration.modified == 2
    designs = root / "designs"
    designs.mkdir()
    vectors = {}
    for n, name in enumerate(DESIGNS):
        shutil.copy(demo_dataset / name, designs / f"design{n}.jpg")
        vectors[f"design{n}"] = encoder.encode([Image.open(demo_dataset / name).convert("RGB")])[0]
    (designs / "broken.jpg").write_text("not a picture")
    with open_catalogue(built_index) as catalogue:
        ids, stored = _stored_vectors(catalogue)
    ranked = sorted(
        (
            e.score
            for v in vectors.values()
            for e in _brute_force(ids, stored, encoder.attribute_names, v, -1.0, 5, {}).values()
        ),
        reverse=True,
    )
    # few matches (each draws up to 7 attention maps), at least one copy with a changed attribute
    return Setup(checkpoint, calibration, encoder, designs, vectors, (ranked[23] + ranked[24]) / 2)


@pytest.fixture(scope="module")
def scanned(setup: Setup, built_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The copies scan of the FAISS catalogue at `setup.min_score` (read-only: copy it to change it)."""
    out = tmp_path_factory.mktemp("scanned") / "report"
    assert _scan(setup, out, "--min-score", f"{setup.min_score:.9f}", index=built_index) == 0
    return out


def _check_against_brute_force(setup: Setup, out: Path, catalogue: Catalogue, min_score: float) -> None:
    """Every design's rows equal the brute force over `catalogue`'s stored vectors, best first."""
    names = setup.encoder.attribute_names
    rows = _rows(out)
    assert list(rows[0]) == ["design", "item_id", "score", *names, "modified"]
    ids, stored = _stored_vectors(catalogue)
    lines = setup.calibration.changed_below
    assert set(lines) == set(names), "the calibration judges every attribute"
    judged = set()
    for design, vector in setup.vectors.items():
        expected = _brute_force(ids, stored, names, vector, min_score, 5, lines)
        assert all(abs(e.score - min_score) > 1e-5 for e in expected.values()), (
            "no item sits on the threshold"
        )
        mine = [r for r in rows if r["design"] == design]
        assert {r["item_id"] for r in mine} == set(expected), design
        assert [float(r["score"]) for r in mine] == sorted((float(r["score"]) for r in mine), reverse=True)
        for r in mine:
            e = expected[r["item_id"]]
            assert float(r["score"]) == pytest.approx(e.score, abs=1e-5)
            assert [float(r[a]) for a in names] == pytest.approx([e.scores[a] for a in names], abs=1e-5)
            assert set(filter(None, r["modified"].split(";"))) == e.modified, (design, r["item_id"])
            judged |= {bool(e.modified)}
    assert not any(r["design"] == "broken" for r in rows)
    assert judged == {True, False}, "some matches copy every attribute, some changed one or more"


def test_copies_csv_equals_a_brute_force_copy_score_and_a_resume_gives_the_same(
    setup: Setup, scanned: Path, built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_catalogue(built_index) as catalogue:
        _check_against_brute_force(setup, scanned, catalogue, setup.min_score)
    rows = _rows(scanned)
    assert len(rows) == 24
    assert float(rows[[r["design"] for r in rows].index("design3")]["score"]) > 0.9999, (
        "an exact copy comes first"
    )
    summary = json.loads((scanned / "summary.json").read_text())
    assert summary["kind"] == "copies" and summary["calibrated"] is True and summary["modified"] == 2
    assert (summary["designs"], summary["matches"]) == (5, len(rows))
    assert summary["threshold"] == {"min_score": pytest.approx(setup.min_score), "max_false_match_rate": None}
    assert summary["unreadable"][0]["design"] == "broken" and summary["truncated"] == []

    out = Path(shutil.copytree(scanned, tmp_path / "report"))
    (out / ".scan" / "design-000001.json").unlink()  # as if interrupted before the second design finished
    capsys.readouterr()
    assert _scan(setup, out, "--min-score", f"{setup.min_score:.9f}", index=built_index) == 0
    assert "(1 now)" in capsys.readouterr().out, "the finished designs were kept, not scanned again"
    for name in ("matches.csv", "report.html"):
        assert (out / name).read_text() == (scanned / name).read_text(), name
    assert sorted(p.name for p in (out / "report_files").iterdir()) == sorted(
        p.name for p in (scanned / "report_files").iterdir()
    )


def test_the_false_match_rate_threshold_comes_from_the_calibration(
    setup: Setup, built_index: Path, tmp_path: Path
) -> None:
    rate = 0.01
    threshold = setup.calibration.score_for_rate(rate)
    out = tmp_path / "report"
    assert _scan(setup, out, "--max-false-match-rate", str(rate), index=built_index) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"] == {"min_score": pytest.approx(threshold), "max_false_match_rate": rate}
    with open_catalogue(built_index) as catalogue:
        ids, stored = _stored_vectors(catalogue)
    names = setup.encoder.attribute_names
    for design, vector in setup.vectors.items():
        expected = _brute_force(ids, stored, names, vector, threshold, 5, setup.calibration.changed_below)
        assert {r["item_id"] for r in _rows(out) if r["design"] == design} == set(expected)
    assert _rows(out), "the exact copy passes"


def test_modified_changes_the_copy_score(setup: Setup, built_index: Path, tmp_path: Path) -> None:
    """--modified 0: the mean of every attribute's score (the calibration's lines still judge)."""
    out = tmp_path / "report"
    assert (
        _scan(setup, out, "--min-score", "0.5", "--modified", "0", "--max-results", "2", index=built_index)
        == 0
    )
    names = setup.encoder.attribute_names
    rows = _rows(out)
    assert rows and json.loads((out / "summary.json").read_text())["modified"] == 0
    for r in rows:
        assert float(r["score"]) == pytest.approx(np.mean([float(r[a]) for a in names]), abs=1e-5)


def test_an_attribute_scans_work_is_never_resumed_as_a_copies_scan(
    setup: Setup, built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    attribute_scan = [
        "scan",
        "--checkpoint",
        str(setup.checkpoint),
        "--index",
        str(built_index),
        "--designs",
        str(setup.designs),
        "--attribute",
        "pocket",
        "--min-score",
        "0.99",
        "--out",
        str(out),
        "--runtime",
        "torch",
    ]
    assert main(attribute_scan) == 0
    before = (out / "matches.csv").read_text()
    capsys.readouterr()
    assert _scan(setup, out, "--min-score", "0.98", index=built_index) == 2
    assert (
        "holds the work of an attribute scan (--attribute pocket), which a copies scan cannot resume"
        in capsys.readouterr().err
    )
    assert (out / "matches.csv").read_text() == before, "nothing of the attribute scan was touched"
    assert _scan(setup, out, "--min-score", "0.98", "--restart", index=built_index) == 0
    assert "modified" in _rows(out)[0]
    capsys.readouterr()
    assert main(attribute_scan) == 2
    assert (
        "holds the work of a copies scan (--copies), which an attribute scan cannot resume"
        in capsys.readouterr().err
    )


def test_without_a_calibration_nothing_is_judged(
    setup: Setup, tiny_checkpoint: Path, built_index: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    assert (
        _scan(
            setup,
            out,
            "--min-score",
            f"{setup.min_score:.9f}",
            "--max-results",
            "3",
            index=built_index,
            checkpoint=tiny_checkpoint,
        )
        == 0
    )
    rows = _rows(out)
    assert [r["modified"] for r in rows] == [""] * len(rows) and len(rows) >= 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibrated"] is False and summary["modified"] == 2 and summary["changed_below"] is None
    page = (out / "report.html").read_text()
    assert "the attributes could not be judged copied or changed" in page
    assert "data-status='copied'" not in page and "data-status='changed'" not in page
    assert page.count("data-status='not judged'") == len(rows) * len(setup.encoder.attribute_names)
    # the overlays of the 5 attributes the copy score counts, over each match with a picture
    assert page.count("class='pair'") == 5 * len(rows)


REFUSED = [
    (
        ["--attribute", "pocket", "--min-score", "0.5"],
        "--copies scores every attribute at once: drop --attribute",
    ),
    (["--min-precision", "0.9"], "--min-precision is a per-attribute threshold"),
    ([], "with --copies give exactly one of --min-score or --max-false-match-rate"),
    (["--min-score", "1.5"], "--min-score must be in [-1, 1], got 1.5"),
    (["--min-score", "nan"], "--min-score must be in [-1, 1], got nan"),
    (["--min-score", "0.5", "--modified", "7"], "--modified must be in 0..6"),
    (["--min-score", "0.5", "--modified", "-1"], "--modified must be in 0..6"),
    (["--max-false-match-rate", "1e-6"], "--max-false-match-rate: a false-match rate of 1e-06 is below what"),
    (["--max-false-match-rate", "2"], "--max-false-match-rate: a false-match rate is in [0, 1], got 2"),
    (["--max-false-match-rate", "0.3", "--modified", "1"], "the copy calibration was made for --modified 2"),
]


@pytest.mark.parametrize(("flags", "message"), REFUSED, ids=[m.split(":")[0][:40] for _, m in REFUSED])
def test_refused_copies_flags_exit_2_with_their_message(
    setup: Setup,
    built_index: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    assert _scan(setup, tmp_path / "out", *flags, index=built_index) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "refused before any work"


def test_refused_flags_without_copies_and_an_uncalibrated_rate(
    setup: Setup, tiny_checkpoint: Path, built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "scan",
        "--checkpoint",
        str(setup.checkpoint),
        "--index",
        str(built_index),
        "--designs",
        str(setup.designs),
        "--out",
        str(tmp_path / "out"),
        "--runtime",
        "torch",
    ]
    cases = [
        (
            ["--attribute", "pocket", "--max-false-match-rate", "0.1"],
            "--max-false-match-rate is for copy scans: add --copies",
        ),
        (["--attribute", "pocket", "--min-score", "0.5", "--modified", "1"], "--modified is for copy scans"),
        (["--attribute", "pocket", "--min-score", "0.5", "--verify"], "--verify is for copy scans"),
        (
            ["--min-score", "0.5"],
            "give --attribute (the attribute the designs are protected in), or --copies",
        ),
        (["--attribute", "pocket"], "give exactly one of --min-score or --min-precision"),
    ]
    for flags, message in cases:
        assert main([*base, *flags]) == 2, flags
        assert message in capsys.readouterr().err, flags
    assert (
        _scan(
            setup,
            tmp_path / "out",
            "--max-false-match-rate",
            "0.1",
            index=built_index,
            checkpoint=tiny_checkpoint,
        )
        == 2
    )
    assert (
        "this checkpoint has no copy calibration: run `asen calibrate-copies --checkpoint CKPT --data DATASET`"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as exited:  # argparse: one threshold at most
        main([*base, "--copies", "--min-score", "0.5", "--max-false-match-rate", "0.1"])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_copies_report_opens_from_disk_and_shows_what_each_match_copies(
    setup: Setup, scanned: Path, browser: Browser
) -> None:
    rows = _rows(scanned)
    names = setup.encoder.attribute_names
    lines = setup.calibration.changed_below
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console = Console(page)
    page.goto((scanned / "report.html").as_uri())
    page.wait_for_load_state("load")
    matches = page.locator("figure.match")
    assert matches.evaluate_all("els => els.map(e => e.dataset.id)") == [r["item_id"] for r in rows], (
        "every match, in the CSV's order"
    )
    page.evaluate(
        "() => Promise.all([...document.images].map(i => { i.loading = 'eager'; return i.decode(); }))"
    )
    for n, row in enumerate(rows):
        figure = matches.nth(n)
        shown = figure.locator("tr.attr").evaluate_all(
            "els => els.map(e => [e.dataset.attribute, e.dataset.status, e.cells[1].textContent])"
        )
        expected_status = {a: "copied" if float(row[a]) >= lines[a] else "changed" for a in names}
        assert [(a, s) for a, s, _ in shown] == [(a, expected_status[a]) for a in names], row["item_id"]
        assert [float(v) for _, _, v in shown] == pytest.approx([float(row[a]) for a in names], abs=1e-4)
        copied = [a for a in names if expected_status[a] == "copied"]
        changed = [a for a in names if expected_status[a] == "changed"]
        assert figure.locator(".pair").evaluate_all("els => els.map(e => e.dataset.attribute)") == copied, (
            "an overlay pair (design, match) for each copied attribute, none for a changed one"
        )
        if changed:
            assert figure.locator(".changed-list").inner_text().startswith("changed: ")
            assert all(a in figure.locator(".changed-list").inner_text() for a in changed)
        else:
            assert figure.locator(".changed-list").inner_text() == "changed: none"
        assert (
            figure.locator("figcaption")
            .inner_text()
            .endswith(f"{len(copied)} of {len(names)} attributes copied, {len(changed)} changed")
        )
        sizes = figure.locator(".pair img").evaluate_all("els => els.map(e => e.naturalWidth)")
        assert len(sizes) == 2 * len(copied) and all(s > 0 for s in sizes), row["item_id"]
    statuses = page.locator("tr.attr").evaluate_all("els => els.map(e => e.dataset.status)")
    assert {"copied", "changed"} <= set(statuses)
    sizes = page.locator("img").evaluate_all("els => els.map(e => e.naturalWidth)")
    assert min(sizes) > 0, "every picture loads from report_files/"
    assert page.locator("section.design .warn").filter(has_text="unreadable").count() == 1  # broken.jpg
    assert console.errors == []
    page.close()


@pytest.mark.slow  # Milvus Lite: a copy of the catalogue and a scan
def test_a_copies_scan_of_a_milvus_catalogue_equals_the_brute_force(
    setup: Setup, built_index: Path, scanned: Path, tmp_path: Path
) -> None:
    location = f"milvus-lite:{tmp_path}/c.db#copies"
    assert main(["index", "copy", "--from", str(built_index), "--to", location]) == 0
    out = tmp_path / "milvus"
    assert _scan(setup, out, "--min-score", f"{setup.min_score:.9f}", index=location) == 0
    with open_catalogue(location) as catalogue:
        _check_against_brute_force(setup, out, catalogue, setup.min_score)
    assert [(r["design"], r["item_id"]) for r in _rows(out)] == [
        (r["design"], r["item_id"]) for r in _rows(scanned)
    ]


def _posted(setup: Setup, built_index: Path, tmp_path: Path, **fields: str) -> dict[str, dict[str, Any]]:
    """Each design's image posted to `POST /copies` (a served copy of the catalogue) with the scan's
    threshold and `fields`: the answers, by design."""
    from fastapi.testclient import TestClient

    from asen_search.service.api.app import create_app
    from asen_search.service.api.settings import Settings

    index = Path(shutil.copytree(built_index, tmp_path / "index"))
    answers = {}
    with TestClient(
        create_app(Settings(checkpoint=setup.checkpoint, index=index, runtime="torch"))
    ) as client:
        for design in setup.vectors:
            with (setup.designs / f"{design}.jpg").open("rb") as fh:
                answer = client.post(
                    "/copies",
                    files={"image": ("d.jpg", fh, "image/jpeg")},
                    data={"min_score": f"{setup.min_score:.9f}", "max_results": "200", **fields},
                )
            assert answer.status_code == 200, answer.text
            answers[design] = answer.json()
    return answers


def test_post_copies_answers_what_the_scan_wrote(
    setup: Setup, scanned: Path, built_index: Path, tmp_path: Path
) -> None:
    """`POST /copies` and `asen scan --copies` agree: for every design, the same image posted with the
    scan's threshold returns the scan's rows (ids in order, copy scores, every attribute's score and
    the attributes judged modified)."""
    rows = _rows(scanned)
    names = setup.encoder.attribute_names
    compared = 0
    for design, body in _posted(setup, built_index, tmp_path).items():
        assert body["calibrated"] is True and body["modified_allowed"] == 2
        mine = [r for r in rows if r["design"] == design]
        assert [h["id"] for h in body["results"]] == [r["item_id"] for r in mine], design
        for hit, row in zip(body["results"], mine):
            assert hit["score"] == pytest.approx(float(row["score"]), abs=1e-5)
            assert [hit["scores"][a] for a in names] == pytest.approx(
                [float(row[a]) for a in names], abs=1e-5
            )
            assert hit["modified"] == list(filter(None, row["modified"].split(";")))
        compared += len(mine)
    assert compared == len(rows) > 0


def test_a_verified_scan_answers_as_post_copies_with_verify(
    setup: Setup, built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`asen scan --copies --verify` and `POST /copies` with `verify` agree: per design the same ids in
    the same (re-ranked) order, the same scores, copy scores and inliers; the verification moved some
    match, and the report says what each verified score is made of."""
    out = tmp_path / "verified"
    assert _scan(setup, out, "--min-score", f"{setup.min_score:.9f}", "--verify", index=built_index) == 0
    rows = _rows(out)
    assert rows and {"copy_score", "inliers"} <= set(rows[0])
    moved = False
    for design, body in _posted(setup, built_index, tmp_path, verify="true").items():
        assert body["verified"] is True
        mine = [r for r in rows if r["design"] == design]
        assert [h["id"] for h in body["results"]] == [r["item_id"] for r in mine], design
        for hit, row in zip(body["results"], mine):
            assert hit["score"] == pytest.approx(float(row["score"]), abs=1e-5)
            assert hit["copy_score"] == pytest.approx(float(row["copy_score"]), abs=1e-5)
            assert hit["inliers"] == (int(row["inliers"]) if row["inliers"] else None)
        copy_order = sorted(mine, key=lambda r: -float(r["copy_score"]))
        moved = moved or [r["item_id"] for r in copy_order] != [r["item_id"] for r in mine]
    assert moved, "verification re-ranked no design's matches"
    assert json.loads((out / "summary.json").read_text())["verified"] is True
    assert "matching points" in (out / "report.html").read_text()
    # its work is never resumed by a scan that does not verify (nor the other way round)
    capsys.readouterr()
    assert _scan(setup, out, "--min-score", f"{setup.min_score:.9f}", index=built_index) == 2
    assert "of a different verify" in capsys.readouterr().err

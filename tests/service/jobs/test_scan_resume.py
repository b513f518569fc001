"""A resumed `asen scan` answers for the catalogue as it is now: the work folder records the
catalogue's state (a digest of every item through the public interface) when a scan starts, and a
resume that finds the catalogue changed scans every design again. An interrupted scan is simulated
as in test_threshold.py (a finished design's record removed). Also: the report's pictures live in
`report_files/`, named by relative paths, so the documented outputs copied anywhere still show them."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asen_search.index.transfer import open_catalogue
from asen_search.model.encoder import Encoder
from asen_search.service.jobs.item_images import IMAGE_KEY
from asen_search.service.jobs.scan import ScanConfig, ScanReport, catalogue_state, scan

DESIGNS = (
    "images/train/00003.jpg",
    "images/train/00017.jpg",
    "images/train/00042.jpg",
)  # not in the catalogue
COPY_ID = "copy-of-design0"
OUTPUTS = ("matches.csv", "summary.json", "report.html", "report_files")  # what docs/protection.md names


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint: Path) -> Encoder:
    return Encoder.from_checkpoint(tiny_checkpoint, "cpu", runtime="torch")


@pytest.fixture
def setup(
    tmp_path: Path, tiny_checkpoint: Path, built_index: Path, demo_dataset: Path, encoder: Encoder
) -> ScanConfig:
    """Three designs, a writable copy of the catalogue, and a threshold that gives design 0 a few matches."""
    designs = tmp_path / "designs"
    designs.mkdir()
    for n, name in enumerate(DESIGNS):
        shutil.copy(demo_dataset / name, designs / f"design{n}.jpg")
    index = Path(shutil.copytree(built_index, tmp_path / "index"))
    attribute = encoder.attribute_names[0]
    catalogue = open_catalogue(index)
    try:
        query = encoder.encode([Image.open(designs / "design0.jpg").convert("RGB")], [0])[0, 0]
        hits, _ = catalogue.search_range(query, attribute, -1.0, 5)  # the best 5
    finally:
        catalogue.close()
    assert len(hits) == 5
    min_score = (hits[2].score + hits[3].score) / 2  # design 0: 3 matches
    return ScanConfig(
        tiny_checkpoint,
        index,
        designs,
        attribute,
        tmp_path / "report",
        min_score=float(min_score),
        max_results=4,
        progress=False,
        runtime="torch",
    )


def _run(cfg: ScanConfig, encoder: Encoder) -> ScanReport:
    return scan(cfg, encoder)


def _interrupt(cfg: ScanConfig) -> None:
    """As if the scan had stopped before its second design finished."""
    (cfg.out / ".scan" / "design-000001.json").unlink()


def _rows(out: Path) -> list[tuple[str, str]]:
    return [(r["design"], r["item_id"]) for r in csv.DictReader((out / "matches.csv").open())]


def _add_copy_of_design0(cfg: ScanConfig, encoder: Encoder) -> None:
    """An exact copy of design 0's image added through the catalogue API (logged, as a server would)."""
    path = cfg.designs / "design0.jpg"
    vectors = encoder.encode([Image.open(path).convert("RGB")])
    catalogue = open_catalogue(cfg.index, writer=True)
    try:
        catalogue.open_log()
        catalogue.add([COPY_ID], vectors, [{IMAGE_KEY: str(path)}])
    finally:
        catalogue.close()


def test_a_resume_after_an_item_was_added_finds_it(
    setup: ScanConfig, encoder: Encoder, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = setup
    first = _run(cfg, encoder)
    assert first.scanned_now == 3 and first.rescanned_because is None
    assert len([d for d, _ in _rows(cfg.out) if d == "design0"]) == 3
    _interrupt(cfg)
    before = json.loads((cfg.out / "summary.json").read_text())["catalogue"]
    _add_copy_of_design0(cfg, encoder)
    capsys.readouterr()
    resumed = _run(cfg, encoder)
    assert ("design0", COPY_ID) in _rows(cfg.out), "the item added since the interruption is a match"
    assert [i for d, i in _rows(cfg.out) if d == "design0"][0] == COPY_ID, "an exact copy comes first"
    n = before["items"]
    message = (
        f"the catalogue changed since the interrupted scan started ({n} items then, {n + 1} now): "
        "scanning all 3 designs again"
    )
    assert resumed.scanned_now == 3 and resumed.rescanned_because == message
    assert message in capsys.readouterr().err
    assert json.loads((cfg.out / "summary.json").read_text())["catalogue"]["items"] == n + 1
    fresh = _run(replace(cfg, out=cfg.out.parent / "fresh"), encoder)
    assert fresh.scanned_now == 3
    assert (cfg.out / "matches.csv").read_text() == (fresh.out / "matches.csv").read_text(), "as a fresh scan"


def test_a_resume_after_a_matched_item_was_deleted_drops_it(setup: ScanConfig, encoder: Encoder) -> None:
    cfg = setup
    _run(cfg, encoder)
    matched = [i for d, i in _rows(cfg.out) if d == "design0"]
    _interrupt(cfg)
    unchanged = _run(cfg, encoder)  # the same catalogue: resumed, not rescanned
    assert unchanged.scanned_now == 1 and unchanged.rescanned_because is None
    _interrupt(cfg)
    catalogue = open_catalogue(cfg.index, writer=True)
    try:
        catalogue.open_log()
        assert catalogue.remove([matched[0]]).removed == [matched[0]]
    finally:
        catalogue.close()
    resumed = _run(cfg, encoder)
    assert matched[0] not in {i for _, i in _rows(cfg.out)}, "a deleted item is no match"
    assert [i for d, i in _rows(cfg.out) if d == "design0"][:2] == matched[1:3]
    assert resumed.scanned_now == 3 and resumed.rescanned_because is not None


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.figures: dict[str, int] = {}
        self._figure: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "figure":
            self._figure = values.get("data-id")
            self.figures[self._figure or ""] = 0
        elif tag == "img":
            self.sources.append(values.get("src") or "")
            if self._figure is not None:
                self.figures[self._figure] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None


def test_the_report_copied_elsewhere_shows_every_picture_of_a_resumed_scan(
    setup: ScanConfig, encoder: Encoder, tmp_path: Path
) -> None:
    cfg = setup
    _run(cfg, encoder)
    _interrupt(cfg)
    _add_copy_of_design0(cfg, encoder)
    _run(cfg, encoder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in OUTPUTS:
        source = cfg.out / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, elsewhere / name)
    shutil.rmtree(cfg.out)  # nothing may still point at the original folder
    page = _Images()
    page.feed((elsewhere / "report.html").read_text())
    rows = _rows(elsewhere)
    assert len(page.sources) == 2 * (len(DESIGNS) + len(rows)), "both pictures of every design and match"
    for src in page.sources:
        assert (
            not Path(src).is_absolute() and ".." not in Path(src).parts and src.startswith("report_files/")
        ), src
        assert (elsewhere / src).is_file(), src
    assert page.figures.get(COPY_ID) == 2, "the item added since the interruption is shown with its pictures"
    assert {p.name for p in (elsewhere / "report_files").iterdir()} == {Path(s).name for s in page.sources}, (
        "report_files holds exactly the report's pictures"
    )


def test_the_catalogue_state_ignores_order_and_sees_every_change(built_index: Path, tmp_path: Path) -> None:
    index = Path(shutil.copytree(built_index, tmp_path / "index"))
    catalogue = open_catalogue(index, writer=True)
    try:
        catalogue.open_log()
        state = catalogue_state(catalogue)
        assert state["items"] == len(catalogue)
        ids, vectors, metadata = next(catalogue.iter_items(3))
        catalogue.upsert(ids[:1], vectors[:1], metadata[:1])  # moved to the end of the order: same state
        assert catalogue.ids()[-1] == ids[0] and catalogue_state(catalogue, batch_size=7) == state
        catalogue.upsert(ids[:1], vectors[:1], [{**metadata[0], "brand": "x"}])
        assert catalogue_state(catalogue) != state, "other metadata"
        catalogue.upsert(ids[:1], vectors[:1], metadata[:1])
        assert catalogue_state(catalogue) == state
        changed = vectors[:1].copy()
        changed[0, 0, 0] = np.nextafter(changed[0, 0, 0], np.float32(2))
        catalogue.upsert(ids[:1], changed, metadata[:1])
        assert catalogue_state(catalogue) != state, "a vector one ulp apart"
    finally:
        catalogue.close()

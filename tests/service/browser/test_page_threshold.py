"""The page's threshold mode in a real browser: Debian's headless Chromium driven by Playwright, against
`asen serve` on a real socket with the tagging checkpoint and the demo test split indexed with it.
Every list shown is checked against `POST /search` with the same `min_score` / `min_precision` and
`max_results`, and the count the page states against the answer's.

The tiny random model reaches no precision of even 0.3 on its validation split, so a precision slider
(0.5 to 0.99) would only ever be answered `precision_unreachable`. Beside a copy of the checkpoint lie
precision curves with the same scores and support whose precision rises steadily from 0.2 (lowest score)
to 0.98 (the highest score with enough pairs to be trusted, and above): the `<checkpoint>.thresholds.json`
that `asen eval` writes, which the service takes when it names the checkpoint's fingerprint. The copy has
the same fingerprint, so the index built with the tagging checkpoint is served as it is.

Without /usr/bin/chromium these tests FAIL (saying how to install it) rather than skip: CI installs it."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from asen_search.model.checkpoint import file_fingerprint, read_payload
from asen_search.model.thresholds import MIN_SUPPORT, Thresholds, sidecar_path
from tests.helpers.browser import (
    js_fixed,
    opened_page,
    result_ids,
    sent_searches,
    threshold_status,
    wait_status,
)
from tests.helpers.serving import served

pytestmark = (
    pytest.mark.slow
)  # the threshold mode in a real browser (about 40 s): CI runs it with the slow tests

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Request, Route

TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def calibrated_checkpoint(tagging_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(shutil.copy(tagging_checkpoint, tmp_path_factory.mktemp("calibrated") / "tagging.pt"))
    thresholds = Thresholds.from_json(read_payload(path)["extra"].get("thresholds"))
    assert thresholds is not None, "asen prototypes stored no precision curves in the tagging checkpoint"
    for curve in thresholds.curves.values():  # thresholds descend: from the first trusted one, precision too
        start = int(np.argmax(curve.support >= MIN_SUPPORT))
        curve.precision = np.r_[np.full(start, 0.98), np.linspace(0.98, 0.2, len(curve.thresholds) - start)]
    thresholds.fingerprint = file_fingerprint(path)
    sidecar_path(path).write_text(json.dumps(thresholds.to_json()))
    return path


@pytest.fixture(scope="module")
def server(
    calibrated_checkpoint: Path, tagged_index: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    index = Path(shutil.copytree(tagged_index, tmp_path_factory.mktemp("threshold-page") / "index"))
    with served(calibrated_checkpoint, index) as url:
        yield url


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    with opened_page(browser, server, TIMEOUT_MS, record=True) as opened:
        yield opened


def _search(server: str, **fields: object) -> dict[str, Any]:
    data = {k: json.dumps(v) if k == "query" else str(v) for k, v in fields.items()}
    response = httpx.post(f"{server}/search", data=data, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(body: dict[str, Any]) -> list[str]:
    return [hit["id"] for hit in body["results"]]


def _last_fields(page: Page) -> dict[str, str]:
    searches = sent_searches(page)
    assert searches, "the page sent no search"
    return searches[-1]["fields"]


def _search_item(page: Page, item_id: str, attribute: str) -> None:
    page.select_option("#attribute-select", attribute)
    page.fill("#item-input", item_id)
    page.click("#search-button")
    wait_status(page, f"results for {attribute}")


def _card_precisions(page: Page) -> list[str | None]:
    return page.locator("#results > li").evaluate_all(
        "cards => cards.map(c => { const p = c.querySelector('.score .precision'); return p ? p.textContent : null; })"
    )


def _part(page: Page, n: int) -> Locator:
    return page.locator("#parts > li").nth(n)


def _item_part(part: Locator, attribute: str, item_id: str) -> None:
    part.locator("select[data-id='attribute']").select_option(attribute)
    part.locator("input[type='radio'][value='item_id']").check()
    field = part.locator("input[data-id='item']")
    field.fill(item_id)
    field.press("Enter")


def test_threshold_by_score_shows_every_item_that_passes(page: Page, server: str) -> None:
    from playwright.sync_api import expect

    _search_item(page, "test-00005", "neckline")
    page.click("label[for='single-kind-threshold']")
    expect(page.locator("#top-k-input")).to_be_hidden()
    expect(page.locator("#single-min-score")).to_be_visible()
    expect(page.locator("#single-min-score")).to_have_attribute("min", "-1")
    expect(page.locator("#single-min-score")).to_have_attribute("max", "1")
    # at once, with the slider's starting 0.5 and at most 100: more pass than that
    truncated = _search(server, attribute="neckline", item_id="test-00005", min_score=0.5, max_results=100)
    assert truncated["truncated"] is True and len(truncated["results"]) == 100
    wait_status(page, threshold_status(truncated, "for neckline"))
    expect(page.locator("#status")).to_have_class("status truncated")
    assert _last_fields(page) == {
        "attribute": "neckline",
        "item_id": "test-00005",
        "min_score": "0.5",
        "max_results": "100",
    }
    assert result_ids(page) == _ids(truncated)

    page.fill("#single-min-score", "0.85")
    expect(page.locator("output[for='single-min-score']")).to_have_text("0.85")
    body = _search(server, attribute="neckline", item_id="test-00005", min_score=0.85, max_results=100)
    n = len(body["results"])
    assert body["truncated"] is False and 1 < n < 100
    wait_status(page, f"{n} items at score ≥ 0.85 for neckline")
    assert threshold_status(body, "for neckline") == f"{n} items at score ≥ 0.85 for neckline"
    expect(page.locator("#status")).not_to_have_class("status truncated")
    assert _last_fields(page)["min_score"] == "0.85"
    assert result_ids(page) == _ids(body)
    assert min(hit["score"] for hit in body["results"]) >= 0.85
    assert _card_precisions(page) == [f"precision {js_fixed(hit['precision'], 2)}" for hit in body["results"]]

    # the slider with the keyboard: one request once it rests, not one a step
    before = len(sent_searches(page))
    page.focus("#single-min-score")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    expect(page.locator("output[for='single-min-score']")).to_have_text("0.88")
    body = _search(server, attribute="neckline", item_id="test-00005", min_score=0.88, max_results=100)
    wait_status(page, threshold_status(body, "for neckline"))
    sent = sent_searches(page)[before:]
    assert 1 <= len(sent) < 3 and sent[-1]["fields"]["min_score"] == "0.88"
    assert result_ids(page) == _ids(body)

    # "At most" below the count: the list is cut, and the page says so
    assert len(body["results"]) > 5
    page.fill("#single-max-results", "5")
    cut = _search(server, attribute="neckline", item_id="test-00005", min_score=0.88, max_results=5)
    assert cut["truncated"] is True
    wait_status(page, "5 shown, more pass (truncated): score ≥ 0.88 for neckline")
    assert _last_fields(page)["max_results"] == "5"
    assert result_ids(page) == _ids(cut)

    page.click("label[for='single-kind-top-k']")  # back to the best k
    wait_status(page, "12 results for neckline")
    assert _last_fields(page) == {"attribute": "neckline", "item_id": "test-00005", "top_k": "12"}
    assert _card_precisions(page) == [None] * 12
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_only_the_latest_threshold_answer_shows(page: Page, server: str) -> None:
    from playwright.sync_api import Error, expect

    _search_item(page, "test-00005", "neckline")
    page.click("label[for='single-kind-threshold']")
    wait_status(page, "score ≥ 0.50 for neckline")
    held: list[Route] = []
    failed: list[Request] = []
    page.on("requestfailed", lambda request: failed.append(request))

    def hold_the_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)  # this answer comes late: after the next threshold's

    page.route("**/search", hold_the_first)
    page.fill("#single-min-score", "0.7")
    deadline = time.monotonic() + 10
    while not held:
        assert time.monotonic() < deadline, "the page sent no search for the new threshold"
        page.wait_for_timeout(50)
    page.fill("#single-min-score", "0.9")
    latest = _search(server, attribute="neckline", item_id="test-00005", min_score=0.9, max_results=100)
    wait_status(page, threshold_status(latest, "for neckline"))
    try:
        held[0].continue_()  # the stale answer arrives now, or the page has already cancelled it
    except Error:
        pass
    page.wait_for_timeout(500)
    assert held[0].request in failed  # cancelled by the page (AbortController)
    expect(page.locator("#status")).to_contain_text("score ≥ 0.90 for neckline")
    assert result_ids(page) == _ids(latest)
    assert _ids(latest) != _ids(
        _search(server, attribute="neckline", item_id="test-00005", min_score=0.7, max_results=100)
    )
    assert page.console.unexpected() == []  # type: ignore[attr-defined]


def test_threshold_by_precision_shows_the_score_it_means(page: Page, server: str) -> None:
    from playwright.sync_api import expect

    levels = {
        a["name"]: a["precision_scores"] for a in httpx.get(f"{server}/attributes").json()["attributes"]
    }
    assert levels["neckline"]["0.9"] is not None and levels["neckline"]["0.99"] is None
    _search_item(page, "test-00005", "neckline")
    page.click("label[for='single-kind-threshold']")
    expect(page.locator("#single-by-precision")).to_be_enabled()
    expect(page.locator("#single-limit .no-precision")).to_be_hidden()
    scale = page.locator("#single-limit .scale")
    expect(scale).to_contain_text(f"0.9 from score {js_fixed(levels['neckline']['0.9'], 2)}")
    expect(scale).to_contain_text("0.99 never reached")

    page.click("label[for='single-by-precision']")
    expect(page.locator("#single-min-score")).to_be_hidden()
    page.fill("#single-min-precision", "0.9")
    body = _search(server, attribute="neckline", item_id="test-00005", min_precision=0.9, max_results=100)
    score = body["threshold"]["min_score"]
    assert body["threshold"]["min_precision"] == 0.9 and round(score, 4) == levels["neckline"]["0.9"]
    wait_status(page, threshold_status(body, "for neckline"))
    expect(page.locator("#status")).to_contain_text(f"precision ≥ 0.90 (score ≥ {js_fixed(score, 4)})")
    translated = page.locator("#single-limit .translated")
    expect(translated).to_be_visible()
    expect(translated).to_contain_text(f"Precision 0.90 for neckline means score ≥ {js_fixed(score, 4)}")
    assert _last_fields(page) == {
        "attribute": "neckline",
        "item_id": "test-00005",
        "min_precision": "0.9",
        "max_results": "100",
    }
    assert result_ids(page) == _ids(body) and body["results"]
    assert _card_precisions(page) == [f"precision {js_fixed(hit['precision'], 2)}" for hit in body["results"]]

    page.fill("#single-min-precision", "0.99")  # never reached: an empty answer that says why
    unreachable = _search(
        server, attribute="neckline", item_id="test-00005", min_precision=0.99, max_results=100
    )["threshold"]["unreachable"]
    assert "no score reaches precision 0.99" in unreachable
    expect(page.locator("#status")).to_contain_text(f"No items for neckline: {unreachable}")
    expect(translated).to_contain_text("Precision 0.99 for neckline is never reached")
    error = page.locator("#error")
    expect(error).to_be_hidden()
    expect(page.locator("#results > li")).to_have_count(0)

    page.select_option("#attribute-select", "closure")  # another attribute: its own curve
    page.fill("#single-min-precision", "0.95")
    body = _search(server, attribute="closure", item_id="test-00005", min_precision=0.95, max_results=100)
    wait_status(page, threshold_status(body, "for closure"))
    expect(error).to_be_hidden()
    expect(translated).to_contain_text(f"means score ≥ {js_fixed(body['threshold']['min_score'], 4)}")
    assert result_ids(page) == _ids(body)
    assert page.console.unexpected() == []  # type: ignore[attr-defined]


def test_a_composed_query_in_threshold_mode_posts_min_score(page: Page, server: str) -> None:
    from playwright.sync_api import expect

    page.click("label[for='mode-composed']")
    _item_part(_part(page, 0), "neckline", "test-00005")
    page.click("#add-part")
    _item_part(_part(page, 1), "colour", "test-00040")
    wait_status(page, "results for the composed query (neckline 1.0, colour 1.0)")
    query = [
        {"attribute": "neckline", "item_id": "test-00005", "weight": 1.0},
        {"attribute": "colour", "item_id": "test-00040", "weight": 1.0},
    ]

    page.click("label[for='composed-kind-threshold']")
    limit = page.locator("#composed-limit")
    expect(page.locator("#composed-by-precision")).to_be_disabled()  # calibrated per attribute only
    expect(limit.locator(".no-precision")).to_contain_text("calibrated per attribute")
    slider = page.locator("#composed-min-score")
    expect(slider).to_have_attribute("min", "-2")  # +- the sum of |weight|
    expect(slider).to_have_attribute("max", "2")
    expect(limit.locator(".scale")).to_contain_text("between -2 and 2")
    page.fill("#composed-min-score", "1.5")
    body = _search(server, query=query, min_score=1.5, max_results=100)
    wait_status(page, threshold_status(body, "for the composed query (neckline 1.0, colour 1.0)"))
    fields = _last_fields(page)
    assert json.loads(fields.pop("query")) == query
    assert fields == {"min_score": "1.5", "max_results": "100"}
    assert result_ids(page) == _ids(body) and body["results"]
    assert _card_precisions(page) == [None] * len(body["results"])  # no curve for a composed score

    # colour's weight to 0: scores now lie in [-1, 1], and the threshold moves inside
    weight = _part(page, 1).locator("input[type='range']")
    weight.focus()
    deadline = time.monotonic() + 10
    while _part(page, 1).locator("output").text_content() != "0.0":
        assert time.monotonic() < deadline, "the weight slider did not reach 0"
        page.keyboard.press("ArrowLeft")
    expect(slider).to_have_attribute("max", "1")
    expect(page.locator("output[for='composed-min-score']")).to_have_text("1.00")
    zeroed = [query[0], {**query[1], "weight": 0.0}]
    body = _search(server, query=zeroed, min_score=1, max_results=100)
    wait_status(page, threshold_status(body, "for the composed query (neckline 1.0, colour 0.0)"))
    fields = _last_fields(page)
    assert json.loads(fields.pop("query")) == zeroed and fields == {"min_score": "1", "max_results": "100"}
    assert result_ids(page) == _ids(body)
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_threshold_controls_labelled_and_on_a_phone(page: Page) -> None:
    from playwright.sync_api import expect

    page.click("label[for='single-kind-threshold']")
    page.click("label[for='single-by-precision']")
    page.click("label[for='mode-composed']")
    page.click("label[for='composed-kind-threshold']")
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button, output')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.outerHTML)""")
    assert unlabelled == []
    page.click("label[for='mode-single']")
    page.focus("#single-kind-top-k")
    page.keyboard.press("ArrowLeft")  # the arrows move through the radio group, back to the threshold
    expect(page.locator("#single-kind-threshold")).to_be_checked()
    expect(page.locator("#single-min-precision")).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
    assert page.console.errors == []  # type: ignore[attr-defined]

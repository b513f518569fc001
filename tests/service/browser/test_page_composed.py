"""The page's composed-query builder, predicted tags and result-card shortcuts in a real browser:
Debian's headless Chromium driven by Playwright, against `asen serve` on a real socket with the tiny
checkpoint that has value prototypes and the demo test split indexed with it (items carry predicted
tags). Every result shown is checked against `POST /search` with the query the page sent.

Without /usr/bin/chromium these tests FAIL (saying how to install it) rather than skip: CI installs it."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers.browser import (
    opened_page,
    result_ids,
    sent_queries,
    sent_searches,
    wait_status,
)
from tests.helpers.serving import served

pytestmark = (
    pytest.mark.slow
)  # the composed-query builder in a real browser (about 30 s): CI runs it with the slow tests

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Request, Route

TIMEOUT_MS = 20_000
ATTRIBUTES = ["neckline", "closure", "pocket", "sleeve_length", "garment_length", "pattern", "colour"]


@pytest.fixture(scope="module")
def server(
    tagging_checkpoint: Path, tagged_index: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    index = Path(shutil.copytree(tagged_index, tmp_path_factory.mktemp("composed-page") / "index"))
    with served(tagging_checkpoint, index) as url:
        yield url


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    with opened_page(browser, server, TIMEOUT_MS, record=True) as opened:
        yield opened


def _last_query(page: Page) -> list[dict[str, Any]]:
    queries = sent_queries(page)
    assert queries, "the page sent no composed query"
    return queries[-1]


def _api(
    server: str, query: list[dict[str, Any]], files: dict[str, Path] | None = None, top_k: int = 12
) -> list[dict[str, Any]]:
    uploads = {name: (path.name, path.read_bytes()) for name, path in (files or {}).items()}
    response = httpx.post(
        f"{server}/search",
        data={"query": json.dumps(query), "top_k": str(top_k)},
        files=uploads or None,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]


def _api_ids(server: str, query: list[dict[str, Any]], files: dict[str, Path] | None = None) -> list[str]:
    return [hit["id"] for hit in _api(server, query, files)]


def _image(dataset: Path, fid: int) -> Path:
    return dataset / "images" / "test" / f"{fid:05d}.jpg"


def _composed(page: Page) -> None:
    page.click("label[for='mode-composed']")
    page.wait_for_selector("#composed-mode:not([hidden])")


def _part(page: Page, n: int) -> Locator:
    return page.locator("#parts > li").nth(n)


def _attribute(part: Locator) -> Locator:
    return part.locator("select[data-id='attribute']")


def _search_item(page: Page, item_id: str, attribute: str) -> None:
    page.select_option("#attribute-select", attribute)
    page.fill("#item-input", item_id)
    page.click("#search-button")
    wait_status(page, f"results for {attribute}")


def _chip(attribute: str, value: str, confidence: float) -> str:
    """A tag as the page writes it (JavaScript's Math.round for the percentage)."""
    return f"{attribute.replace('_', ' ')}: {value.replace('_', ' ')} {math.floor(confidence * 100 + 0.5)}%"


def test_parts_from_uploaded_images_show_what_the_api_returns(
    page: Page, server: str, demo_dataset: Path
) -> None:
    from playwright.sync_api import expect

    _composed(page)
    expect(page.locator("#parts > li")).to_have_count(1)  # the builder opens with one part, not set yet
    first = _part(page, 0)
    expect(_attribute(first)).to_have_value("neckline")
    expect(first).to_contain_text("left out")
    first.locator("input[type='file']").set_input_files(str(_image(demo_dataset, 21)))
    wait_status(page, "results for the composed query (neckline 1.0)")
    assert result_ids(page)[0] == "test-00021"  # an image finds itself
    expect(first.locator(".part-caption")).to_have_text("image 00021.jpg")

    page.click("#add-part")
    second = _part(page, 1)
    expect(_attribute(second)).to_have_value("closure")  # the first attribute no part is about yet
    expect(_attribute(second)).to_be_focused()
    _attribute(second).select_option("colour")
    second.locator("input[type='file']").set_input_files(str(_image(demo_dataset, 33)))
    wait_status(page, "results for the composed query (neckline 1.0, colour 1.0)")

    sent = _last_query(page)
    assert [{k: v for k, v in p.items() if k != "image"} for p in sent] == [
        {"attribute": "neckline", "weight": 1.0},
        {"attribute": "colour", "weight": 1.0},
    ]
    fields = [p["image"] for p in sent]
    assert sent_searches(page)[-1]["files"] == {
        fields[0]: "00021.jpg",
        fields[1]: "00033.jpg",
    }  # a file per part
    expected = _api_ids(
        server, sent, {fields[0]: _image(demo_dataset, 21), fields[1]: _image(demo_dataset, 33)}
    )
    assert result_ids(page) == expected and len(expected) == 12
    assert expected != _api_ids(
        server, [{"attribute": "neckline", "image": "a"}], {"a": _image(demo_dataset, 21)}
    )
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_use_for_makes_a_result_the_item_of_a_part(page: Page, server: str) -> None:
    from playwright.sync_api import expect

    _search_item(page, "test-00005", "neckline")
    card = page.locator("#results > li").nth(1)
    target = card.get_attribute("data-id")
    use = card.locator("button.use-button")
    use.focus()
    page.keyboard.press("Enter")  # the menu opens with the keyboard, its first entry focused
    menu = card.get_by_role("menu")
    items = menu.get_by_role("menuitem")
    expect(menu).to_be_visible()
    expect(use).to_have_attribute("aria-expanded", "true")
    expect(items).to_have_count(len(ATTRIBUTES))
    expect(items.first).to_be_focused()
    expect(items.first).to_have_text("neckline: part 1")  # the one-attribute query will be part 1
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(use).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("End")
    expect(items.last).to_have_text("colour: new part")
    expect(items.last).to_be_focused()
    page.keyboard.press("Enter")

    wait_status(page, "results for the composed query (neckline 1.0, colour 1.0)")
    expect(page.locator("#mode-composed")).to_be_checked()
    expect(page.locator("#parts > li")).to_have_count(2)
    # the one-attribute query became the first part; the result the second
    expect(_attribute(_part(page, 0))).to_have_value("neckline")
    expect(_part(page, 0).locator("input[data-id='item']")).to_have_value("test-00005")
    expect(_attribute(_part(page, 1))).to_have_value("colour")
    expect(_part(page, 1).locator("input[type='radio'][value='item_id']")).to_be_checked()
    expect(_part(page, 1).locator("input[data-id='item']")).to_have_value(target)
    sent = _last_query(page)
    assert sent == [
        {"attribute": "neckline", "item_id": "test-00005", "weight": 1.0},
        {"attribute": "colour", "item_id": target, "weight": 1.0},
    ]
    ids = result_ids(page)
    assert ids == _api_ids(server, sent) and target not in ids and "test-00005" not in ids

    other = page.locator("#results > li").nth(3)  # with the mouse: the part about neckline takes this item
    replacement = other.get_attribute("data-id")
    other.locator("button.use-button").click()
    other.get_by_role("menuitem", name="neckline: part 1").click()
    wait_status(page, "results for the composed query")
    expect(_part(page, 0).locator("input[data-id='item']")).to_have_value(replacement)
    assert _last_query(page)[0] == {"attribute": "neckline", "item_id": replacement, "weight": 1.0}
    assert result_ids(page) == _api_ids(server, _last_query(page))
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_a_value_from_the_dropdown(page: Page, server: str) -> None:
    from playwright.sync_api import expect

    value_search = {
        a["name"]: a["value_search"] for a in httpx.get(f"{server}/attributes").json()["attributes"]
    }
    assert value_search["pattern"]  # the tagging checkpoint has prototypes
    _composed(page)
    part = _part(page, 0)
    _attribute(part).select_option("pattern")
    part.locator("input[type='radio'][value='value']").check()
    values = part.locator("select[data-id='value']")
    expect(values).to_be_visible()
    expect(part.locator("input[type='file']")).to_be_hidden()  # only the chosen source's control shows
    assert values.locator("option").evaluate_all("os => os.map(o => o.value)") == [
        "",
        *value_search["pattern"],
    ]
    values.select_option("dots")
    wait_status(page, "results for the composed query (pattern 1.0)")
    sent = _last_query(page)
    assert sent == [{"attribute": "pattern", "value": "dots", "weight": 1.0}]
    assert result_ids(page) == _api_ids(server, sent)

    _attribute(part).select_option("colour")  # another attribute: its own values, none chosen yet
    assert values.locator("option").evaluate_all("os => os.map(o => o.value)") == [
        "",
        *value_search["colour"],
    ]
    expect(values).to_have_value("")
    wait_status(page, "Give a part an image, a catalogue item or a value")
    expect(page.locator("#results > li")).to_have_count(0)
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_a_weight_slider_updates_the_results_and_only_the_latest_answer_shows(
    page: Page, server: str, demo_dataset: Path
) -> None:
    from playwright.sync_api import Error, expect

    _composed(page)
    _part(page, 0).locator("input[type='file']").set_input_files(str(_image(demo_dataset, 21)))
    page.click("#add-part")
    second = _part(page, 1)
    _attribute(second).select_option("colour")
    second.locator("input[type='radio'][value='item_id']").check()
    second.locator("input[data-id='item']").fill("test-00040")
    second.locator("input[data-id='item']").press("Enter")
    wait_status(page, "(neckline 1.0, colour 1.0)")
    before = result_ids(page)
    field = _last_query(page)[0]["image"]
    files = {field: _image(demo_dataset, 21)}

    held: list[Route] = []
    failed: list[Request] = []
    page.on("requestfailed", lambda request: failed.append(request))

    def hold_the_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)  # this answer comes late: after the next query's

    page.route("**/search", hold_the_first)
    slider = second.locator("input[type='range']")
    slider.focus()
    page.keyboard.press("Home")
    expect(second.locator("output")).to_have_text("-1.0")
    deadline = time.monotonic() + 10
    while not held:
        assert time.monotonic() < deadline, "the page sent no search for the new weight"
        page.wait_for_timeout(50)
    assert _last_query(page)[1] == {"attribute": "colour", "item_id": "test-00040", "weight": -1.0}
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    expect(second.locator("output")).to_have_text("-0.7")
    wait_status(page, "(neckline 1.0, colour -0.7)")
    sent = _last_query(page)
    assert sent[1] == {"attribute": "colour", "item_id": "test-00040", "weight": -0.7}
    latest = _api_ids(server, sent, files)
    assert result_ids(page) == latest and latest != before

    try:
        held[0].continue_()  # the stale answer arrives now, or the page has already cancelled it
    except Error:
        pass
    page.wait_for_timeout(500)
    assert held[0].request in failed  # cancelled by the page (AbortController)
    expect(page.locator("#status")).to_contain_text("(neckline 1.0, colour -0.7)")
    assert result_ids(page) == latest
    assert latest != _api_ids(server, [sent[0], {**sent[1], "weight": -1.0}], files)
    assert page.console.unexpected() == []  # type: ignore[attr-defined]


def test_every_card_shows_its_predicted_tags_with_confidences(page: Page, server: str) -> None:
    from playwright.sync_api import expect

    _search_item(page, "test-00012", "sleeve_length")
    response = httpx.post(
        f"{server}/search",
        data={"attribute": "sleeve_length", "item_id": "test-00012", "top_k": "12"},
        timeout=30,
    )
    hits = response.json()["results"]
    assert result_ids(page) == [hit["id"] for hit in hits]
    cards = page.locator("#results > li")
    expect(cards).to_have_count(12)
    for card, hit in zip(cards.all(), hits, strict=True):
        meta = hit["metadata"]
        chips = card.locator(".tags > li").evaluate_all("cs => cs.map(c => c.textContent)")
        assert chips == [
            _chip(a, meta[f"predicted.{a}"], meta[f"predicted.{a}.confidence"]) for a in ATTRIBUTES
        ]
        highlighted = card.locator(".tags > li.match").evaluate_all("cs => cs.map(c => c.dataset.attribute)")
        assert highlighted == ["sleeve_length"]  # the attribute searched stands out
        assert "predicted." not in card.locator("dl").text_content()  # tags are not repeated as metadata
    expect(cards.first.locator(".tags")).to_be_visible()
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_same_but_not_this_colour(page: Page, server: str) -> None:
    from playwright.sync_api import expect

    _search_item(page, "test-00005", "pattern")
    card = page.locator("#results > li").first
    item = card.get_attribute("data-id")
    shortcut = card.get_by_role("button", name="Same, but not this colour")
    expect(shortcut).to_be_visible()
    shortcut.click()
    wait_status(page, "results for the composed query (pattern 1.0, colour -1.0)")
    sent = _last_query(page)
    assert sent == [
        {"attribute": "pattern", "item_id": item, "weight": 1.0},
        {"attribute": "colour", "item_id": item, "weight": -1.0},
    ]
    ids = result_ids(page)
    assert ids == _api_ids(server, sent) and item not in ids
    expect(page.locator("#mode-composed")).to_be_checked()
    expect(page.locator("#parts > li output")).to_have_text(["1.0", "-1.0"])
    expect(page.locator("#results-heading")).to_be_focused()

    # from the builder: the attribute searched is its first liked part's, still not colour
    again = page.locator("#results > li").nth(2)
    other = again.get_attribute("data-id")
    again.get_by_role("button", name="Same, but not this colour").click()
    wait_status(page, "results for the composed query (pattern 1.0, colour -1.0)")
    assert _last_query(page) == [
        {"attribute": "pattern", "item_id": other, "weight": 1.0},
        {"attribute": "colour", "item_id": other, "weight": -1.0},
    ]
    assert result_ids(page) == _api_ids(server, _last_query(page))
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_a_rejected_query_shows_the_api_error(page: Page, demo_dataset: Path) -> None:
    from playwright.sync_api import expect

    _composed(page)
    _part(page, 0).locator("input[type='file']").set_input_files(str(_image(demo_dataset, 21)))
    wait_status(page, "results for the composed query (neckline 1.0)")
    page.click("#add-part")
    second = _part(page, 1)
    _attribute(second).select_option("neckline")  # two parts about one attribute: 422
    second.locator("input[type='radio'][value='value']").check()
    second.locator("select[data-id='value']").select_option("v_neck")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("parts 0 and 1 are both about 'neckline'")
    expect(error).to_contain_text("duplicate_attribute, HTTP 422")
    expect(page.locator("#results > li")).to_have_count(0)

    _attribute(second).select_option("pocket")
    second.locator("select[data-id='value']").select_option("kangaroo")
    wait_status(page, "results for the composed query (neckline 1.0, pocket 1.0)")
    expect(error).to_be_hidden()
    expect(page.locator("#results > li")).to_have_count(12)
    assert page.console.unexpected() == []  # type: ignore[attr-defined]


def test_the_builder_with_the_keyboard_labelled_and_on_a_phone(page: Page) -> None:
    from playwright.sync_api import expect

    page.focus("#mode-single")
    page.keyboard.press("ArrowRight")  # arrows move through the radio group
    expect(page.locator("#composed-mode")).to_be_visible()
    expect(page.locator("#single-mode")).to_be_hidden()
    page.focus("#add-part")
    page.keyboard.press("Enter")
    expect(page.locator("#parts > li")).to_have_count(2)
    expect(_attribute(_part(page, 1))).to_be_focused()
    page.keyboard.press("Tab")  # the source: a radio group
    page.keyboard.press("ArrowRight")
    expect(_part(page, 1).locator("input[type='radio'][value='item_id']")).to_be_checked()
    page.keyboard.press("Tab")
    expect(_part(page, 1).locator("input[data-id='item']")).to_be_focused()
    page.keyboard.type("test-00012")
    page.keyboard.press("Enter")
    wait_status(page, "results for the composed query (closure 1.0)")
    page.locator("#results > li").first.locator("button.use-button").click()  # a menu open, too

    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button, output')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.outerHTML)""")
    assert unlabelled == []
    assert (
        page.locator("#parts input[type='range']").first.evaluate("el => el.labels[0].textContent")
        == "Weight"
    )
    page.keyboard.press("Escape")

    remove = _part(page, 1).get_by_role("button", name="Remove part 2 (closure)")
    remove.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#parts > li")).to_have_count(1)
    expect(_part(page, 0).locator("button.remove")).to_be_focused()
    wait_status(page, "Give a part an image, a catalogue item or a value")

    page.set_viewport_size({"width": 390, "height": 844})
    page.click("#add-part")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
    assert page.console.errors == []  # type: ignore[attr-defined]

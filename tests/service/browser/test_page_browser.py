"""The web page in a real browser: Debian's headless Chromium driven by Playwright, against `asen serve`
on a real socket with the tiny real checkpoint and the index built by `asen index build`.

Without /usr/bin/chromium these tests FAIL (saying how to install it) rather than skip: CI installs it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.helpers.browser import opened_page, result_ids, threshold_status, wait_status
from tests.helpers.serving import served

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

TIMEOUT_MS = 20_000
QUERY_FID = 21


@pytest.fixture(scope="module")
def server(
    tiny_checkpoint: Path, built_index: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    index = Path(shutil.copytree(built_index, tmp_path_factory.mktemp("browser") / "index"))
    with served(tiny_checkpoint, index) as url:
        yield url


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    with opened_page(browser, server, TIMEOUT_MS) as opened:
        yield opened


def _api_ids(server: str, path: str, image: Path | None = None, **data: object) -> list[str]:
    files = {"image": (image.name, image.read_bytes())} if image is not None else None
    response = httpx.post(f"{server}{path}", data=data, files=files, timeout=30)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def test_upload_finds_itself_switch_attribute_and_explain(
    page: Page, server: str, demo_dataset: Path
) -> None:
    from playwright.sync_api import expect

    first_attribute = page.locator("#attribute-select").input_value()
    query = demo_dataset / "images" / "test" / f"{QUERY_FID:05d}.jpg"
    page.set_input_files("#image-input", str(query))
    wait_status(page, f"results for {first_attribute}")
    cards = page.locator("#results > li")
    expect(cards).to_have_count(12)
    assert result_ids(page)[0] == f"test-{QUERY_FID:05d}"
    expect(cards.first.locator("img")).to_have_js_property("complete", True)
    assert (
        cards.first.locator("img").evaluate("img => img.naturalWidth") > 0
    )  # the thumbnail endpoint answered
    before = result_ids(page)

    other = page.locator("#attribute-select option").nth(2).get_attribute("value")
    page.select_option("#attribute-select", other)
    wait_status(page, f"results for {other}")
    after = result_ids(page)
    assert after != before and after[0] == f"test-{QUERY_FID:05d}"
    assert after == _api_ids(server, "/search", query, attribute=other, top_k=12)

    page.check("#explain-toggle")
    expect(page.locator(".frame.explained")).to_have_count(13)  # the query and every result
    expect(page.locator("#legend")).to_be_visible()
    painted = page.locator("#query-preview canvas").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n / (c.width * c.height); }"
    )
    assert painted > 0.5  # the heatmap covers the query image
    page.uncheck("#explain-toggle")
    expect(page.locator(".frame.explained")).to_have_count(0)
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_click_a_result_then_rerank(page: Page, server: str) -> None:
    from playwright.sync_api import expect

    page.fill("#item-input", "test-00005")
    page.click("#search-button")
    wait_status(page, "results for")
    second = result_ids(page)[1]
    page.locator("#results > li").nth(1).locator("button.pick").click()
    wait_status(page, "results for")
    expect(page.locator("#item-input")).to_have_value(second)
    expect(page.locator("#query-caption")).to_contain_text(second)
    assert second not in result_ids(page)  # a query by item never returns that item
    attribute = page.locator("#attribute-select").input_value()
    assert result_ids(page) == _api_ids(server, "/search", attribute=attribute, item_id=second, top_k=12)

    page.click("#rerank summary")
    page.fill("#candidates-input", "test-00040, test-00003\ntest-00117 sku-404 test-00003")
    page.click("#rerank-button")
    wait_status(page, "reranked")
    expect(page.locator("#status")).to_contain_text("sku-404")
    expected = _api_ids(
        server,
        "/rerank",
        attribute=attribute,
        item_id=second,
        candidates=["test-00040", "test-00003", "test-00117", "sku-404", "test-00003"],
    )
    assert result_ids(page) == expected and len(expected) == 3
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_api_errors_are_shown_readably(page: Page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("these are notes, not a picture")
    page.set_input_files("#image-input", str(not_an_image))
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("not an image")
    expect(error).to_contain_text("HTTP 400")
    expect(page.locator("#results > li")).to_have_count(0)

    page.fill("#item-input", "sku-404")
    page.press("#item-input", "Enter")
    expect(error).to_contain_text("no item 'sku-404' in the catalogue")
    page.fill("#item-input", "test-00001")
    page.fill("#top-k-input", "1000")
    page.press("#top-k-input", "Enter")
    expect(error).to_contain_text("top_k must be between 1 and 100")
    page.fill("#top-k-input", "5")
    page.press("#top-k-input", "Enter")
    expect(error).to_be_hidden()
    expect(page.locator("#results > li")).to_have_count(5)
    assert page.console.unexpected() == []  # type: ignore[attr-defined]


def test_keyboard_labels_and_a_phone_screen(page: Page) -> None:
    from playwright.sync_api import expect

    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.outerHTML)""")
    assert unlabelled == []
    page.set_viewport_size({"width": 390, "height": 844})
    page.focus("#item-input")
    page.keyboard.type("test-00012")
    page.keyboard.press("Enter")
    wait_status(page, "results for")
    first = result_ids(page)[0]
    pick = page.locator("#results > li").first.locator("button.pick")
    for _ in range(40):  # Tab through the page until the first result has the focus
        page.keyboard.press("Tab")
        if pick.evaluate("el => el === document.activeElement"):
            break
    else:
        pytest.fail("the first result cannot be reached with Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#item-input")).to_have_value(first)
    expect(page.locator("#results-heading")).to_be_focused()
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_drop_an_image_on_the_page(page: Page) -> None:
    from playwright.sync_api import expect

    page.evaluate("""async () => {
        const blob = await (await fetch('/images/test-00033')).blob();
        const transfer = new DataTransfer();
        transfer.items.add(new File([blob], 'dropped.jpg', {type: blob.type}));
        document.querySelector('main').dispatchEvent(
            new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""")
    wait_status(page, "results for")
    assert result_ids(page)[0] == "test-00033"
    expect(page.locator("#query-caption")).to_contain_text("dropped.jpg")
    assert page.locator("#image-input").evaluate("input => input.files[0].name") == "dropped.jpg"
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_the_builder_without_value_prototypes(page: Page, server: str) -> None:
    """This checkpoint has no value prototypes: a part cannot search by value (the page says why),
    and the cards show no predicted tags; the one-attribute query becomes the builder's first part."""
    from playwright.sync_api import expect

    assert all(a["value_search"] == [] for a in httpx.get(f"{server}/attributes").json()["attributes"])
    attribute = page.locator("#attribute-select").input_value()
    page.fill("#item-input", "test-00005")
    page.click("#search-button")
    wait_status(page, f"results for {attribute}")
    expect(page.locator("#results .tags > li")).to_have_count(0)
    expect(page.locator("#results .tags").first).to_be_hidden()

    page.click("label[for='mode-composed']")
    part = page.locator("#parts > li").first
    expect(part.locator("input[data-id='item']")).to_have_value("test-00005")
    expect(part.locator("input[type='radio'][value='value']")).to_be_disabled()
    expect(part.locator(".no-values")).to_be_visible()
    expect(part.locator(".no-values")).to_contain_text("needs value prototypes")
    wait_status(page, f"results for the composed query ({attribute.replace('_', ' ')} 1.0)")
    single = _api_ids(server, "/search", attribute=attribute, item_id="test-00005", top_k=12)
    assert result_ids(page) == single  # one part of weight 1 ranks as the one-attribute query

    page.click("label[for='mode-single']")
    wait_status(page, f"results for {attribute}")
    assert result_ids(page) == single
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_threshold_without_precision_curves(page: Page, server: str) -> None:
    """This checkpoint has no precision curves: a threshold is a minimum score only (the page says why),
    and the cards show no precision."""
    from playwright.sync_api import expect

    assert all(a["precision_scores"] is None for a in httpx.get(f"{server}/attributes").json()["attributes"])
    attribute = page.locator("#attribute-select").input_value()
    page.fill("#item-input", "test-00005")
    page.click("#search-button")
    wait_status(page, f"results for {attribute}")
    page.click("label[for='single-kind-threshold']")
    expect(page.locator("#single-by-precision")).to_be_disabled()
    expect(page.locator("#single-by-score")).to_be_checked()
    why = page.locator("#single-limit .no-precision")
    expect(why).to_be_visible()
    expect(why).to_contain_text("needs precision curves")
    expect(page.locator("#single-limit .scale")).to_be_hidden()

    page.fill("#single-min-score", "0.9")
    response = httpx.post(
        f"{server}/search",
        data={"attribute": attribute, "item_id": "test-00005", "min_score": "0.9", "max_results": "100"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    wait_status(page, threshold_status(body, f"for {attribute}"))
    assert result_ids(page) == [hit["id"] for hit in body["results"]]
    assert all(hit["precision"] is None for hit in body["results"])
    expect(page.locator("#results .precision")).to_have_count(0)
    assert page.console.errors == []  # type: ignore[attr-defined]

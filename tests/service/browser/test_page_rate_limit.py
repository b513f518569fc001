"""The web page under the per-client rate limit, in a real browser (Debian's headless Chromium, as
tests/service/browser/test_page_browser.py): thumbnails have their own, larger budget so a page of results
loads every one, and explaining every result, which outruns the model's budget, waits for
`Retry-After` and retries instead of failing.

Without /usr/bin/chromium these tests FAIL (saying how to install it) rather than skip: CI installs it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.browser import opened_page, wait_status
from tests.helpers.serving import served

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = (
    pytest.mark.slow
)  # a rate-limited page in a real browser (about 60 s): CI runs it with the slow tests

TIMEOUT_MS = 30_000
RATE, BURST = 2, 4  # model requests a second, and at once; thumbnails: 10 times both


@pytest.fixture(scope="module")
def server(
    tiny_checkpoint: Path, built_index: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    index = Path(shutil.copytree(built_index, tmp_path_factory.mktemp("limited") / "index"))
    with served(tiny_checkpoint, index, ASEN_RATE_LIMIT=str(RATE), ASEN_RATE_BURST=str(BURST)) as url:
        yield url


def test_thumbnails_load_and_explanations_wait_out_the_rate_limit(browser: Browser, server: str) -> None:
    from playwright.sync_api import expect

    refused: list[str] = []
    with opened_page(browser, server, TIMEOUT_MS) as page:
        page.on("response", lambda r: refused.append(r.url) if r.status == 429 else None)
        page.set_viewport_size({"width": 1280, "height": 8000})  # every (lazy) thumbnail in view at once
        page.fill("#top-k-input", "30")
        page.fill("#item-input", "test-00007")
        page.press("#item-input", "Enter")
        wait_status(page, "results for")
        cards = page.locator("#results > li")
        expect(cards).to_have_count(30)
        # 30 thumbnails and the query's preview at once: beyond the model's burst, within the images'
        page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete)")
        expect(page.locator("#results > li.no-image")).to_have_count(0)
        assert (
            page.locator("#results img").evaluate_all("imgs => imgs.filter(i => i.naturalWidth > 0).length")
            == 30
        )
        assert not [url for url in refused if "/images/" in url]

        page.check("#explain-toggle")  # 31 explanations against a burst of 4 and 2 a second
        expect(page.locator(".frame.explained")).to_have_count(31, timeout=60_000)
        expect(page.locator("#error")).to_be_hidden()
        assert any(url.endswith("/explain") for url in refused), "the limit was never reached: not a test"

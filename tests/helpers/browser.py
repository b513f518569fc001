"""Headless Chromium for the browser tests and `bench/screenshots.py`: Debian's `chromium` package
driven by Playwright for Python (whose wheel carries the driver; no browser is ever downloaded), and
helpers for reading the page."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google services, and a closed
# network refuses those connections (slow starts, log noise); none of them matter to a test.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
INSTALL_HINT = (
    f"the browser tests need Debian's Chromium at {CHROMIUM}: run `make install` as root (it installs "
    "it), or `sudo apt-get update && sudo apt-get install -y chromium`"
)


def browser_missing() -> str | None:
    """Why the browser cannot be started here, or None."""
    if not CHROMIUM.is_file():
        return INSTALL_HINT
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the browser tests need Playwright for Python: pip install -e '.[test]'"
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def opened_page(browser: Browser, url: str, timeout_ms: int, record: bool = False) -> Iterator[Page]:
    """The page at `url` in a fresh 1280 x 900 context, ready (`body[data-ready]`), its console errors
    collected in `page.console`; with `record`, the searches it sends too (`record_searches`)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    page.console = Console(page)  # type: ignore[attr-defined]
    if record:
        record_searches(page)
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']")
    try:
        yield page
    finally:
        context.close()


class Console:
    """Errors the page reported: console.error messages and uncaught exceptions."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def unexpected(self) -> list[str]:
        """Errors other than Chromium's own line for an HTTP error answer (which the page shows)."""
        return [e for e in self.errors if not e.startswith("Failed to load resource: the server responded")]


def result_ids(page: Page) -> list[str]:
    """The ids of the result cards, in the order shown."""
    return page.locator("#results > li").evaluate_all("cards => cards.map(c => c.dataset.id)")


def wait_status(page: Page, text: str) -> None:
    """Until the request started last has been answered and the status line says `text`."""
    page.wait_for_selector("#results-section:not([aria-busy])", state="attached")
    page.wait_for_function("text => document.getElementById('status').textContent.includes(text)", arg=text)


# Chromium does not hand Playwright the body of a multipart request that carries a file, so the page's
# own fetch is wrapped: every POST /search it sends is recorded, text fields by value, files by name.
RECORD_SEARCHES = """(() => {
  const sent = window.__searches = [];
  const fetch = window.fetch;
  window.fetch = function (input, init) {
    const body = init && init.body;
    if (body instanceof FormData && String(input).endsWith("/search")) {
      const fields = {};
      const files = {};
      for (const [name, value] of body.entries()) {
        if (value instanceof File) files[name] = value.name;
        else fields[name] = value;
      }
      sent.push({ fields, files });
    }
    return fetch.apply(this, arguments);
  };
})();"""


def record_searches(page: Page) -> None:
    """Record every POST /search the page sends from now on (install before `page.goto`)."""
    page.add_init_script(RECORD_SEARCHES)


def sent_searches(page: Page) -> list[dict[str, dict[str, str]]]:
    """The searches the page sent, in order: {"fields": {name: text}, "files": {name: file name}}."""
    return page.evaluate("() => window.__searches")


def sent_queries(page: Page) -> list[list[dict[str, Any]]]:
    """The composed queries (the `query` fields' JSON) of the searches the page sent, in order."""
    return [json.loads(s["fields"]["query"]) for s in sent_searches(page) if "query" in s["fields"]]


def js_fixed(value: float, digits: int) -> str:
    """JavaScript's `value.toFixed(digits)`: the exact binary value rounded half away from zero."""
    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def threshold_status(body: Mapping[str, Any], what: str) -> str:
    """The page's status line for a threshold answer of `POST /search` (without its timing): how many
    items pass, or that `max_results` cut the list; `what` is e.g. "for neckline"."""
    threshold = body["threshold"]
    if threshold["min_precision"] is None:
        at = f"score ≥ {js_fixed(threshold['min_score'], 2)}"
    else:
        at = f"precision ≥ {js_fixed(threshold['min_precision'], 2)} (score ≥ {js_fixed(threshold['min_score'], 4)})"
    n = len(body["results"])
    if body["truncated"]:
        return f"{n} shown, more pass (truncated): {at} {what}"
    if n == 0:
        return f"No items at {at} {what}"
    return f"{n} {'item' if n == 1 else 'items'} at {at} {what}"

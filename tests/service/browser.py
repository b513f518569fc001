"""Headless Chromium for the browser tests and `bench/screenshots.py`: Debian's `chromium` package
driven by Playwright for Python (whose wheel carries the driver; no browser is ever downloaded)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google services, and a closed
# network refuses those connections (slow starts, log noise); none of them matter to a test.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
INSTALL_HINT = (f"the browser tests need Debian's Chromium at {CHROMIUM}: run `make install` as root (it installs "
                "it), or `sudo apt-get update && sudo apt-get install -y chromium`")


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

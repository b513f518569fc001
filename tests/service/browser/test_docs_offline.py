"""`/docs` (Swagger UI) and `/redoc` (ReDoc) work without internet: headless Chromium opens each against
`asen serve` on a real socket with EVERY request to another host aborted, waits until the page has
rendered the schema, and finds every operation of the app's OpenAPI schema (computed from
`create_app(...).openapi()` now, not a list written here) listed; no request may leave for another host,
and the page's Content-Security-Policy must block nothing but ReDoc's Redocly logo (service/api/routes/docs.py).
A page that loads a file from a CDN fails at once: the CSP or the route interception stops it, and is seen.

Without /usr/bin/chromium the browser test FAILS (saying how to install it) rather than skips: CI installs it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from asen_search.service.api.app import create_app
from asen_search.service.api.routes.docs import ASSET_NAMES, ASSETS_URL
from asen_search.service.api.settings import Settings
from tests.helpers.browser import Console
from tests.helpers.serving import served

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

TIMEOUT_MS = 15_000
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# ReDoc's sidebar always shows "API docs by Redocly" with this logo (no option turns it off); the page's
# CSP blocks it before any request is made, and ReDoc then hides the image. Nothing else may be blocked.
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"

# Each page's operations as (METHOD, path) pairs, read from what it rendered.
SWAGGER_OPERATIONS = """() => [...document.querySelectorAll('#swagger-ui .opblock')].map(block => [
  block.querySelector('.opblock-summary-method').textContent.trim().toUpperCase(),
  block.querySelector('.opblock-summary-path').dataset.path])"""
REDOC_OPERATIONS = """() => [...document.querySelectorAll('redoc .http-verb')].map(verb => [
  verb.textContent.trim().toUpperCase(), verb.nextElementSibling.textContent.trim()])"""
# Rendered: at least as many distinct operations as the schema has (then compared exactly).
RENDERED = "n => new Set(({read})().map(op => op.join(' '))).size >= n"

CSP_VIOLATIONS = """document.addEventListener('securitypolicyviolation',
  e => (window.__csp = window.__csp || []).push([e.effectiveDirective, e.blockedURI]));"""


@pytest.fixture(scope="module")
def server(
    tiny_checkpoint: Path, built_index: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    index = Path(shutil.copytree(built_index, tmp_path_factory.mktemp("docs") / "index"))
    with served(tiny_checkpoint, index) as url:
        yield url


@pytest.fixture(scope="module")
def operations(tiny_checkpoint: Path, built_index: Path) -> set[tuple[str, str]]:
    """Every (METHOD, path) of the app's OpenAPI schema, as it is today."""
    paths = create_app(Settings(checkpoint=tiny_checkpoint, index=built_index)).openapi()["paths"]
    found = {
        (method.upper(), path) for path, item in paths.items() for method in item if method in HTTP_METHODS
    }
    assert len(found) >= 10, found  # the service's endpoints, not an empty schema
    return found


class Offline:
    """A browser context whose every request to another host than `server` is aborted and recorded;
    requests the CSP blocked before the network are recorded too (`attempted`)."""

    def __init__(self, browser: Browser, server: str) -> None:
        self.origin = urlsplit(server)[:2]
        self.aborted: list[str] = []
        self.attempted: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.add_init_script(CSP_VIOLATIONS)
        self.page.on(
            "request",
            lambda request: None if self._local(request.url) else self.attempted.append(request.url),
        )
        self.console = Console(self.page)

    def _local(self, url: str) -> bool:
        return urlsplit(url)[:2] == self.origin

    def _route(self, route: Route) -> None:
        if self._local(route.request.url):
            route.continue_()
        else:
            self.aborted.append(route.request.url)
            route.abort("internetdisconnected")

    def violations(self) -> list[tuple[str, str]]:
        return [tuple(v) for v in self.page.evaluate("() => window.__csp || []")]


@pytest.fixture
def offline(browser: Browser, server: str) -> Iterator[Offline]:
    opened = Offline(browser, server)
    try:
        yield opened
    finally:
        opened.context.close()


def _rendered(page: Page, read: str, n: int) -> set[tuple[str, str]]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(RENDERED.format(read=read), arg=n)
    except PlaywrightTimeout:
        pass  # the comparison below says what is missing
    return {(method, path) for method, path in page.evaluate(read)}


@pytest.mark.parametrize(("path", "read"), [("/docs", SWAGGER_OPERATIONS), ("/redoc", REDOC_OPERATIONS)])
def test_page_renders_every_operation_offline(
    offline: Offline, server: str, operations: set[tuple[str, str]], path: str, read: str
) -> None:
    page = offline.page
    page.goto(f"{server}{path}")  # the page and every script and stylesheet it names have loaded (or failed)
    allowed = {REDOCLY_LOGO} if path == "/redoc" else set()
    # a file from another host is a failure at once, not a render timeout
    assert offline.aborted == [], f"{path} requested files from other hosts: {offline.aborted}"
    assert {url for _, url in offline.violations()} <= allowed, f"{path}: CSP blocked {offline.violations()}"
    shown = _rendered(page, read, len(operations))
    assert shown == operations, (
        f"{path}: missing {sorted(operations - shown)}, unexpected {sorted(shown - operations)}"
    )
    assert offline.aborted == [], f"{path} requested files from other hosts: {offline.aborted}"
    assert set(offline.attempted) <= allowed, offline.attempted
    assert {url for _, url in offline.violations()} <= allowed, f"{path}: CSP blocked {offline.violations()}"
    errors = [e for e in offline.console.unexpected() if REDOCLY_LOGO not in e]
    assert errors == [], errors


def test_pages_name_only_local_files_with_strict_headers(server: str) -> None:
    for path in ("/docs", "/redoc"):
        answer = httpx.get(f"{server}{path}", timeout=10)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        assert "http://" not in answer.text and "https://" not in answer.text  # no CDN, no fonts
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self';" in csp and "https:" not in csp
    names = [*ASSET_NAMES, "swagger-init.js"]
    for name in names:
        answer = httpx.get(f"{server}{ASSETS_URL}/{name}", timeout=10)
        assert answer.status_code == 200 and answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-cache"
        if name != "swagger-init.js":  # the package's files: revalidated by ETag
            again = httpx.get(
                f"{server}{ASSETS_URL}/{name}", headers={"If-None-Match": answer.headers["etag"]}, timeout=10
            )
            assert again.status_code == 304 and again.content == b""
    missing = httpx.get(f"{server}{ASSETS_URL}/..%2Fconsts.py", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"

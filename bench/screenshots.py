"""Screenshots for the docs, taken with headless Chromium (Debian's `chromium`) driven by Playwright:
of the web page (a results grid on a desktop, the explanation overlay, a phone-sized view, a composed
query of several attributes, and a threshold search by calibrated precision), and of the static
report of `asen scan`.

    .venv/bin/python -m bench.screenshots --checkpoint var/demo/model/best.pt --index var/demo/index \\
        --query var/demo/data/images/test/00042.jpg                                      # after `make serve`
    .venv/bin/python -m bench.screenshots --url http://127.0.0.1:8765 --query photo.jpg   # a server already running
    .venv/bin/python -m bench.screenshots --scan-report scan-out/report.html              # a scan's report only

Run as a module from the repository root (`-m`): it shares the tests' Chromium launcher
(tests/helpers/browser.py), which the repository root on sys.path makes importable.

Writes docs/page-results.png, docs/page-explain.png, docs/page-mobile.png, docs/page-composed.png and
docs/page-threshold.png (--out to change); with --scan-report, docs/scan-report.png too (the top of the
report, 1280 px wide). The composed query: --explain-attribute taken from the query image, and
--attribute set to the value --value (needs a checkpoint with value prototypes and an index built with
it, whose items carry predicted tags). The threshold search: --threshold-attribute of the query image at
precision --min-precision or better (needs precision curves: a checkpoint from `asen train`, or `asen eval`
beside it). Without --url it serves the checkpoint and index itself (`asen serve` in a subprocess).

The README's pictures and docs/scan-report.png: MODEL is the demo model's best.pt (with its precision
curves, inside it or beside it from `asen eval`), INDEX its index of the demo test split, served from a
copy so that nothing is written to it, DATA the demo dataset (var/demo/data after `make serve`):

    cp -a $INDEX /tmp/shots-index
    .venv/bin/python -m bench.screenshots --checkpoint $MODEL --index /tmp/shots-index \\
        --query $DATA/images/test/00041.jpg
    mkdir -p /tmp/designs && cp $DATA/images/test/00003.jpg $DATA/images/test/00010.jpg /tmp/designs/
    .venv/bin/asen scan --checkpoint $MODEL --index /tmp/shots-index --designs /tmp/designs \\
        --attribute neckline --min-precision 0.99 --max-results 12 --out /tmp/scan --runtime openvino
    .venv/bin/python -m bench.screenshots --scan-report /tmp/scan/report.html
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from asen_search.model.tuning import PROCESS_ENV  # the process tuning of docs/tuning.md
from tests.helpers.browser import browser_missing, chromium  # one place for Chromium's flags

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serving(checkpoint: Path, index: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "asen_search.service.cli",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--index",
        str(index),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **PROCESS_ENV, "ASEN_LOG_LEVEL": "warning"}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"asen serve exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("asen serve was not ready in 120 s")
            time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def wait_for_results(page, attribute: str) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "a => document.getElementById('status').textContent.includes('results for ' + a)", arg=attribute
    )
    wait_for_images(page)
    page.evaluate(
        "() => document.activeElement && document.activeElement.blur()"
    )  # no focus ring in the picture


def wait_for_images(page) -> None:  # type: ignore[no-untyped-def]
    """Until every image in sight has loaded (results below the fold load lazily, when scrolled to)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img, #parts img')]"
        ".every(i => i.complete || i.getBoundingClientRect().top > window.innerHeight)"
    )


def wait_for_composed(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector("#results-section:not([aria-busy])", state="attached")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('results for the composed')"
    )
    wait_for_images(page)


def shoot_composed(
    browser,
    url: str,
    query: Path,
    image_attribute: str,
    value_attribute: str,  # type: ignore[no-untyped-def]
    value: str,
    top_k: int,
    out: Path,
) -> None:
    """Two parts: `image_attribute` from the query image, `value_attribute` from `value`."""
    page = browser.new_page(viewport={"width": 1280, "height": 1080}, device_scale_factor=1)
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']")
    page.click("label[for='mode-composed']")
    page.fill("#composed-top-k", str(top_k))
    first = page.locator("#parts > li").first
    first.locator("select[data-id='attribute']").select_option(image_attribute)
    first.locator("input[type='file']").set_input_files(str(query))
    page.click("#add-part")
    second = page.locator("#parts > li").nth(1)
    second.locator("select[data-id='attribute']").select_option(value_attribute)
    second.locator("input[type='radio'][value='value']").check()
    second.locator("select[data-id='value']").select_option(value)
    page.evaluate("() => { window.scrollTo(0, 0); document.activeElement && document.activeElement.blur(); }")
    wait_for_composed(page)
    page.screenshot(path=out / "page-composed.png")


def shoot_threshold(
    browser,
    url: str,
    query: Path,
    attribute: str,
    min_precision: float,  # type: ignore[no-untyped-def]
    out: Path,
) -> None:
    """Every item of `attribute` like the query image at precision `min_precision` or better."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']")
    page.select_option("#attribute-select", attribute)
    page.click("label[for='single-kind-threshold']")
    if page.locator("#single-by-precision").is_disabled():
        raise SystemExit(
            f"no precision curve for {attribute}: {page.text_content('#single-limit .no-precision')}"
        )
    page.click("label[for='single-by-precision']")
    page.fill("#single-min-precision", f"{min_precision:.2f}")
    page.set_input_files("#image-input", str(query))
    page.wait_for_selector("#results-section:not([aria-busy])", state="attached")
    page.wait_for_function(
        "() => / at precision /.test(document.getElementById('status').textContent)"
        " || !document.getElementById('error').hidden"
    )
    if page.locator("#error").is_visible():
        raise SystemExit(f"the threshold search failed: {page.text_content('#error')}")
    page.evaluate("() => { window.scrollTo(0, 0); document.activeElement && document.activeElement.blur(); }")
    wait_for_images(page)
    page.screenshot(path=out / "page-threshold.png")


def shoot_scan_report(browser, report: Path, out: Path) -> None:  # type: ignore[no-untyped-def]
    """The top of `asen scan`'s report.html, as a browser opens it from the disk."""
    page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page.set_default_timeout(60_000)
    page.goto(report.resolve().as_uri())
    page.wait_for_load_state("load")
    page.wait_for_function(
        "() => [...document.images]"
        ".every(i => i.complete || i.getBoundingClientRect().top > window.innerHeight)"
    )
    page.screenshot(path=out / "scan-report.png")


def shoot(
    url: str,
    query: Path,
    attribute: str,
    explain_attribute: str,
    top_k: int,
    out: Path,
    value: str,
    threshold_attribute: str,
    min_precision: float,
) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("body[data-ready='true']")
        page.select_option("#attribute-select", attribute)
        page.fill("#top-k-input", str(top_k))
        page.set_input_files("#image-input", str(query))
        wait_for_results(page, attribute)
        page.screenshot(path=out / "page-results.png")

        page.select_option("#attribute-select", explain_attribute)
        wait_for_results(page, explain_attribute)
        page.check("#explain-toggle")
        expect(page.locator(".frame.explained")).to_have_count(top_k + 1, timeout=60_000)
        page.screenshot(path=out / "page-explain.png")

        phone = browser.new_page(
            viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True, has_touch=True
        )
        phone.set_default_timeout(60_000)
        phone.goto(url)
        phone.wait_for_selector("body[data-ready='true']")
        phone.select_option("#attribute-select", attribute)
        phone.fill("#top-k-input", "6")
        phone.set_input_files("#image-input", str(query))
        wait_for_results(phone, attribute)
        phone.locator("#query-preview").evaluate(  # the query, then the first results
            "el => window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 16)"
        )
        wait_for_images(phone)
        phone.screenshot(path=out / "page-mobile.png")

        shoot_composed(browser, url, query, explain_attribute, attribute, value, top_k, out)
        shoot_threshold(browser, url, query, threshold_attribute, min_precision, out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running service; else --checkpoint and --index are served")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--index", type=Path)
    parser.add_argument("--query", type=Path, help="the query image to upload (the page's screenshots)")
    parser.add_argument("--attribute", default="colour", help="attribute of the results screenshot")
    parser.add_argument(
        "--explain-attribute", default="neckline", help="attribute of the explanation screenshot"
    )
    parser.add_argument("--value", default="blue", help="value of --attribute in the composed query")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--threshold-attribute", default="colour", help="attribute of the threshold screenshot"
    )
    parser.add_argument(
        "--min-precision", type=float, default=0.99, help="precision of the threshold screenshot"
    )
    parser.add_argument(
        "--scan-report",
        type=Path,
        help="report.html of `asen scan`: screenshot it too (alone, without --query)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if (why := browser_missing()) is not None:
        raise SystemExit(why)
    if args.query is None and args.scan_report is None:
        parser.error("give --query (the page), --scan-report (a scan's report), or both")
    if args.scan_report is not None and not args.scan_report.is_file():
        parser.error(f"no such report: {args.scan_report}")
    args.out.mkdir(parents=True, exist_ok=True)
    names = []
    if args.scan_report is not None:
        with chromium() as browser:
            shoot_scan_report(browser, args.scan_report, args.out)
        names.append("scan-report.png")
    if args.query is not None:
        page_args = (
            args.query,
            args.attribute,
            args.explain_attribute,
            args.top_k,
            args.out,
            args.value,
            args.threshold_attribute,
            args.min_precision,
        )
        if args.url:
            shoot(args.url, *page_args)
        elif args.checkpoint is None or args.index is None:
            parser.error("give --url, or --checkpoint and --index")
        else:
            with serving(args.checkpoint, args.index) as url:
                shoot(url, *page_args)
        names += [
            "page-results.png",
            "page-explain.png",
            "page-mobile.png",
            "page-composed.png",
            "page-threshold.png",
        ]
    print(f"wrote {', '.join(str(args.out / n) for n in names)}")


if __name__ == "__main__":
    main()

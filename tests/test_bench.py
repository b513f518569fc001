"""The bench scripts run as documented, against the installed package, without sys.path edits."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import ROOT

SCRIPTS = sorted(p for p in (ROOT / "bench").glob("*.py") if "argparse" in p.read_text())
# run as modules: screenshots shares tests/helpers/browser.py, copies_latency bench/search_latency.py's server
RUN_AS_MODULE = {"screenshots.py", "copies_latency.py"}


def test_no_script_edits_sys_path() -> None:
    assert [p.name for p in (ROOT / "bench").glob("*.py") if "sys.path.insert" in p.read_text()] == []


@pytest.mark.slow  # one interpreter per bench script (fast suite under 10 min)
def test_every_script_answers_help() -> None:
    def run(path: Path) -> tuple[str, int, str]:
        command = ["-m", f"bench.{path.stem}"] if path.name in RUN_AS_MODULE else [str(path)]
        done = subprocess.run(
            [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        return path.name, done.returncode, done.stderr[-500:]

    with ThreadPoolExecutor(4) as pool:
        failed = [r for r in pool.map(run, SCRIPTS) if r[1] != 0]
    assert len(SCRIPTS) >= 8 and failed == []


def test_the_locustfile_loads_in_locust() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-800:]
    assert "CatalogueUser" in done.stdout

"""tools/audit.py's policy on pip-audit's JSON results (the results here are in pip-audit's own
format; from this network pip-audit reaches no vulnerability service, so a real vulnerable answer
cannot be produced on demand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import ROOT

VULN = {
    "id": "GHSA-aaaa-bbbb-cccc",
    "fix_versions": ["2.0"],
    "aliases": ["CVE-2026-0001"],
    "description": "x",
}


def _audit(
    tmp_path: Path, dependencies: list[dict[str, Any]], *args: str
) -> subprocess.CompletedProcess[str]:
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps({"dependencies": dependencies, "fixes": []}))
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "audit.py"), "--from-json", str(saved), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_known_vulnerability_fails(tmp_path: Path) -> None:
    result = _audit(
        tmp_path,
        [
            {"name": "lib", "version": "1.0", "vulns": [VULN]},
            {"name": "other", "version": "3.1", "vulns": []},
        ],
    )
    assert result.returncode == 1
    assert "lib==1.0: GHSA-aaaa-bbbb-cccc" in result.stdout and "fixed in 2.0" in result.stdout


def test_an_accepted_vulnerability_passes_by_alias(tmp_path: Path) -> None:
    result = _audit(
        tmp_path, [{"name": "lib", "version": "1.0", "vulns": [VULN]}], "--ignore", "CVE-2026-0001"
    )
    assert result.returncode == 0, result.stdout


def test_nothing_audited_is_exit_2_and_says_so(tmp_path: Path) -> None:
    skipped = [
        {"name": n, "skip_reason": "Dependency not found on PyPI and could not be audited"} for n in "abc"
    ]
    result = _audit(tmp_path, skipped)
    assert (
        result.returncode == 2
        and "NOTHING WAS AUDITED" in result.stdout
        and "audited 0 of 3" in result.stdout
    )


def test_unaudited_pins_are_counted_even_when_the_rest_pass(tmp_path: Path) -> None:
    result = _audit(
        tmp_path,
        [
            {"name": "lib", "version": "1.0", "vulns": []},
            {"name": "gone", "skip_reason": "Dependency not found on PyPI"},
        ],
    )
    assert (
        result.returncode == 0
        and "audited 1 of 2 pins" in result.stdout
        and "not audited: 1" in result.stdout
    )

"""The load test itself (bench/load_test.py: locust users over real HTTP, then the catalogue check
against the write ledger, before and after a restart), run briefly on the tiny model with value
prototypes, so that every add stores predicted tags the check must accept (and no more)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_a_short_load_run_passes_and_its_ledger_matches_the_catalogue(
    tagging_checkpoint: Path, tagged_index: Path, tmp_path: Path
) -> None:
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "load_test.py"),
            "--checkpoint",
            str(tagging_checkpoint),
            "--index",
            str(tagged_index),
            "--clients",
            "4",
            "--warmup",
            "2",
            "--duration",
            "8",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(report_file),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads(report_file.read_text())
    assert report["failures"] == [] and report["check"]["ok"] and report["check_after_restart"]["ok"]
    assert report["acked"]["add"] > 0 and report["locust"]["Aggregated"]["requests"] > 0
    assert report["check"]["expected_count"] == report["check"]["readyz_items"]
    # the tagged path was exercised: tags were promised and surviving adds' metadata compared, both times
    for check in (report["check"], report["check_after_restart"]):
        assert check["tags_promised"] and check["metadata_checked"] > 0, check

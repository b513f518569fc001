"""The OpenAPI schema describes the server: schemathesis's own CLI with every check (`--checks all`,
`positive_data_acceptance`, `negative_data_rejection`, `missing_required_header` and `ignored_auth`
included), every phase (examples, coverage, fuzzing, and the stateful phase that follows the links
from POST /items to the routes that read, change and delete an item), against a real server over a
real socket, finds no failure: no server error, no answer the schema does not describe (status
codes, content types, response bodies and headers, Allow, use after delete, resource availability),
no request the schema admits refused and none it refuses taken.

tests/helpers/schemathesis_hooks.py tells it what a schema cannot (image fields hold real images, cursors
are the service's) and, for a form carrying a file, which schemathesis cannot validate, checks each
case's label against the schema itself (docs/service.md, "OpenAPI")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.serving import ROOT, free_port, serving

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_failure(tagging_checkpoint: Path, tagged_index: Path, tmp_path: Path) -> None:
    index = Path(shutil.copytree(tagged_index, tmp_path / "index"))
    port = free_port()
    st = Path(sys.executable).parent / "st"
    with serving(
        ["serve", "--checkpoint", str(tagging_checkpoint), "--index", str(index), "--port", str(port)],
        {},
        port,
    ) as url:
        result = subprocess.run(
            [
                str(st),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "12",
                "--seed",
                "7",
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--max-failures",
                "20",
                "--no-color",
            ],
            cwd=ROOT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.helpers.schemathesis_hooks"},
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    report = result.stdout[-12000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout and "generated" in result.stdout, report

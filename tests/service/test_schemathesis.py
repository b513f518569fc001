"""The OpenAPI schema describes the server: schemathesis's own CLI, every phase (examples, coverage,
fuzzing, and the stateful phase that follows the links from POST /items to the routes that read,
change and delete an item), against a real server over a real socket, finds no server error and no
answer the schema does not describe (status codes, content types, response bodies and headers,
Allow, use after delete, resource availability). tests/schemathesis_hooks.py tells it what a schema
cannot: image fields hold real images, cursors are the service's.

Not run here, and why (docs/service.md, "OpenAPI"): the checks that judge which requests the schema
admits (`positive_data_acceptance`, `negative_data_rejection`, `missing_required_header`,
`ignored_auth`) still find cases: rules between form fields that a JSON schema of a multipart body
cannot carry as the generator reads them (an empty form field, an image part and an item id together),
and value limits the schema only approximates (64-bit integers in metadata)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.serving import ROOT, free_port, serving

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_failure(tagging_checkpoint: Path, tagged_index: Path, tmp_path: Path) -> None:
    index = Path(shutil.copytree(tagged_index, tmp_path / "index"))
    port = free_port()
    st = Path(sys.executable).parent / "st"
    with serving(["serve", "--checkpoint", str(tagging_checkpoint), "--index", str(index), "--port", str(port)],
                 {}, port) as url:
        result = subprocess.run(
            [str(st), "run", f"{url}/openapi.json", "--checks", "all", "--exclude-checks",
             "positive_data_acceptance,negative_data_rejection,missing_required_header,ignored_auth",
             "--max-examples", "12", "--seed", "7", "--workers", "1", "--request-timeout", "30", "--max-failures",
             "20", "--no-color"],
            cwd=ROOT, env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"}, capture_output=True,
            text=True, timeout=1200, check=False)
    report = result.stdout[-12000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout and "generated" in result.stdout, report

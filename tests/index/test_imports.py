"""The index package is numpy + faiss only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_index_pulls_in_no_torch_fastapi_or_model() -> None:
    code = (
        "import sys, index\n"
        "bad = [m for m in ('torch', 'torchvision', 'timm', 'fastapi', 'model', 'service') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"index imported {out.stdout.strip()}"


def test_no_source_file_imports_forbidden_packages() -> None:
    forbidden = re.compile(r"^\s*(import|from)\s+(torch|torchvision|timm|fastapi|model|service)\b", re.MULTILINE)
    for path in (ROOT / "index").glob("*.py"):
        assert not forbidden.search(path.read_text()), f"{path.name} imports a forbidden package"

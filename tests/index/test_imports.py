"""The index package is numpy + faiss only."""

from __future__ import annotations

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


def test_no_source_file_mentions_forbidden_packages() -> None:
    for path in (ROOT / "index").glob("*.py"):
        text = path.read_text()
        for forbidden in ("import torch", "from torch", "fastapi", "from model", "import model"):
            assert forbidden not in text, f"{path.name} mentions {forbidden!r}"

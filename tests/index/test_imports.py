"""The index package is numpy + faiss only (imports checked at run time: tests/test_layers.py)."""

from __future__ import annotations

import re

from tests.helpers import ROOT


def test_no_source_file_imports_forbidden_packages() -> None:
    forbidden = re.compile(
        r"^\s*(import|from)\s+(torch|torchvision|timm|fastapi|(?:asen_search\.)?(?:model|service))\b",
        re.MULTILINE,
    )
    for path in (ROOT / "index").rglob("*.py"):
        assert not forbidden.search(path.read_text()), f"{path.name} imports a forbidden package"

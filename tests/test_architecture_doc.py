"""docs/architecture.md stays true to the tree: every path its "Where a change goes" table names
exists (a bare file name in the folder of the path before it in the same row), and its "Tests" layout
lists every test folder there is."""

from __future__ import annotations

import re

from tests.helpers import ROOT

DOC = ROOT / "docs" / "architecture.md"


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _named_paths(row: str) -> list[str]:
    """The paths a table row names, in order: code spans that hold a folder or a file name."""
    spans = re.findall(r"`([^`]+)`", row)
    return [
        s
        for s in spans
        if re.fullmatch(r"[\w.<>-][\w./<>-]*", s)  # not a route such as /healthz
        and ("/" in s or re.search(r"\.(py|md|toml|yml)$", s))
    ]


def test_every_path_in_where_a_change_goes_exists() -> None:
    rows = [line for line in _section("Where a change goes").splitlines() if line.startswith("| ")][2:]
    assert len(rows) > 15
    checked, missing = 0, []
    for row in rows:
        folder = ROOT
        for name in _named_paths(row):
            if "/" in name:
                path = ROOT / name.rstrip("/")
                if "<" in name:  # a pattern such as service/api/routes/<resource>.py: its folder
                    path = path.parent
                folder = path if path.is_dir() else path.parent
            else:
                path = folder / name
            checked += 1
            if not path.exists():
                missing.append(f"{name} (in: {row[:60]}...)")
    assert checked > 30 and missing == []


def test_the_tests_layout_lists_every_test_folder() -> None:
    layout = _section("Tests")
    folders = sorted(
        p.relative_to(ROOT / "tests").as_posix()
        for p in (ROOT / "tests").rglob("*")
        if p.is_dir() and (p / "__init__.py").exists()
    )
    named = set(re.findall(r"^\s+([\w]+)/", layout, re.MULTILINE))
    assert [f for f in folders if f.split("/")[-1] not in named] == []


def test_a_missing_path_is_seen() -> None:
    """The check above can fail: a made-up file in a row is reported."""
    assert _named_paths("| x | `service/api/nowhere.py`, then `nothing.py` |") == [
        "service/api/nowhere.py",
        "nothing.py",
    ]
    assert not (ROOT / "service/api/nowhere.py").exists()

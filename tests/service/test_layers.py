"""The layers import one way (index never imports torch, model never imports fastapi, the offline
catalogue jobs never import the HTTP API), and everything is imported as `asen_search.*`."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("model", "index", "service")


def _modules(folder: str) -> list[str]:
    """Every module under a top-level folder, as its `asen_search.` name."""
    names = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__"):
            parts = parts[:-1]
        names.append(".".join(("asen_search", *parts)))
    return names


def _imported(modules: list[str], watched: tuple[str, ...]) -> list[str]:
    """Of `watched`, the modules in sys.modules after importing `modules` in a fresh interpreter
    started outside the checkout (so that only the installed `asen_search` can be imported)."""
    probe = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
             f"print(','.join(m for m in {watched!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_index_imports_no_torch_model_or_service() -> None:
    watched = ("torch", "fastapi", "asen_search.model", "asen_search.service")
    assert _imported(_modules("index"), watched) == []


def test_model_imports_no_web_framework_or_service() -> None:
    watched = ("fastapi", "starlette", "uvicorn", "prometheus_client", "asen_search.service")
    assert _imported(_modules("model"), watched) == []


def test_offline_jobs_and_search_import_no_http_api() -> None:
    """The catalogue build, its sources, the demo and the search functions work without the API."""
    modules = [*_modules("service/catalogue"), *_modules("service/operations")]
    assert _imported(modules, ("fastapi", "starlette", "asen_search.service.api")) == []


def test_every_import_uses_the_package_name() -> None:
    """`import model` would work in a checkout (the folder is on sys.path) but not when installed."""
    bare = re.compile(r"^\s*(?:from|import)\s+(?:model|index|service)\b", re.MULTILINE)
    files = [p for d in (*PACKAGE_DIRS, "tests", "bench", "tools") for p in (ROOT / d).rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in files if bare.search(p.read_text())]
    assert offenders == []


def test_every_folder_is_a_package() -> None:
    for folder in PACKAGE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            assert (path.parent / "__init__.py").exists(), f"{path.parent} has no __init__.py"


def test_modules_stay_small() -> None:
    """One job per module: service modules within 300 lines, the rest within 550."""
    for folder in PACKAGE_DIRS:
        limit = 300 if folder == "service" else 550
        for path in (ROOT / folder).rglob("*.py"):
            assert len(path.read_text().splitlines()) <= limit, f"{path.relative_to(ROOT)} is over {limit} lines"

"""The layers import one way (index never imports torch, model never imports fastapi, the offline
catalogue jobs never import the HTTP API), no modules import each other (no import circles, from the
static import graph), and everything is imported as `asen_search.*`."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

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
    probe = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(m for m in {watched!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_index_imports_no_torch_model_or_service() -> None:
    watched = ("torch", "fastapi", "asen_search.model", "asen_search.service")
    assert _imported(_modules("index"), watched) == []


def test_model_imports_no_web_framework_index_or_service() -> None:
    watched = (
        "fastapi",
        "starlette",
        "uvicorn",
        "prometheus_client",
        "asen_search.index",
        "asen_search.service",
    )
    assert _imported(_modules("model"), watched) == []


def test_offline_jobs_and_search_import_no_http_api() -> None:
    """The catalogue build, its sources, the demo and the search functions work without the API."""
    modules = [*_modules("service/jobs"), *_modules("service/operations")]
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


# ---------------------------------------------------------------- the static import graph
def _sources() -> dict[str, Path]:
    """Every module of the three layers and of the `asen_search/` folder itself (the modules below the
    layers, and the HTTP client), by `asen_search.` name; a package by its `__init__.py`."""
    paths = [p for folder in PACKAGE_DIRS for p in sorted((ROOT / folder).rglob("*.py"))]
    paths += sorted((ROOT / "asen_search").glob("*.py"))  # not rglob: its layer folders are links
    sources = {}
    for path in paths:
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[1:] if parts[0] == "asen_search" else parts
        sources[".".join(("asen_search", *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path
    return sources


def _import_graph() -> dict[str, set[str]]:
    """Module -> the `asen_search` modules it imports, from the source alone: every `import` and `from
    ... import` statement at any depth (at the top, inside functions and methods, and under `if
    TYPE_CHECKING:`, which never runs but still ties the two modules together: a circle through type
    hints is a circle of the design). `from package import name` counts as an import of the submodule
    `package.name` when that is a module, else of the package; relative imports are resolved."""
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in sources else base)
        graph[module] = {m for m in edges if m in sources and m != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & members))}" for m in component)


def test_the_graph_sees_every_kind_of_import() -> None:
    """The parser finds top-level, function-level, relative and TYPE_CHECKING imports."""
    graph = _import_graph()
    assert "asen_search.index.results" in graph["asen_search.index.interface"]  # from .results import
    assert "asen_search.model.nn.preprocess" in graph["asen_search.model.prototypes"]  # inside a function
    assert "asen_search.index.attribute_index" in graph["asen_search.index.composed"]  # if TYPE_CHECKING:
    assert "asen_search.service.jobs.scan_copies" in graph["asen_search.service.jobs.scan"]
    assert "asen_search.index.interface" in graph["asen_search.index"]  # from .interface import
    assert "asen_search.model.nn.asen" in graph["asen_search.model.checkpoint"]  # from a.b.c import d


def test_no_import_circles() -> None:
    """No two modules import each other, directly or through others, counting every import the
    graph above sees (function-level and TYPE_CHECKING ones included)."""
    graph = _import_graph()
    circles = [_describe(c, graph) for c in _cycles(graph)]
    assert not circles, "import circles:\n" + "\n".join(circles)


def _layer_shortcuts(
    importer_prefixes: tuple[str, ...], forbidden: tuple[str, ...], allowed_importers: tuple[str, ...] = ()
) -> list[str]:
    graph = _import_graph()
    return sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        for t in targets
        if m.startswith(importer_prefixes)
        and not m.startswith(allowed_importers)
        and (t in forbidden or t.startswith(tuple(f"{f}." for f in forbidden)))
    )


def test_the_modules_below_the_layers_import_none() -> None:
    """asen_search/fileio.py and asen_search/copy_score.py are used by model and index alike, so they
    import neither (nor service); neither does the HTTP client."""
    below = tuple(
        m for m, path in _sources().items() if path.parent == ROOT / "asen_search" and m != "asen_search"
    )
    layers = ("asen_search.model", "asen_search.index", "asen_search.service")
    shortcuts = _layer_shortcuts(below, layers)
    assert not shortcuts, "\n".join(shortcuts)


def test_model_never_imports_index_or_service() -> None:
    """Statically, imports inside functions included: model/ sits below index/'s users, beside index/."""
    shortcuts = _layer_shortcuts(("asen_search.model",), ("asen_search.index", "asen_search.service"))
    assert not shortcuts, "\n".join(shortcuts)


def test_index_never_imports_model_or_service() -> None:
    shortcuts = _layer_shortcuts(("asen_search.index",), ("asen_search.model", "asen_search.service"))
    assert not shortcuts, "\n".join(shortcuts)


def test_only_the_api_and_the_command_line_import_the_http_api() -> None:
    """service/jobs, service/operations and service/resources.py never import service/api, not
    even inside a function; the command line (service/cli/) is the one place that starts the server."""
    shortcuts = _layer_shortcuts(
        ("asen_search.service",),
        ("asen_search.service.api",),
        ("asen_search.service.api", "asen_search.service.cli"),
    )
    assert not shortcuts, "\n".join(shortcuts)

"""Write ``requirements.lock``: the exact versions ``make install`` installs, read from a virtualenv.

The set is the dependency closure of this project (``[project].dependencies`` plus every extra listed
in ``[project.optional-dependencies]`` that is asked for, ``test`` by default) as installed in the
running interpreter's environment: the same lines ``pip freeze --exclude-editable`` prints, without the
project itself and without tools that happen to sit in the virtualenv but that ``make install`` does not
install (anything added by hand). Environment markers are evaluated for this machine, so platform-only
wheels (torch's ``nvidia-*`` on Linux) are pinned as installed here; as constraints they are simply
unused elsewhere.

Run it with the virtualenv's Python after ``make install``::

    make lock        # = .venv/bin/python tools/lock_deps.py > requirements.lock

After a change of ``pyproject.toml`` that the old lock contradicts (a raised minimum), ``make install`` stops
on the conflict: install without the lock first (``.venv/bin/pip install -e '.[test]'``), then ``make lock``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # pragma: no cover - pip always vendors packaging
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent

HEADER = """\
# requirements.lock: the exact versions `make install` installs (dependencies of asen-search[{extras}],
# transitively, as resolved on Linux x86_64 / CPython 3.11). `make install` uses it as pip constraints.
# Regenerate after changing pyproject.toml:  make install && make lock   (tools/lock_deps.py; when the old
# lock conflicts with the change: .venv/bin/pip install -e '.[test]' first, then make lock).
# Audited by `make audit` (pip-audit via tools/audit.py); see docs/reliability.md, "Dependency audit".
"""


def canonical(name: str) -> str:
    """PEP 503 normalised project name: ``Jinja2`` -> ``jinja2``, ``pydantic_core`` -> ``pydantic-core``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, metadata.Distribution]:
    """Distributions importable from this interpreter, by canonical name (first on sys.path wins)."""
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist)
    return found


def closure(roots: list[str], dists: dict[str, metadata.Distribution]) -> dict[str, metadata.Distribution]:
    """Every installed distribution reachable from the requirement strings ``roots``.

    Markers are evaluated for this interpreter, with ``extra`` set to each extra a requirement asks for.
    A requirement that is not installed is an error: the lock would silently miss it.
    """
    seen: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo: list[tuple[str, frozenset[str]]] = []
    for line in roots:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append((req.name, frozenset(req.extras)))
    missing: list[str] = []
    while todo:
        name, extras = todo.pop()
        key = canonical(name)
        dist = dists.get(key)
        if dist is None:
            missing.append(name)
            continue
        seen[key] = dist
        for extra in {"", *extras}:
            if (key, extra) in done:
                continue
            done.add((key, extra))
            for line in dist.requires or []:
                req = Requirement(line)
                if req.marker is None:
                    wanted = extra == ""
                else:
                    wanted = req.marker.evaluate({"extra": extra})
                if wanted:
                    todo.append((req.name, frozenset(req.extras)))
    if missing:
        raise SystemExit(
            f"not installed in {sys.prefix}: {', '.join(sorted(set(missing)))} (run `make install` first)"
        )
    return seen


def main(argv: list[str] | None = None) -> int:
    """Print the lock file for the project's dependencies (and ``--extra`` extras) to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument(
        "--extra", action="append", help="optional-dependency group to include (default: test)"
    )
    args = parser.parse_args(argv)
    extras: list[str] = args.extra or ["test"]

    project = tomllib.loads(args.pyproject.read_text())["project"]
    roots = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            parser.error(f"no optional-dependency group {extra!r} in {args.pyproject}")
        roots += optional[extra]

    dists = closure(roots, installed())
    dists.pop(canonical(project["name"]), None)
    sys.stdout.write(HEADER.format(extras=",".join(extras)))
    for key in sorted(dists):
        dist = dists[key]
        sys.stdout.write(f"{dist.metadata['Name']}=={dist.version}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

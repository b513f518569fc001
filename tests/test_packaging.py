"""The distribution as a user gets it: the wheel, built from exactly what the Dockerfile copies into
the image, installed into a fresh virtual environment, claims only the `asen_search` import name and
runs `asen`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

GENERIC_NAMES = ("model", "index", "service")


def _docker_build_context(dest: Path) -> Path:
    """The files the Dockerfile COPYs before its `pip install .`, copied the way Docker copies them
    (symbolic links kept as links)."""
    dest.mkdir()
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    for line in text.splitlines():
        line = line.strip()
        if line.upper().startswith("COPY ") and "--from" not in line:
            *sources, _ = shlex.split(line[5:])
            for source in sources:
                path = ROOT / source
                if path.is_dir():
                    shutil.copytree(
                        path,
                        dest / source,
                        symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                    )
                else:
                    shutil.copy2(path, dest / source)
    return dest


def _dependencies_view(dest: Path) -> Path:
    """This interpreter's site-packages without this project (its editable install): the fresh venv
    borrows the installed dependencies through it instead of installing torch again."""
    dest.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("asen_search", "__editable__", "asen-search")):
            (dest / entry.name).symlink_to(entry)
    return dest


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("packaging")
    context = _docker_build_context(work / "context")
    wheels = work / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(wheels),
            str(context),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("asen_search-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "borrowed-dependencies.pth").write_text(f"{_dependencies_view(work / 'deps')}\n")
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return venv


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(list(args), cwd=venv, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_holds_one_top_level_package(fresh_venv: Path) -> None:
    (wheel,) = fresh_venv.parent.joinpath("wheels").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"asen_search"}
    assert "asen_search/service/api/static/index.html" in names


def test_asen_runs_from_the_fresh_venv(fresh_venv: Path) -> None:
    result = _run(fresh_venv, str(fresh_venv / "bin" / "asen"), "--help")
    assert result.returncode == 0, result.stderr
    for command in ("train", "eval", "index", "serve", "demo", "check"):
        assert command in result.stdout


def test_every_module_imports_from_the_wheel_and_no_generic_name_exists(fresh_venv: Path) -> None:
    modules = sorted(
        ".".join(("asen_search", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        for d in GENERIC_NAMES
        for p in (ROOT / d).rglob("*.py")
        if p.name != "__main__.py"
    )
    # the modules of the package folder itself: the HTTP client and the helpers below the layers
    modules += [
        f"asen_search.{p.stem}" for p in sorted((ROOT / "asen_search").glob("*.py")) if p.stem != "__init__"
    ]
    probe = (
        "import importlib, importlib.util, sys, asen_search\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(asen_search.__file__)\n"
        f"print([n for n in {GENERIC_NAMES!r} if importlib.util.find_spec(n) is not None])\n"
    )
    result = _run(fresh_venv, str(fresh_venv / "bin" / "python"), "-c", probe)
    assert result.returncode == 0, result.stderr
    location, generic = result.stdout.split("\n")[:2]
    assert location.startswith(str(fresh_venv)), f"imported {location}, not the installed wheel"
    assert generic == "[]"

"""What can be checked of the Docker files without a Docker engine: they parse, reference files
that exist, and their command, settings and health check match what the service really offers."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from index import CatalogueIndex
from service.app import create_app
from service.cli import build_parser
from service.settings import Settings
from tests.service.serving import free_port, read_only_mounts_allowed, serving, wait_ready

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296",
               "MALLOC_TOP_PAD_": "1073741824", "OMP_WAIT_POLICY": "PASSIVE"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _instruction(name: str) -> list[str]:
    return [args for instr, args in dockerfile() if instr == name]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _instruction("ENV"):
        env.update(dict(token.split("=", 1) for token in shlex.split(args)))
    return env


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _routes() -> set[str]:
    """Paths the app really serves (its OpenAPI schema; nothing is loaded to build it)."""
    return set(create_app(Settings(checkpoint=Path("unused.pt"), index=Path("unused"))).openapi()["paths"])


def _check_command(command: list[str]) -> None:
    assert command[0] == "asen", command
    build_parser().parse_args(command[1:])  # SystemExit if a flag or subcommand does not exist


def test_dockerfile_copies_existing_files_and_runs_the_real_command() -> None:
    for args in _instruction("COPY"):
        *sources, _ = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
    cmd = json.loads(_instruction("CMD")[-1])
    _check_command(cmd)
    user = _instruction("USER")[-1]
    assert user not in ("root", "0")
    env = _env()
    assert all(env.get(k) == v for k, v in RUNTIME_ENV.items()), "allocator settings of machine-notes.md"
    for key in env:
        if key.startswith("ASEN_"):
            assert key[5:].lower() in Settings.model_fields, f"{key} is not a service setting"
    torch_install = next(a for a in _instruction("RUN") if "torch==" in a)
    assert "download.pytorch.org/whl/cpu" in torch_install
    pins = re.findall(r'"(torch(?:vision)?==[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pins and all(pin in torch_install for pin in pins), "the same torch pins as pyproject.toml"


def test_healthchecks_probe_a_real_route() -> None:
    routes = _routes()
    health = _instruction("HEALTHCHECK")[-1]
    compose_test = _compose()["services"]["asen"]["healthcheck"]["test"]
    for text in (health, " ".join(compose_test)):
        paths = re.findall(r"https?://[^/'\"]+(/[\w/-]*)", text)
        assert paths == ["/readyz"], text
    assert "/readyz" in routes and "/healthz" in routes and "/metrics" in routes


def test_compose_file_matches_the_service() -> None:
    compose = _compose()
    service = compose["services"]["asen"]
    build = service["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    _check_command(service["command"])
    env = service["environment"]
    for key in env:
        if key.startswith("ASEN_"):
            assert key[5:].lower() in Settings.model_fields, f"{key} is not a service setting"
    assert all(str(env.get(k)) == v for k, v in RUNTIME_ENV.items())
    port = str(env["ASEN_PORT"])
    assert any(str(p).split(":")[-1] == port for p in service["ports"])
    assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert set(mounts.values()) <= set(compose["volumes"])
    for key in ("ASEN_CHECKPOINT", "ASEN_INDEX"):
        assert any(env[key].startswith(target + "/") for target in mounts), f"{key} is not on the volume"


def test_serve_help_lists_the_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    for flag in ("--checkpoint", "--index", "--host", "--port"):
        assert flag in out


def test_the_image_command_and_healthcheck_work_outside_docker(tiny_checkpoint: Path, index_dir: Path) -> None:
    """The container's CMD, configured only by its environment, answers the container's health check."""
    port = free_port()
    env = {**RUNTIME_ENV, "ASEN_CHECKPOINT": str(tiny_checkpoint), "ASEN_INDEX": str(index_dir), "ASEN_PORT": str(port)}
    cmd = json.loads(_instruction("CMD")[-1])
    with serving(cmd[1:], env, port):
        probe = json.loads(_instruction("HEALTHCHECK")[-1].split("CMD", 1)[1])
        assert probe[0] == "python"
        result = subprocess.run([sys.executable, *probe[1:]], env={"ASEN_PORT": str(port)}, capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stderr


def test_missing_settings_fail_clearly(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from service.cli import main

    monkeypatch.delenv("ASEN_CHECKPOINT", raising=False)
    monkeypatch.delenv("ASEN_INDEX", raising=False)
    assert main(["serve"]) == 2
    assert "ASEN_CHECKPOINT" in capsys.readouterr().err


def test_compose_runs_read_only_and_unprivileged() -> None:
    service = _compose()["services"]["asen"]
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    assert "no-new-privileges:true" in service["security_opt"] and service["cap_drop"] == ["ALL"]


def test_the_service_runs_on_a_read_only_root_filesystem(tiny_checkpoint: Path, index_dir: Path,
                                                         demo_dataset: Path) -> None:
    """As `read_only: true` runs it: everything read-only but the index volume (a private mount
    namespace: `unshare -m`, root remounted read-only). Searches, a logged write and the
    compaction at shutdown all work."""
    if not read_only_mounts_allowed():
        pytest.skip("this machine does not allow a private read-only mount namespace (unshare -m)")
    port = free_port()
    cmd = json.loads(_instruction("CMD")[-1])
    inner = (f"set -e\nmount --make-rprivate /\nmount --bind {shlex.quote(str(index_dir))} "
             f"{shlex.quote(str(index_dir))}\nmount -o remount,bind,ro /\nexec {shlex.quote(sys.executable)} -m "
             "service.cli " + " ".join(shlex.quote(c) for c in cmd[1:]))
    env = {**os.environ, **RUNTIME_ENV, "ASEN_CHECKPOINT": str(tiny_checkpoint), "ASEN_INDEX": str(index_dir),
           "ASEN_PORT": str(port), "ASEN_API_KEY": "k"}
    process = subprocess.Popen(["unshare", "-m", "sh", "-c", inner], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        image = (demo_dataset / "images" / "train" / "00002.jpg").read_bytes()
        added = httpx.post(f"{url}/items", data={"id": "ro-1"}, files={"image": ("a.jpg", image)},
                           headers={"X-API-Key": "k"}, timeout=30)
        assert added.status_code == 201, added.text
        search = httpx.post(f"{url}/search", data={"attribute": "colour"}, files={"image": ("a.jpg", image)},
                            timeout=30)
        assert search.status_code == 200 and search.json()["results"][0]["id"] == "ro-1"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal after a clean stop
    assert "Read-only file system" not in output and "Traceback" not in output, output
    assert (index_dir / "CURRENT").read_text().strip() == "v000002"  # compacted at shutdown
    assert "ro-1" in CatalogueIndex.load(index_dir)

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

from asen_search.index import FaissCatalogue
from asen_search.model.tuning import PROCESS_ENV, THREAD_ENV
from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import build_parser
from tests.helpers import ROOT
from tests.helpers.serving import free_port, read_only_mounts_allowed, serving, wait_ready

pytestmark = pytest.mark.docker

# The process tuning of docs/tuning.md: the allocator table asen applies itself, and passive OpenMP.
RUNTIME_ENV = PROCESS_ENV


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
    assert all(env.get(k) == v for k, v in RUNTIME_ENV.items()), "the process tuning of docs/tuning.md"
    for key in env:
        if key.startswith("ASEN_"):
            assert key[5:].lower() in Settings.model_fields, f"{key} is not a service setting"
    torch_install = next(a for a in _instruction("RUN") if "torch==" in a)
    args = dict(a.split("=", 1) for a in _instruction("ARG"))
    assert (
        args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
        and "$TORCH_INDEX_URL" in torch_install
    )
    for install in (a for a in _instruction("RUN") if "pip install" in a):  # offline builds: every install
        assert (
            "source=wheelhouse,target=/wheelhouse" in install
            and "--no-index --find-links /wheelhouse" in install
        )
    assert (ROOT / "wheelhouse").is_dir() and "WHEELHOUSE" in args
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


DEMO_ENV = {
    "ASEN_DEMO_SYNTH_ARGS",
    "ASEN_DEMO_TRAIN_ARGS",
    "ASEN_DEMO_RECIPE",
}  # read by `asen demo`, not the service


def test_compose_file_matches_the_service() -> None:
    compose = _compose()
    service = compose["services"]["asen"]
    build = service["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    _check_command(service["command"])
    env = service["environment"]
    for key in env:
        if key.startswith("ASEN_") and key not in DEMO_ENV:
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
    out = subprocess.run(
        [sys.executable, "-m", "asen_search.service.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    for flag in ("--checkpoint", "--index", "--host", "--port"):
        assert flag in out


def test_the_image_command_and_healthcheck_work_outside_docker(
    tiny_checkpoint: Path, index_dir: Path
) -> None:
    """The container's CMD, configured only by its environment, answers the container's health check."""
    port = free_port()
    env = {
        **RUNTIME_ENV,
        "ASEN_CHECKPOINT": str(tiny_checkpoint),
        "ASEN_INDEX": str(index_dir),
        "ASEN_PORT": str(port),
    }
    cmd = json.loads(_instruction("CMD")[-1])
    with serving(cmd[1:], env, port):
        probe = json.loads(_instruction("HEALTHCHECK")[-1].split("CMD", 1)[1])
        assert probe[0] == "python"
        result = subprocess.run(
            [sys.executable, *probe[1:]],
            env={"ASEN_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr


def test_missing_settings_fail_clearly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from asen_search.service.cli.main import main

    monkeypatch.delenv("ASEN_CHECKPOINT", raising=False)
    monkeypatch.delenv("ASEN_INDEX", raising=False)
    assert main(["serve"]) == 2
    assert "ASEN_CHECKPOINT" in capsys.readouterr().err


def test_compose_runs_read_only_and_unprivileged() -> None:
    service = _compose()["services"]["asen"]
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    assert "no-new-privileges:true" in service["security_opt"] and service["cap_drop"] == ["ALL"]


def test_the_service_runs_on_a_read_only_root_filesystem(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path
) -> None:
    """As `read_only: true` runs it: everything read-only but the index volume (a private mount
    namespace: `unshare -m`, root remounted read-only). Searches, a logged write and the
    compaction at shutdown all work."""
    if not read_only_mounts_allowed():
        pytest.skip("this machine does not allow a private read-only mount namespace (unshare -m)")
    port = free_port()
    cmd = json.loads(_instruction("CMD")[-1])
    inner = (
        f"set -e\nmount --make-rprivate /\nmount --bind {shlex.quote(str(index_dir))} "
        f"{shlex.quote(str(index_dir))}\nmount -o remount,bind,ro /\nexec {shlex.quote(sys.executable)} -m "
        "asen_search.service.cli.main " + " ".join(shlex.quote(c) for c in cmd[1:])
    )
    env = {
        **os.environ,
        **RUNTIME_ENV,
        "ASEN_CHECKPOINT": str(tiny_checkpoint),
        "ASEN_INDEX": str(index_dir),
        "ASEN_PORT": str(port),
        "ASEN_API_KEY": "k",
    }
    process = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", inner],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        image = (demo_dataset / "images" / "train" / "00002.jpg").read_bytes()
        added = httpx.post(
            f"{url}/items",
            data={"id": "ro-1"},
            files={"image": ("a.jpg", image)},
            headers={"X-API-Key": "k"},
            timeout=30,
        )
        assert added.status_code == 201, added.text
        search = httpx.post(
            f"{url}/search", data={"attribute": "colour"}, files={"image": ("a.jpg", image)}, timeout=30
        )
        assert search.status_code == 200 and search.json()["results"][0]["id"] == "ro-1"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode in (0, -signal.SIGTERM), (
        output
    )  # uvicorn re-raises the signal after a clean stop
    assert "Read-only file system" not in output and "Traceback" not in output, output
    assert (index_dir / "CURRENT").read_text().strip() == "v000002"  # compacted at shutdown
    assert "ro-1" in FaissCatalogue.load(index_dir)


# -- docker compose up: the init service, then the API service ------------------------------------
def _interpolate(value: object, env: dict[str, str]) -> str:
    """Compose's `${NAME:-default}` / `${NAME}` substitution."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), str(value)
    )


def _merge(base: dict, override: dict) -> dict:
    """A service of `docker compose` with an override file: environment by key, volumes by target,
    anything else replaced."""
    merged = {**base, **override}
    merged["environment"] = {**base.get("environment", {}), **override.get("environment", {})}
    volumes = {v.split(":")[1]: v for v in base.get("volumes", [])}
    volumes.update({v.split(":")[1]: v for v in override.get("volumes", [])})
    merged["volumes"] = list(volumes.values())
    return merged


def _on_volume(path: str, service: dict) -> bool:
    return any(path == v.split(":")[1] or path.startswith(v.split(":")[1] + "/") for v in service["volumes"])


def test_compose_up_runs_an_init_service_then_the_api() -> None:
    """`docker compose up` alone: init (same image, volume and environment) makes the demo on the
    volume, the API service waits for it to complete and serves what it made."""
    from asen_search.service.jobs.demo import demo_layout

    compose = _compose()
    init, api = compose["services"]["init"], compose["services"]["asen"]
    for key in ("build", "image", "volumes", "environment", "read_only", "tmpfs", "security_opt", "cap_drop"):
        assert init[key] == api[key], key
    assert api["depends_on"] == {"init": {"condition": "service_completed_successfully"}}
    assert init.get("restart") == "no" and "ports" not in init and "healthcheck" not in init
    _check_command(init["command"])
    args = build_parser().parse_args(init["command"][1:])
    assert args.command == "demo" and args.no_serve
    workdir = str(args.workdir)
    assert _on_volume(workdir, init)
    layout = demo_layout(Path(workdir))
    env = api["environment"]
    assert env["ASEN_CHECKPOINT"] == str(layout.checkpoint) and env["ASEN_INDEX"] == str(layout.index)
    assert set(DEMO_ENV) <= set(env), "the demo's size and recipe can be set from the host"
    # the start period covers loading the model and index (seconds), not the init's training
    start = api["healthcheck"]["start_period"]
    assert start.endswith("s") and 10 <= int(start[:-1]) <= 120


def test_compose_override_example_serves_own_files_and_skips_the_demo() -> None:
    compose = _compose()
    override = yaml.safe_load((ROOT / "compose.override.example.yml").read_text())["services"]
    init = _merge(compose["services"]["init"], override["init"])
    api = _merge(compose["services"]["asen"], override["asen"])
    assert init["command"][:2] == ["asen", "check"]
    _check_command(init["command"])
    for key in ("ASEN_CHECKPOINT", "ASEN_INDEX"):
        assert init["environment"][key] == api["environment"][key]
        assert _on_volume(init["environment"][key], api) and _on_volume(init["environment"][key], init)
        assert not init["environment"][key].startswith("/data/"), "not the demo's files"
    index_mount = next(v for v in api["volumes"] if v.split(":")[1] == api["environment"]["ASEN_INDEX"])
    assert not index_mount.endswith(":ro"), "the service writes its index directory"


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
    }


def _compose_process(
    service: dict, data: Path, env_in: dict[str, str], read_only: bool, cwd: Path
) -> tuple[list[str], dict]:
    """The service's command and environment as compose runs them, with /data on `data`: where this
    machine allows a private mount namespace, under a read-only root filesystem with a fresh tmpfs
    on /tmp (`read_only: true`, `tmpfs: [/tmp]`) and only the volume writable. What the process
    needs from the real /tmp (this checkout, its interpreter, the volume, when they live there) is
    bound back in, read-only but for the volume."""
    env = {k: _interpolate(v, env_in).replace("/data", str(data)) for k, v in service["environment"].items()}
    args = [a.replace("/data", str(data)) for a in service["command"][1:]]
    python = [sys.executable, "-m", "asen_search.service.cli", *args]
    if not read_only:
        return python, env
    tmp = Path("/tmp")
    keep = {data: "rw", cwd: "ro", ROOT: "ro", Path(sys.prefix): "ro", Path(sys.executable).parent: "ro"}
    lines = ["set -e", "mount --make-rprivate /", "mount --bind /tmp /mnt", "mount -t tmpfs tmpfs /tmp"]
    for path, mode in keep.items():
        if path.is_relative_to(tmp):
            quoted = shlex.quote(str(path))
            lines += [
                f"mkdir -p {quoted}",
                f"mount --bind {shlex.quote(str(Path('/mnt') / path.relative_to(tmp)))} {quoted}",
            ]
            if mode == "ro":
                lines.append(f"mount -o remount,bind,ro {quoted}")
    lines += ["mount -o remount,bind,ro /", "exec " + " ".join(shlex.quote(c) for c in python)]
    return ["unshare", "-m", "sh", "-c", "\n".join(lines)], env


@pytest.mark.slow  # trains the quick demo model inside the compose run (fast suite under 10 min)
def test_compose_init_then_api_commands_serve_the_demo(tmp_path: Path) -> None:
    """The init service's exact command and environment on a fresh, empty volume (a small demo, so
    it takes seconds), then the API service's: /readyz answers 200 and a search answers. The init
    command again changes nothing and returns at once."""
    compose = _compose()
    init, api = compose["services"]["init"], compose["services"]["asen"]
    data = tmp_path / "volume"
    data.mkdir()
    host_env = {
        "ASEN_DEMO_SYNTH_ARGS": "--train 48 --valid 24 --test 36 --seed 1",
        "ASEN_DEMO_TRAIN_ARGS": "--backbone tiny --global-size 64 --local-size 32 --embed-dim 16 "
        "--stage1-epochs 1 --stage2-epochs 1 --triplets 64 --batch-size 16",
    }
    read_only = read_only_mounts_allowed()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ASEN_")}
    workdir = tmp_path / "app"  # the image's WORKDIR holds no source: nothing is read from the cwd
    workdir.mkdir()
    command, env = _compose_process(init, data, host_env, read_only, workdir)
    first = subprocess.run(
        command,
        env={**base_env, **env, "PYTHONPATH": str(ROOT)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    for step in (
        "[1/4] demo dataset: drawing",
        "[2/4] demo model: training",
        "[3/4] demo index: encoding",
        "[4/4] ready",
    ):
        assert step in first.stdout, first.stdout  # the progress `docker compose logs init` shows
    assert "Read-only file system" not in first.stderr, first.stderr

    port = free_port()
    command, env = _compose_process(api, data, host_env, read_only, workdir)
    env["ASEN_PORT"] = str(port)  # the port the container publishes, free on this machine
    env["ASEN_HOST"] = "127.0.0.1"
    process = subprocess.Popen(
        command,
        env={**base_env, **env, "PYTHONPATH": str(ROOT)},
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        probe = api["healthcheck"]["test"]
        assert probe[:2] == ["CMD", "python"]
        assert probe[2] == "-c" and ":8000/" in probe[3]
        health = subprocess.run(
            [sys.executable, "-c", probe[3].replace(":8000/", f":{port}/")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert health.returncode == 0, health.stderr
        found = httpx.post(
            f"{url}/search", data={"attribute": "colour", "item_id": "test-00000", "top_k": "3"}, timeout=30
        )
        assert found.status_code == 200 and len(found.json()["results"]) == 3, found.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)

    before = _tree(data)
    command, env = _compose_process(init, data, host_env, read_only, workdir)
    again = subprocess.run(
        command,
        env={**base_env, **env, "PYTHONPATH": str(ROOT)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("cached)") == 3, again.stdout
    assert _tree(data) == before, "a second init changed the volume"


def test_makefile_exports_the_same_process_tuning() -> None:
    exports = dict(re.findall(r"^export (\w+) := (\S+)$", (ROOT / "Makefile").read_text(), re.M))
    assert {k: exports.get(k) for k in RUNTIME_ENV} == RUNTIME_ENV


def test_asen_sets_the_thread_settings_before_the_libraries_load() -> None:
    """`asen` without the environment of the Makefile or image still makes idle OpenMP and OpenBLAS
    threads sleep: the values are in its environment before torch, faiss or numpy is imported."""
    probe = (
        "import sys, os; import asen_search.service.cli.main; "
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == [THREAD_ENV["OMP_WAIT_POLICY"], THREAD_ENV["OPENBLAS_THREAD_TIMEOUT"]]
    order = (
        "import sys; from asen_search.model import tuning; "
        "print(sorted(m for m in ('numpy', 'torch', 'faiss') if m in sys.modules))"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", order], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        == "[]"
    ), "model/tuning.py must not load the libraries it tunes"


# -- secure by default: the image and compose listen beyond loopback, so writes wait for a key -----
def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **paths: Path) -> Settings:
    """Settings as the container's process reads this environment (none of ours leaks in)."""
    for key in [k for k in os.environ if k.startswith("ASEN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("ASEN_"):
            monkeypatch.setenv(key, value)
    return Settings(**paths) if paths else Settings()


def test_the_image_and_compose_refuse_writes_until_a_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from asen_search.service.api.auth import writes_refused

    assert writes_refused(_settings_from(_env(), monkeypatch))  # `docker run` of the image, no key
    compose = _compose()
    override = yaml.safe_load((ROOT / "compose.override.example.yml").read_text())["services"]
    for service in (compose["services"]["asen"], _merge(compose["services"]["asen"], override["asen"])):
        for shell, refused in (
            ({}, True),
            ({"ASEN_API_KEY": "k"}, False),
            ({"ASEN_ALLOW_OPEN_WRITES": "1"}, False),
            ({"ASEN_ALLOW_OPEN_WRITES": "0"}, True),
        ):
            env = {k: _interpolate(v, shell) for k, v in service["environment"].items()}
            assert writes_refused(_settings_from(env, monkeypatch)) is refused, shell
    for path in ("docker-compose.yml", "compose.override.example.yml"):  # the files say how to set the key
        text = (ROOT / path).read_text()
        assert (
            "403 writes_disabled" in text and "ASEN_API_KEY=" in text and "secrets.token_urlsafe" in text
        ), path


def test_compose_environment_serves_searches_and_refuses_writes_without_a_key(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path
) -> None:
    """The API service's environment as compose passes it from an empty shell (host 0.0.0.0, an empty
    ASEN_API_KEY), over a test client: searches answer, writes are 403 saying how to enable them;
    with ASEN_API_KEY from the shell, writes need it."""
    from fastapi.testclient import TestClient

    api = _compose()["services"]["asen"]
    image = {"image": ("a.jpg", (demo_dataset / "images" / "test" / "00002.jpg").read_bytes(), "image/jpeg")}
    search = {"attribute": "colour", "item_id": "test-00001", "top_k": "2"}
    for shell in ({}, {"ASEN_API_KEY": "compose-key"}):
        env = {k: _interpolate(v, shell) for k, v in api["environment"].items()}
        settings = _settings_from(env, monkeypatch, checkpoint=tiny_checkpoint, index=index_dir)
        with TestClient(create_app(settings)) as client:
            assert client.post("/search", data=search).status_code == 200
            refused = client.post("/items", data={"id": "c-1"}, files=image)
            if not shell:
                assert refused.status_code == 403 and refused.json()["error"] == "writes_disabled"
                assert "ASEN_API_KEY" in refused.json()["detail"]
                assert client.delete("/items/test-00003").status_code == 403
            else:
                assert refused.status_code == 401
                added = client.post(
                    "/items", data={"id": "c-1"}, files=image, headers={"X-API-Key": "compose-key"}
                )
                assert added.status_code == 201, added.text

"""The cluster files are checked against what the code offers: the compose `cluster` profile, the
nginx balancer and the Kubernetes examples (Deployment + Service + autoscaler, Milvus's Helm values,
the KubeRay RayJob). Commands parse with the real `asen` parser, settings are real settings, probes
are real routes, names and ports agree."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from asen_search.index.milvus import MilvusLocation
from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import build_parser
from tests.helpers import ROOT

K8S = ROOT / "deploy" / "kubernetes"


def _asen_commands(text: str) -> list[list[str]]:
    """Every `asen ...` command in a shell line (split on && and ||)."""
    return [
        shlex.split(part.strip()) for part in re.split(r"&&|\|\|", text) if part.strip().startswith("asen ")
    ]


def _check_asen(command: list[str]) -> Any:
    assert command[0] == "asen", command
    return build_parser().parse_args(command[1:])  # SystemExit on a flag or subcommand that does not exist


def _routes() -> set[str]:
    """The app's paths, from its OpenAPI schema (included routers are not listed in `app.routes`)."""
    return set(create_app(Settings(checkpoint=Path("x.pt"), index=Path("x"))).openapi()["paths"])


def test_compose_cluster_profile() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    cluster = {name for name, s in services.items() if "cluster" in s.get("profiles", [])}
    assert cluster == {"etcd", "minio", "milvus", "load", "replica", "balancer"}
    assert not {"init", "asen"} & cluster  # the default `up` is unchanged
    replica, load, milvus = services["replica"], services["load"], services["milvus"]
    location = MilvusLocation.parse(replica["environment"]["ASEN_INDEX"])
    assert location.uri == "http://milvus:19530"
    settings_fields = set(Settings.model_fields)
    assert all(
        k[5:].lower() in settings_fields
        for k in replica["environment"]
        if k.startswith("ASEN_") and not k.startswith("ASEN_DEMO_")
    )  # those are `asen demo`'s
    _check_asen(replica["command"])
    commands = _asen_commands(load["command"][-1])
    assert [c[1] for c in commands] == ["check", "index"]
    for command in commands:
        args = _check_asen(command)
        assert (
            getattr(args, "index", None) == replica["environment"]["ASEN_INDEX"]
            or getattr(args, "destination", None) == replica["environment"]["ASEN_INDEX"]
        )
    assert replica["depends_on"]["load"]["condition"] == "service_completed_successfully"
    assert load["depends_on"] == {
        "init": {"condition": "service_completed_successfully"},
        "milvus": {"condition": "service_healthy"},
    }
    assert "9091/healthz" in " ".join(milvus["healthcheck"]["test"])
    assert (
        milvus["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
        and milvus["environment"]["MINIO_ADDRESS"] == "minio:9000"
    )
    assert "readyz" in " ".join(replica["healthcheck"]["test"])
    assert set(compose["volumes"]) >= {"asen-data", "etcd-data", "minio-data", "milvus-data"}


def test_balancer_reaches_the_replicas_on_the_service_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    balancer, replica = compose["services"]["balancer"], compose["services"]["replica"]
    mount = next(v for v in balancer["volumes"] if v.endswith(":/etc/nginx/nginx.conf:ro"))
    conf = (ROOT / mount.split(":")[0]).read_text()
    assert f"server replica:{replica['environment']['ASEN_PORT']} resolve" in conf
    listen = re.search(r"listen (\d+);", conf)
    assert listen is not None and balancer["ports"] == [f"{listen.group(1)}:{listen.group(1)}"]
    body = re.search(r"client_max_body_size (\d+)m;", conf)
    assert (
        body is not None
        and int(body.group(1)) * 2**20 > Settings(checkpoint=Path("x"), index=Path("x")).max_request_bytes
    )


def test_kubernetes_service_deployment_and_autoscaler() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((K8S / "asen.yaml").read_text())}
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    _check_asen(container["command"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert all(k[5:].lower() in Settings.model_fields for k in env if k.startswith("ASEN_"))
    MilvusLocation.parse(env["ASEN_INDEX"])
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["http"] == int(env["ASEN_PORT"]) and service["spec"]["ports"][0]["targetPort"] == "http"
    routes = _routes()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in routes and container[probe]["httpGet"]["port"] == "http"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {str(Path(env["ASEN_CHECKPOINT"]).parent), env["ASEN_IMAGES_DIR"], "/tmp"} <= mounts


def test_rayjob_runs_real_commands_on_the_catalogue_the_replicas_serve() -> None:
    job = yaml.safe_load((K8S / "encode-rayjob.yaml").read_text())
    encode, load = _asen_commands(job["spec"]["entrypoint"])
    encode_args, load_args = _check_asen(encode), _check_asen(load)
    assert encode_args.command == "encode" and encode_args.ray == "auto"
    assert load_args.index_command == "load-shards" and Path(load_args.shards) == encode_args.out
    replicas = {
        e["name"]: e.get("value")
        for d in yaml.safe_load_all((K8S / "asen.yaml").read_text())
        if d["kind"] == "Deployment"
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert load_args.out == replicas["ASEN_INDEX"]
    milvus = yaml.safe_load((K8S / "milvus-values.yaml").read_text())
    assert MilvusLocation.parse(load_args.out).uri.endswith(f":{milvus['service']['port']}")
    assert "maxVectorFieldNum" in milvus["extraConfigFiles"]["user.yaml"]


def _settings_from(env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's settings as its process reads this environment (and nothing else of ours)."""
    for key in [k for k in os.environ if k.startswith("ASEN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("ASEN_") and value is not None:
            monkeypatch.setenv(key, value)
    return Settings()


def _interpolate(value: object, shell: dict[str, str]) -> str:
    """Compose's `${NAME:-default}` substitution."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: shell.get(m.group(1)) or (m.group(2) or ""), str(value)
    )


def test_kubernetes_refuses_writes_until_the_key_secret_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pods listen beyond loopback; the key comes from a Secret (never a literal in the file), and
    without the Secret the service starts but refuses writes rather than opening them."""
    from asen_search.service.api.auth import is_loopback, writes_refused

    docs = {d["kind"]: d for d in yaml.safe_load_all((K8S / "asen.yaml").read_text())}
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    entries = {e["name"]: e for e in container["env"]}
    env = {name: e.get("value") for name, e in entries.items()}
    assert not is_loopback(env["ASEN_HOST"])
    key = entries["ASEN_API_KEY"]
    assert "value" not in key and key["valueFrom"]["secretKeyRef"]["optional"] is True
    assert str(env.get("ASEN_ALLOW_OPEN_WRITES", "false")).lower() in ("false", "0")
    text = (K8S / "asen.yaml").read_text()
    assert "kubectl create secret generic " + key["valueFrom"]["secretKeyRef"]["name"] in text
    assert "403 writes_disabled" in text
    without = _settings_from(env, monkeypatch)
    assert without.api_key is None and writes_refused(without)
    with_secret = _settings_from({**env, "ASEN_API_KEY": "from-the-secret"}, monkeypatch)
    assert not writes_refused(with_secret)


def test_compose_replicas_refuse_writes_until_a_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from asen_search.service.api.auth import writes_refused

    replica = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["replica"]
    for shell, refused in (
        ({}, True),
        ({"ASEN_API_KEY": "k"}, False),
        ({"ASEN_ALLOW_OPEN_WRITES": "1"}, False),
    ):
        env = {k: _interpolate(v, shell) for k, v in replica["environment"].items()}
        assert writes_refused(_settings_from(env, monkeypatch)) is refused, shell

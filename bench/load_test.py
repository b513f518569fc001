"""Bounded load test of the real server: `asen serve` on loopback, locust users mixing image
searches, id searches, reranks, adds and deletes (bench/locustfile.py), then a check that the
catalogue holds exactly the acknowledged writes, before and after a clean restart.

    .venv/bin/python bench/load_test.py --checkpoint runs/default/best.pt --index /tmp/demo_index2 \\
        --duration 300 --clients 16 --json runs/load.json
    .venv/bin/python bench/load_test.py --checkpoint runs/default/best.pt --index /tmp/demo_index2 \\
        --duration 40 --warmup 10 --clients 16                    # a short smoke run

What it does:

- copies `--index` into a fresh work folder (the input index is never written) and starts
  `asen serve` on 127.0.0.1 and a free port, with the process tuning of docs/tuning.md, a
  generated API key (ASEN_API_KEY) and any `--env K=V`; it talks to no other server;
- runs `locust --headless` on bench/locustfile.py: `--clients` users started over `--warmup`
  seconds, then `--duration` seconds more; statistics are reset when the last user has started
  (`--reset-stats`), so locust's percentiles cover the measured part; its CSV files and HTML
  report go to the work folder; the request mix, the write ledger and the answer checks are the
  locustfile's;
- samples the server's RSS (VmRSS) after /readyz, at the end of the warm-up, every 10 s and at the end;
- afterwards GETs every id the ledger expects present (200) and absent (404), resolves the unknown
  ones, compares /readyz `items` and the `asen_catalogue_items` gauge with the expected count, then
  stops the server with SIGTERM, starts it again on the same folder and checks again;
- an added item's metadata must be what the server promises (`metadata_differences`): the fields
  sent, unchanged, plus, when the checkpoint has value prototypes (`GET /attributes` lists
  `value_search`), exactly one `predicted.<attribute>` naming one of that attribute's values and one
  `predicted.<attribute>.confidence` in [0, 1] per attribute (docs/service.md, `POST /tag`); nothing
  else. Every difference is printed with its item.

Exit status 1 on any 5xx, transport error, invalid answer, unexpected 404, catalogue mismatch,
server traceback or RSS growth over the limit; the work folder is then kept for inspection.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from asen_search.model.tuning import PROCESS_ENV  # the process tuning `asen serve` runs with (docs/tuning.md)

ROOT = Path(__file__).resolve().parents[1]

HOST = "127.0.0.1"
ROUTES = ("search-image", "search-id", "rerank", "add", "delete")
DEFAULT_MIX = "search-image=35,search-id=30,rerank=15,add=10,delete=10"
PRESENT, ABSENT, UNKNOWN = "present", "absent", "unknown"
RSS_EVERY_S = 10.0
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 90.0
LOG_PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception")
PREDICTED, CONFIDENCE = "predicted.", ".confidence"  # the tag keys writes add (docs/service.md, POST /tag)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB; (nan, nan) when it is gone."""
    values = {"VmRSS": float("nan"), "VmHWM": float("nan")}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (nan when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """`asen serve` in a subprocess (its own session, so Ctrl-C reaches only this script),
    bound to 127.0.0.1; its output goes to `log`."""

    def __init__(self, checkpoint: Path, index: Path, env: dict[str, str], log: Path) -> None:
        self.checkpoint, self.index, self.env, self.log = checkpoint, index, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> float:
        """Start and wait for /readyz; returns the seconds it took."""
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "asen_search.service.cli",
            "serve",
            "--checkpoint",
            str(self.checkpoint),
            "--index",
            str(self.index),
            "--host",
            HOST,
            "--port",
            str(port),
        ]
        started = time.monotonic()
        with open(self.log, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.url = f"http://{HOST}:{port}"
        while time.monotonic() - started < READY_TIMEOUT_S:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"server exited with {self.process.returncode} while starting; see {self.log}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2, trust_env=False).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.process.kill()
        raise SystemExit(f"server not ready in {READY_TIMEOUT_S:.0f} s; see {self.log}")

    def stop(self) -> dict[str, Any]:
        """SIGTERM and wait (SIGKILL after STOP_TIMEOUT_S): exit code and seconds taken."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            return {"returncode": code, "seconds": 0.0, "killed": False, "clean": False}
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        killed = False
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            killed = True
        code = self.process.returncode
        # uvicorn re-raises the SIGTERM it handled once it has shut down, so a clean stop exits -15 (or 0)
        return {
            "returncode": code,
            "seconds": round(time.monotonic() - started, 2),
            "killed": killed,
            "clean": not killed and code in (0, -signal.SIGTERM),
        }


def server_env(api_key: str, extra: list[str]) -> dict[str, str]:
    env = {**os.environ, **PROCESS_ENV, "ASEN_LOG_LEVEL": "warning"}
    for pair in extra:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants K=V, got {pair!r}")
        if key in ("ASEN_API_KEY", "ASEN_HOST", "ASEN_PORT", "ASEN_INDEX", "ASEN_CHECKPOINT"):
            raise SystemExit(f"--env {key} is set by this script (loopback only, its own key and index copy)")
        env[key] = value
    env["ASEN_API_KEY"] = api_key
    for key in ("ASEN_HOST", "ASEN_PORT", "ASEN_INDEX", "ASEN_CHECKPOINT"):
        env.pop(key, None)  # the command line names them
    return env


def metrics_value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def server_5xx(text: str) -> int:
    """5xx answers the server itself counted (asen_http_requests_total{status="5.."})."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("asen_http_requests_total{") and re.search(r'status="5\d\d"', line):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def log_problems(log: Path) -> list[str]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:300] for line in lines if LOG_PROBLEM.search(line)]


def catalogue_contents(index: Path) -> tuple[list[str], list[Path]]:
    """The ids of the index (its snapshot and write-ahead log) and the image files its items name."""
    from asen_search.index import FaissCatalogue
    from asen_search.service.jobs.item_images import IMAGE_KEY, stored_path

    catalogue = FaissCatalogue.load(index)
    ids = catalogue.ids()
    files = []
    for item_id in ids:
        path = stored_path(index, catalogue.get(item_id).metadata.get(IMAGE_KEY))
        if isinstance(path, Path) and path.is_file():  # not a URL the index build recorded
            files.append(path)
    return ids, files


def load_images(folder: Path | None, stored: list[Path], n: int = 24) -> tuple[list[bytes], str]:
    """Image bytes for queries and adds: --images, else the index's stored images, else
    data/demo/images/test, else freshly drawn garments."""

    def files_of(directory: Path) -> list[Path]:
        return sorted(p for p in directory.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))

    if folder is not None:
        files = files_of(folder)
        if not files:
            raise SystemExit(f"--images {folder}: no .jpg/.jpeg/.png files")
        return [p.read_bytes() for p in files[:n]], str(folder)
    if stored:
        chosen = random.Random(0).sample(sorted(set(stored)), min(n, len(set(stored))))
        return [p.read_bytes() for p in chosen], "the index's stored images"
    demo = ROOT / "data" / "demo" / "images" / "test"
    if demo.is_dir() and files_of(demo):
        return [p.read_bytes() for p in files_of(demo)[:n]], str(demo)
    from search_latency import query_images  # a sibling script: bench/ is sys.path[0] when this script runs

    return query_images(None, n), "drawn garments"


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if not sep or name not in ROUTES:
            raise SystemExit(f"--mix: want NAME=WEIGHT with NAME in {', '.join(ROUTES)}; got {part!r}")
        mix[name] = float(weight)
        if mix[name] < 0:
            raise SystemExit(f"--mix: negative weight for {name}")
    if sum(mix.values()) <= 0:
        raise SystemExit("--mix: all weights are 0")
    return {k: v for k, v in mix.items() if v > 0}


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


class RssSampler(threading.Thread):
    """VmRSS of the server every RSS_EVERY_S seconds, plus `sample` on demand."""

    def __init__(self, pid: int, t0: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.t0 = pid, t0
        self.samples: list[dict[str, Any]] = []
        self.done = threading.Event()

    def sample(self, label: str) -> None:
        rss, hwm = rss_mib(self.pid)
        self.samples.append(
            {
                "t_s": round(time.monotonic() - self.t0, 1),
                "label": label,
                "rss_mib": round(rss, 1),
                "hwm_mib": round(hwm, 1),
            }
        )

    def run(self) -> None:
        while not self.done.wait(RSS_EVERY_S):
            self.sample("periodic")


def rss_summary(
    samples: list[dict[str, Any]],
    warmup_end_s: float,
    limit_mib: float,
    limit_pct: float,
) -> dict[str, Any]:
    def first(label: str) -> float | None:
        return next((s["rss_mib"] for s in samples if s["label"] == label), None)

    start, warm, end = first("start"), first("warmup-end"), first("end")
    after = [
        s for s in samples if s["t_s"] >= warmup_end_s and s["label"] in ("warmup-end", "periodic", "end")
    ]
    slope = None
    if len(after) >= 3 and after[-1]["t_s"] > after[0]["t_s"]:
        slope = round(
            float(np.polyfit([s["t_s"] for s in after], [s["rss_mib"] for s in after], 1)[0]) * 60, 2
        )
    growth = None if warm is None or end is None else round(end - warm, 1)
    pct = None if growth is None or not warm else round(100 * growth / warm, 1)
    flagged = growth is not None and warm is not None and growth > max(limit_mib, warm * limit_pct / 100)
    return {
        "start_mib": start,
        "warmup_mib": warm,
        "end_mib": end,
        "peak_mib": max((s["hwm_mib"] for s in samples), default=None),
        "growth_after_warmup_mib": growth,
        "growth_after_warmup_pct": pct,
        "slope_mib_per_min": slope,
        "growth_flagged": flagged,
    }


def expected(originals: list[str], ledger: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(present, absent, unknown) ids; present includes every untouched original."""
    state, original_set = ledger["state"], set(originals)
    present = [i for i in originals if state.get(i, PRESENT) == PRESENT]
    present += [i for i, s in state.items() if s == PRESENT and i not in original_set]
    return (
        present,
        [i for i, s in state.items() if s == ABSENT],
        [i for i, s in state.items() if s == UNKNOWN],
    )


def promised_tags(attributes: Sequence[Mapping[str, Any]]) -> dict[str, list[str]] | None:
    """From `GET /attributes`: {attribute: the values its predicted tag may name (those with a
    prototype, `value_search`)} when the checkpoint has value prototypes, else None (writes add no tags)."""
    if not any(a.get("value_search") for a in attributes):
        return None
    return {str(a["name"]): [str(v) for v in a.get("value_search") or ()] for a in attributes}


def _json(value: Any) -> str:
    """A canonical JSON text: equal only for the same JSON value (1, 1.0 and true differ)."""
    return json.dumps(value, sort_keys=True)


def metadata_differences(
    got: Any, sent: Mapping[str, Any], tags: Mapping[str, Sequence[str]] | None
) -> list[str]:
    """How an added item's metadata as served (`GET /items/{id}`) differs from what the server
    promises for a write that sent `sent`; empty when it is exactly that. The promise: every sent
    field, unchanged, and, when `tags` is not None (the checkpoint has value prototypes; see
    `promised_tags`), per attribute exactly one `predicted.<attribute>` naming one of `tags[attribute]`
    and one `predicted.<attribute>.confidence`, a number in [0, 1]; no other key."""
    if not isinstance(got, dict):
        return [f"metadata is {_json(got)[:100]}, not an object"]
    problems = []
    for key, value in sent.items():
        if key not in got:
            problems.append(f"sent field {key!r} missing")
        elif _json(got[key]) != _json(value):
            problems.append(f"field {key!r}: sent {_json(value)}, got {_json(got[key])}")
    value_keys = {PREDICTED + attribute: attribute for attribute in tags or ()}
    confidence_keys = {PREDICTED + attribute + CONFIDENCE: attribute for attribute in tags or ()}
    for key in sorted(set(value_keys) | set(confidence_keys)):
        if key not in got and key not in sent:
            problems.append(f"predicted tag {key!r} missing")
    for key in sorted(k for k in got if k not in sent):
        value = got[key]
        if tags is not None and key in value_keys:
            allowed = tags[value_keys[key]]
            if not isinstance(value, str) or value not in allowed:
                problems.append(f"tag {key!r} is {_json(value)[:100]}, not one of the values {list(allowed)}")
        elif tags is not None and key in confidence_keys:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or not 0.0 <= value <= 1.0:
                problems.append(f"tag {key!r} is {_json(value)[:100]}, not a confidence in [0, 1]")
        else:
            problems.append(f"unexpected key {key!r} = {_json(value)[:100]}")
    return problems


def check_catalogue(
    url: str,
    originals: list[str],
    ledger: dict[str, Any],
    check_limit: int,
    seed: int,
) -> dict[str, Any]:
    """GET every id whose state is known (untouched originals: at most `check_limit`, sampled) and
    every unknown one; compare each added item's metadata with the promise (`metadata_differences`,
    the tags read from this server's `GET /attributes`) and the server's item count with the
    expected one."""
    missing, resurrected, wrong_metadata, errors = [], [], [], []
    try:
        tags = promised_tags(httpx.get(f"{url}/attributes", timeout=30, trust_env=False).json()["attributes"])
        tags_known = True
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        tags, tags_known = None, False  # no promise to compare with: an error, and no metadata comparison
        errors.append(f"GET /attributes: {type(exc).__name__}: {exc}")
    present, absent, unknown = expected(originals, ledger)
    touched = set(ledger["state"])
    untouched = [i for i in present if i not in touched]
    sampled = (
        untouched if len(untouched) <= check_limit else random.Random(seed).sample(untouched, check_limit)
    )
    to_check = [(i, PRESENT) for i in present if i in touched] + [(i, PRESENT) for i in sampled]
    to_check += [(i, ABSENT) for i in absent] + [(i, UNKNOWN) for i in unknown]
    local = threading.local()

    def get(pair: tuple[str, str]) -> tuple[str, str, int, Any]:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, timeout=60, trust_env=False)
        item_id, want = pair
        try:
            response = local.http.get(f"/items/{quote(item_id, safe='')}")
        except httpx.HTTPError as exc:
            return item_id, want, 0, f"{type(exc).__name__}: {exc}"
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else None
        )
        return item_id, want, response.status_code, body

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(get, to_check))
    sent = ledger["sent_metadata"]
    resolved: dict[str, str] = {}
    metadata_checked = 0
    for item_id, want, status, body in answers:
        if status not in (200, 404):
            errors.append(f"{item_id}: {status} {str(body)[:200]}")
            continue
        if want == UNKNOWN:
            resolved[item_id] = PRESENT if status == 200 else ABSENT
        elif want == PRESENT and status == 404:
            missing.append(item_id)
        elif want == ABSENT and status == 200:
            resurrected.append(item_id)
        if (
            tags_known and status == 200 and want != ABSENT and item_id in sent
        ):  # an unacknowledged add, if there, is whole
            metadata_checked += 1
            got = body.get("metadata") if isinstance(body, dict) else body
            if problems := metadata_differences(got, sent[item_id], tags):
                wrong_metadata.append(f"{item_id}: " + "; ".join(problems))
    expected_count = len(present) + sum(1 for s in resolved.values() if s == PRESENT)
    try:
        ready = httpx.get(f"{url}/readyz", timeout=30, trust_env=False).json()
        metrics_text = httpx.get(f"{url}/metrics", timeout=30, trust_env=False).text
    except httpx.HTTPError as exc:
        ready, metrics_text = {}, ""
        errors.append(f"/readyz or /metrics: {exc}")
    gauge = metrics_value(metrics_text, "asen_catalogue_items")
    count_ok = ready.get("items") == expected_count and (gauge is None or int(gauge) == expected_count)
    ok = not (missing or resurrected or wrong_metadata or errors) and count_ok
    return {
        "ok": ok,
        "checked": len(to_check),
        "metadata_checked": metadata_checked,
        "tags_promised": tags is not None,
        "expected_present": len(present),
        "expected_absent": len(absent),
        "unknown": len(unknown),
        "unknown_resolved": resolved,
        "originals_sampled": len(sampled),
        "expected_count": expected_count,
        "readyz_items": ready.get("items"),
        "gauge_items": gauge,
        "count_ok": count_ok,
        "missing": missing[:50],
        "resurrected": resurrected[:50],
        "wrong_metadata": wrong_metadata[:20],
        "errors": errors[:20],
        "totals": {
            "missing": len(missing),
            "resurrected": len(resurrected),
            "wrong_metadata": len(wrong_metadata),
            "errors": len(errors),
        },
        "server_5xx_counted": server_5xx(metrics_text),
    }


def differences(check: dict[str, Any]) -> list[str]:
    """Each difference a catalogue check found, naming its item (the first 50 or 20 of each kind)."""
    lines = [f"{i}: acknowledged present, but 404" for i in check["missing"]]
    lines += [f"{i}: should be gone, but still there" for i in check["resurrected"]]
    lines += [f"metadata of {line}" for line in check["wrong_metadata"]]
    lines += [f"error: {line}" for line in check["errors"]]
    if not check["count_ok"]:
        lines.append(
            f"item count: expected {check['expected_count']}, /readyz {check['readyz_items']}, "
            f"asen_catalogue_items {check['gauge_items']}"
        )
    shown = {"missing": 50, "resurrected": 50, "wrong_metadata": 20, "errors": 20}
    lines += [
        f"... and {n - shown[kind]} more {kind}" for kind, n in check["totals"].items() if n > shown[kind]
    ]
    return lines


def unknown_by_cause(ledger: dict[str, Any], check: dict[str, Any]) -> dict[str, dict[str, int]]:
    """For each cause of an unknown outcome ("add 504"), how many writes turned out applied or not."""
    out: dict[str, dict[str, int]] = {}
    for item_id, cause in sorted(ledger["unknown_cause"].items()):
        row = out.setdefault(cause, {PRESENT: 0, ABSENT: 0})
        resolved = check["unknown_resolved"].get(item_id)
        if resolved in row:
            row[resolved] += 1
    return out


def locust_stats(prefix: Path) -> dict[str, dict[str, Any]]:
    """Per route, locust's measured statistics (its `_stats.csv`): requests, failures, req/s, percentiles."""
    rows = {}
    with open(f"{prefix}_stats.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": round(float(row["Requests/s"]), 2),
                **{
                    f"p{q}_ms": float(row[f"{q}%"]) if row[f"{q}%"] != "N/A" else None
                    for q in ("50", "95", "99")
                },
                "max_ms": float(row["Max Response Time"]),
            }
    return rows


def run_locust(url: str, plan: Path, ledger: Path, prefix: Path, args: argparse.Namespace) -> int:
    spawn_rate = args.clients / args.warmup if args.warmup > 0 else args.clients
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "bench" / "locustfile.py"),
        "--headless",
        "--host",
        url,
        "--users",
        str(args.clients),
        "--spawn-rate",
        f"{spawn_rate:g}",
        "--run-time",
        f"{args.warmup + args.duration:g}s",
        "--reset-stats",
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--stop-timeout",
        "60",
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    env = {**os.environ, "ASEN_LOAD_PLAN": str(plan), "ASEN_LOAD_LEDGER": str(ledger)}
    return subprocess.run(command, env=env, check=False).returncode


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Load test: {report['clients']} users, {report['warmup_s']:.0f} s warm-up + {report['duration_s']:.0f} s "
        f"measured, catalogue of {report['items_at_start']} items, mix {report['mix']}; `{report['command']}`",
        "",
        "Latency and req/s: locust, after the warm-up; statuses: the whole run.",
        "",
        "| route | requests | failures | req/s | statuses | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for route, row in report["locust"].items():
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(report["statuses"].get(route, {}).items())) or "-"
        lines.append(
            f"| {route} | {row['requests']} | {row['failures']} | {row['rps']} | {statuses} | "
            f"{fmt(row['p50_ms'])} | {fmt(row['p95_ms'])} | {fmt(row['p99_ms'])} | {fmt(row['max_ms'])} |"
        )
    rss, first, second = report["rss"], report["check"], report["check_after_restart"]
    rows = [
        (
            "server RSS MiB: start / after warm-up / end / peak",
            " / ".join(fmt(rss[k]) for k in ("start_mib", "warmup_mib", "end_mib", "peak_mib")),
        ),
        (
            "RSS growth after warm-up MiB (%), MiB/min",
            f"{fmt(rss['growth_after_warmup_mib'])} ({fmt(rss['growth_after_warmup_pct'])}), {fmt(rss['slope_mib_per_min'])}",
        ),
        (
            "CPU s during the load: server (wall s, cores)",
            f"{report['server_cpu_s']} ({report['load_wall_s']}, {os.cpu_count()})",
        ),
        ("acknowledged adds / deletes", f"{report['acked']['add']} / {report['acked']['delete']}"),
        (
            "writes with unknown outcome (cause: present / absent)",
            str(first["unknown"])
            + "".join(
                f"; {cause}: {n[PRESENT]} / {n[ABSENT]}" for cause, n in report["unknown_by_cause"].items()
            ),
        ),
        (
            f"catalogue check (expected {first['expected_count']}, /readyz {first['readyz_items']})",
            "ok" if first["ok"] else "MISMATCH",
        ),
        (
            f"after SIGTERM (exit {report['stop_1'].get('returncode')}) + restart",
            "ok" if second["ok"] else "MISMATCH",
        ),
        (
            "anomalies / server log problems",
            f"{len(report['anomalies'])} / {len(report['server_log_problems'])}",
        ),
        ("verdict", "PASS" if not report["failures"] else "FAIL: " + "; ".join(report["failures"])),
    ]
    lines += ["", "| measure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True, help="index directory (copied; never written)")
    parser.add_argument(
        "--images",
        type=Path,
        help="folder of query/add images (default: the index's stored "
        "images, else data/demo/images/test, else drawn garments)",
    )
    parser.add_argument("--clients", type=int, default=16, help="locust users")
    parser.add_argument("--duration", type=float, default=300.0, help="measured seconds, after the warm-up")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds over which the users start")
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"route weights (default {DEFAULT_MIX})")
    parser.add_argument(
        "--check-limit",
        type=int,
        default=20_000,
        help="untouched original items to GET in the check (sampled beyond this)",
    )
    parser.add_argument(
        "--rss-growth-mib",
        type=float,
        default=100.0,
        help="flag RSS growth after warm-up above max(this, --rss-growth-pct)",
    )
    parser.add_argument("--rss-growth-pct", type=float, default=25.0)
    parser.add_argument(
        "--allow-503",
        action="store_true",
        help="do not fail on 503 answers (load shedding; for overload runs)",
    )
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="extra server environment")
    parser.add_argument(
        "--workdir", type=Path, help="where the index copy, logs and locust reports go (default: a temp dir)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder even when everything passed"
    )
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--clients and --duration must be positive, --warmup not negative")
    if not (args.index / "CURRENT").is_file():
        parser.error(f"--index {args.index}: not an index directory (no CURRENT)")
    mix = parse_mix(args.mix)
    api_key = secrets.token_urlsafe(24)
    env = server_env(api_key, args.env)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="asen-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    index = workdir / "index"
    if index.exists():
        raise SystemExit(f"{index} exists; give an empty --workdir")
    shutil.copytree(args.index, index, symlinks=True)
    originals, stored = catalogue_contents(index)
    if not originals:
        raise SystemExit("the index is empty: nothing to search or delete")
    images, image_source = load_images(args.images, stored)
    (workdir / "images").mkdir()
    image_files = []
    for n, data in enumerate(images):
        suffix = ".png" if data[:4] == b"\x89PNG" else ".jpg"
        image_files.append(workdir / "images" / f"{n:03d}{suffix}")
        image_files[-1].write_bytes(data)
    server = Server(args.checkpoint.resolve(), index, env, workdir / "server.log")
    print(
        f"work folder {workdir}; {len(originals)} items; {len(images)} images from {image_source}",
        file=sys.stderr,
        flush=True,
    )
    try:
        ready_s = server.start()
        ready = httpx.get(f"{server.url}/readyz", timeout=30, trust_env=False).json()
        plan = workdir / "plan.json"
        plan.write_text(
            json.dumps(
                {
                    "api_key": api_key,
                    "attributes": ready["attributes"],
                    "originals": originals,
                    "images": [str(p) for p in image_files],
                    "mix": mix,
                    "seed": args.seed,
                }
            )
        )
        t0 = time.monotonic()
        sampler = RssSampler(server.pid, t0)
        sampler.sample("start")
        sampler.start()
        timer = threading.Timer(args.warmup, sampler.sample, ("warmup-end",))
        timer.start()
        cpu_start = cpu_seconds(server.pid)
        print(
            f"server ready in {ready_s:.1f} s at {server.url}; locust: {args.clients} users for "
            f"{args.warmup:.0f} + {args.duration:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        locust_rc = run_locust(server.url, plan, workdir / "ledger.json", workdir / "locust", args)
        timer.cancel()
        sampler.sample("end")
        sampler.done.set()
        load_wall, server_cpu = time.monotonic() - t0, cpu_seconds(server.pid) - cpu_start
        ledger = json.loads((workdir / "ledger.json").read_text())
        print("checking the catalogue ...", file=sys.stderr, flush=True)
        check_1 = check_catalogue(server.url, originals, ledger, args.check_limit, args.seed)
        stop_1 = server.stop()
        server.start()
        check_2 = check_catalogue(server.url, originals, ledger, args.check_limit, args.seed)
    finally:
        server.stop()

    statuses = {route: {int(s): n for s, n in counts.items()} for route, counts in ledger["statuses"].items()}
    every = [(s, n) for counts in statuses.values() for s, n in counts.items()]
    n_5xx = sum(n for s, n in every if s >= 500 and not (args.allow_503 and s == 503))
    n_transport = sum(n for s, n in every if s == 0)
    rss = rss_summary(sampler.samples, args.warmup, args.rss_growth_mib, args.rss_growth_pct)
    flips = {
        i: (s, check_2["unknown_resolved"].get(i))
        for i, s in check_1["unknown_resolved"].items()
        if check_2["unknown_resolved"].get(i) != s
    }
    causes = unknown_by_cause(ledger, check_1)
    problems = log_problems(server.log)
    applied_503 = sum(
        row[PRESENT] if cause == "add 503" else row[ABSENT] if cause == "delete 503" else 0
        for cause, row in causes.items()
    )
    failures = [
        text
        for bad, text in (
            (n_5xx, f"{n_5xx} answers 5xx"),
            (n_transport, f"{n_transport} transport errors"),
            (locust_rc not in (0, 1), f"locust exited {locust_rc}"),
            (not check_1["ok"], "catalogue mismatch after the run: " + "; ".join(differences(check_1)[:1])),
            (
                not check_2["ok"],
                "catalogue mismatch after the restart: " + "; ".join(differences(check_2)[:1]),
            ),
            (flips, f"{len(flips)} unknown writes changed outcome across the restart"),
            (applied_503, f"{applied_503} writes answered 503 took effect anyway"),
            (ledger["anomalies"], f"{len(ledger['anomalies'])} anomalies (invalid answers, unexpected 404s)"),
            (rss["growth_flagged"], f"RSS grew {rss['growth_after_warmup_mib']} MiB after the warm-up"),
            (any("Traceback" in line for line in problems), "tracebacks in the server log"),
            (
                not stop_1.get("clean"),
                f"SIGTERM: exit {stop_1.get('returncode')}, killed {stop_1.get('killed')}",
            ),
        )
        if bad
    ]
    report = {
        "command": " ".join(sys.argv),
        "clients": args.clients,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "mix": args.mix,
        "seed": args.seed,
        "items_at_start": len(originals),
        "images": image_source,
        "ready_s": round(ready_s, 1),
        "locust": locust_stats(workdir / "locust"),
        "statuses": statuses,
        "load_wall_s": round(load_wall, 1),
        "server_cpu_s": round(server_cpu, 1),
        "rss": rss,
        "acked": ledger["acked"],
        "unknown_by_cause": causes,
        "check": check_1,
        "stop_1": stop_1,
        "check_after_restart": check_2,
        "unknown_flipped_across_restart": flips,
        "anomalies": ledger["anomalies"][:100],
        "server_log_problems": problems[:100],
        "failures": failures,
        "workdir": str(workdir),
    }
    print(markdown(report))
    for title, lines in (
        ("catalogue differences after the run", differences(check_1)),
        ("catalogue differences after the restart", differences(check_2)),
        ("anomalies", ledger["anomalies"]),
        ("server log problems", problems),
    ):
        if lines:
            print(
                f"\n{title} (first {min(20, len(lines))} of {len(lines)}):\n"
                + "\n".join(f"  {x}" for x in lines[:20])
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if failures or args.keep or args.workdir:
        print(f"\nwork folder kept: {workdir} (locust report: locust.html)", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

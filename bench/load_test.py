"""Bounded load test of the real server: `asen serve` on loopback, many concurrent clients mixing
image searches, id searches, reranks, adds and deletes, then a check that the catalogue holds
exactly the acknowledged writes, before and after a clean restart.

    python bench/load_test.py --checkpoint runs/default/best.pt --index /tmp/demo_index2 \\
        --duration 300 --clients 16 --json runs/load.json
    python bench/load_test.py --checkpoint runs/default/best.pt --index /tmp/demo_index2 \\
        --duration 40 --warmup 10 --clients 16                    # a short smoke run

What it does:

- copies `--index` into a fresh work folder (the input index is never written) and starts
  `asen serve` on 127.0.0.1 and a free port, with the allocator settings of docs/tuning.md,
  a generated API key (ASEN_API_KEY) and any `--env K=V`; it talks to no other server;
- runs `--clients` threads, each with its own connection, for `--warmup` + `--duration` seconds or
  `--max-requests` requests, whichever comes first; each request picks a route by `--mix`;
- adds use fresh ids `load-<client>-<n>`; a delete removes one of the client's own acknowledged
  adds, or (about one delete in ten, or when it has none) an original catalogue item no other client
  touches, so the expected final catalogue is known exactly. An add is acknowledged on 200/201, a
  delete on 200; other 4xx answers changed nothing; a 5xx or a transport failure leaves the write
  UNKNOWN (either outcome is accepted, and reported). Writes are never retried; on 429/503 with
  Retry-After the client waits (at most 5 s) before its next request;
- samples the server's RSS (VmRSS) after /readyz, at the end of the warm-up, every 10 s and at the end;
- afterwards GETs every id expected present (200, with the metadata sent) and absent (404), resolves
  the unknown ones, compares /readyz `items` and the `asen_catalogue_items` gauge with the expected
  count, then stops the server with SIGTERM, starts it again on the same folder and checks again.

Latency percentiles cover the measured part (after the warm-up); status counts cover the whole run.
Exit status 1 on any 5xx, transport error, invalid answer, unexpected 404, catalogue mismatch,
server traceback or RSS growth over the limit; the work folder is then kept for inspection.
"""
from __future__ import annotations

import argparse
import json
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
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from model.runtime import PROCESS_ENV  # noqa: E402 - the process tuning `asen serve` runs with (docs/tuning.md)

HOST = "127.0.0.1"
ROUTES = ("search-image", "search-id", "rerank", "add", "delete")
DEFAULT_MIX = "search-image=35,search-id=30,rerank=15,add=10,delete=10"
PRESENT, ABSENT, UNKNOWN = "present", "absent", "unknown"
RSS_EVERY_S = 10.0
MAX_BACKOFF_S = 5.0
REQUEST_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 90.0
LOG_PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception")


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------
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


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


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
        command = [sys.executable, "-m", "service.cli", "serve", "--checkpoint", str(self.checkpoint),
                   "--index", str(self.index), "--host", HOST, "--port", str(port)]
        started = time.monotonic()
        with open(self.log, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.url = f"http://{HOST}:{port}"
        while time.monotonic() - started < READY_TIMEOUT_S:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited with {self.process.returncode} while starting; see {self.log}")
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
        return {"returncode": code, "seconds": round(time.monotonic() - started, 2), "killed": killed,
                "clean": not killed and code in (0, -signal.SIGTERM)}


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


# --------------------------------------------------------------------------------------------
# what the clients know
# --------------------------------------------------------------------------------------------
@dataclass
class Record:
    """One request: `status` 0 is a transport failure (no answer)."""

    route: str
    status: int
    ms: float
    end_s: float  # since the load started
    measured: bool  # after the warm-up
    error: str = ""
    retry_after: bool = False  # the answer had a Retry-After header


@dataclass
class Ledger:
    """The writes and their outcomes, shared by the clients. Original items are deleted by at most
    one client (`claimed`), a client's adds only by that client, so every id's state is exact
    except after a 5xx or a transport failure (UNKNOWN)."""

    originals: list[str]
    state: dict[str, str] = field(default_factory=dict)  # every id a write touched
    sent_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    live_adds: list[str] = field(default_factory=list)  # acknowledged adds not deleted: query ids
    claimed: set[str] = field(default_factory=set)  # originals some client deletes (or deleted)
    delete_attempted: set[str] = field(default_factory=set)  # a 404 for these is expected
    unknown_cause: dict[str, str] = field(default_factory=dict)  # id -> "add 504", "delete 0", ...
    anomalies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def query_id(self, rng: random.Random) -> str:
        with self.lock:
            if self.live_adds and rng.random() < 0.2:
                return rng.choice(self.live_adds)
            return rng.choice(self.originals)

    def claim_original(self, rng: random.Random) -> str | None:
        with self.lock:
            for _ in range(50):
                item = rng.choice(self.originals)
                if item not in self.claimed:
                    self.claimed.add(item)
                    self.delete_attempted.add(item)
                    return item
        return None

    def note(self, text: str) -> None:
        with self.lock:
            self.anomalies.append(text)

    def unexpected_404(self, item_id: str) -> bool:
        """A query by `item_id` got 404: wrong unless a delete of it was attempted."""
        with self.lock:
            return item_id not in self.delete_attempted

    def expected(self) -> tuple[list[str], list[str], list[str]]:
        """(present, absent, unknown) ids; present includes every untouched original."""
        with self.lock:
            original_set = set(self.originals)
            present = [i for i in self.originals if self.state.get(i, PRESENT) == PRESENT]
            present += [i for i, s in self.state.items() if s == PRESENT and i not in original_set]
            absent = [i for i, s in self.state.items() if s == ABSENT]
            unknown = [i for i, s in self.state.items() if s == UNKNOWN]
        return present, absent, unknown


@dataclass
class Plan:
    """What every client shares: where, what to send, when to stop."""

    url: str
    api_key: str
    images: list[bytes]
    attributes: list[str]
    mix: dict[str, float]
    t0: float
    warmup_end: float
    deadline: float
    max_requests: int
    seed: int
    stop: threading.Event = field(default_factory=threading.Event)
    issued: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ticket(self) -> bool:
        """May one more request start? (count and time limits)"""
        with self.lock:
            if self.stop.is_set() or self.issued >= self.max_requests or time.monotonic() >= self.deadline:
                self.stop.set()
                return False
            self.issued += 1
            return True


def is_5xx(status: int) -> bool:
    return 500 <= status <= 599


def retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_BACKOFF_S, max(0.0, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


class Client:
    """One simulated client: its own connection, its own random stream and its own adds."""

    def __init__(self, number: int, plan: Plan, ledger: Ledger, records: list[Record], records_lock: threading.Lock,
                 ) -> None:
        self.number, self.plan, self.ledger = number, plan, ledger
        self.records, self.records_lock = records, records_lock
        self.rng = random.Random(plan.seed * 1000 + number)
        self.own_adds: list[str] = []  # acknowledged, not deleted
        self.added = 0
        self.routes = list(plan.mix)
        self.weights = [plan.mix[r] for r in self.routes]

    def run(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=self.plan.url, timeout=REQUEST_TIMEOUT_S, limits=limits, trust_env=False,
                          headers={"X-API-Key": self.plan.api_key}) as http:
            while self.plan.ticket():
                route = self.rng.choices(self.routes, self.weights)[0]
                pause = getattr(self, "_" + route.replace("-", "_"))(http)
                if pause > 0:
                    self.plan.stop.wait(min(pause, max(0.0, self.plan.deadline - time.monotonic())))

    # one request, timed and recorded -------------------------------------------------------
    def _send(self, route: str, http: httpx.Client, call: Callable[[], httpx.Response],
              ) -> tuple[httpx.Response | None, float]:
        """(response or None on a transport failure, seconds to wait before the next request)."""
        start = time.monotonic()
        response: httpx.Response | None = None
        error = ""
        try:
            response = call()
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        end = time.monotonic()
        status = 0 if response is None else response.status_code
        if response is not None and is_5xx(status):
            error = response.text[:300]
        record = Record(route, status, 1000 * (end - start), end - self.plan.t0, start >= self.plan.warmup_end, error,
                        response is not None and "retry-after" in response.headers)
        with self.records_lock:
            self.records.append(record)
        pause = retry_after(response) if response is not None and status in (429, 503) else 0.0
        return response, pause

    def _check(self, route: str, ok: bool, what: str) -> None:
        if not ok:
            self.ledger.note(f"invalid {route} answer: {what}")

    def _image(self) -> tuple[str, bytes, str]:
        data = self.rng.choice(self.plan.images)
        return ("q.png", data, "image/png") if data[:4] == b"\x89PNG" else ("q.jpg", data, "image/jpeg")

    # the routes -----------------------------------------------------------------------------
    def _search_image(self, http: httpx.Client) -> float:
        top_k = self.rng.choice((5, 10, 20, 50))
        form = {"attribute": self.rng.choice(self.plan.attributes), "top_k": str(top_k)}
        response, pause = self._send("search-image", http,
                                     lambda: http.post("/search", data=form, files={"image": self._image()}))
        if response is not None and response.status_code == 200:
            results = response.json().get("results")
            self._check("search-image", isinstance(results, list) and len(results) <= top_k,
                        f"{len(results or [])} results for top_k {top_k}")
        return pause

    def _search_id(self, http: httpx.Client) -> float:
        item_id = self.ledger.query_id(self.rng)
        top_k = self.rng.choice((5, 10, 20, 50))
        form = {"attribute": self.rng.choice(self.plan.attributes), "item_id": item_id, "top_k": str(top_k)}
        response, pause = self._send("search-id", http, lambda: http.post("/search", data=form))
        if response is not None and response.status_code == 200:
            results = response.json().get("results")
            ids = [hit.get("id") for hit in results or []]
            self._check("search-id", isinstance(results, list) and len(results) <= top_k and item_id not in ids,
                        f"query {item_id}: {len(ids)} results for top_k {top_k}, itself included: {item_id in ids}")
        elif response is not None and response.status_code == 404 and self.ledger.unexpected_404(item_id):
            self.ledger.note(f"search-id: 404 for {item_id}, which nobody tried to delete")
        return pause

    def _rerank(self, http: httpx.Client) -> float:
        candidates = [self.rng.choice(self.ledger.originals) for _ in range(20)]
        candidates += [self.ledger.query_id(self.rng) for _ in range(3)]
        missing = f"load-missing-{self.number}-{self.rng.randrange(10**9)}"
        candidates.append(missing)
        self.rng.shuffle(candidates)
        form: dict[str, Any] = {"attribute": self.rng.choice(self.plan.attributes), "candidates": candidates,
                                "weight": f"{self.rng.random():.3f}"}
        query_id = None
        if self.rng.random() < 0.5:
            query_id = form["item_id"] = self.ledger.query_id(self.rng)
            response, pause = self._send("rerank", http, lambda: http.post("/rerank", data=form))
        else:
            response, pause = self._send("rerank", http,
                                         lambda: http.post("/rerank", data=form, files={"image": self._image()}))
        if response is not None and response.status_code == 200:
            body = response.json()
            ranked = [hit.get("id") for hit in body.get("results", [])]
            unknown = body.get("unknown", [])
            unique = set(candidates)
            self._check("rerank", missing in unknown and set(ranked) <= unique and
                        len(ranked) + len(unknown) == len(unique) and len(set(ranked)) == len(ranked),
                        f"{len(ranked)} ranked + {len(unknown)} unknown of {len(unique)} candidates; "
                        f"{missing} in unknown: {missing in unknown}")
        elif response is not None and response.status_code == 404 and query_id is not None \
                and self.ledger.unexpected_404(query_id):
            self.ledger.note(f"rerank: 404 for query item {query_id}, which nobody tried to delete")
        return pause

    def _add(self, http: httpx.Client) -> float:
        item_id = f"load-{self.number}-{self.added}"
        self.added += 1
        metadata = {"source": "load", "client": self.number, "n": self.added - 1,
                    "category": self.rng.choice(("dress", "shirt", "coat"))}
        form = {"id": item_id, "metadata": json.dumps(metadata)}
        response, pause = self._send("add", http,
                                     lambda: http.post("/items", data=form, files={"image": self._image()}))
        status, route = 0 if response is None else response.status_code, "add"
        ledger = self.ledger
        with ledger.lock:
            ledger.sent_metadata[item_id] = metadata
            if status in (200, 201):
                ledger.state[item_id] = PRESENT
                ledger.live_adds.append(item_id)
                self.own_adds.append(item_id)
                if status == 200:
                    ledger.anomalies.append(f"add {item_id}: 200 (replaced) for a fresh id")
            elif status == 409:
                ledger.state[item_id] = UNKNOWN
                ledger.unknown_cause[item_id] = f"{route} {status}"
                ledger.anomalies.append(f"add {item_id}: 409 for a fresh id: {response.text[:200] if response else ''}")
            elif 400 <= status <= 499:
                ledger.state[item_id] = ABSENT  # refused: nothing changed
            else:
                ledger.state[item_id] = UNKNOWN
                ledger.unknown_cause[item_id] = f"{route} {status}"
        return pause

    def _delete(self, http: httpx.Client) -> float:
        own = bool(self.own_adds) and self.rng.random() < 0.9
        if own:
            item_id = self.own_adds.pop(self.rng.randrange(len(self.own_adds)))
            with self.ledger.lock:
                self.ledger.delete_attempted.add(item_id)
        else:
            claimed = self.ledger.claim_original(self.rng)
            if claimed is None:
                return self._add(http)
            item_id = claimed
        response, pause = self._send("delete", http, lambda: http.delete(f"/items/{quote(item_id, safe='')}"))
        status, route = 0 if response is None else response.status_code, "delete"
        ledger = self.ledger
        with ledger.lock:
            if item_id in ledger.live_adds:
                ledger.live_adds.remove(item_id)
            if status == 200:
                ledger.state[item_id] = ABSENT
            elif status == 404:
                ledger.state[item_id] = UNKNOWN
                ledger.unknown_cause[item_id] = f"{route} {status}"
                ledger.anomalies.append(f"delete {item_id}: 404, but it should be present")
            elif 400 <= status <= 499:
                ledger.state[item_id] = PRESENT  # refused: still there
                if own:
                    self.own_adds.append(item_id)
                    ledger.live_adds.append(item_id)
            else:
                ledger.state[item_id] = UNKNOWN
                ledger.unknown_cause[item_id] = f"{route} {status}"
        return pause


# --------------------------------------------------------------------------------------------
# memory, statistics, checks
# --------------------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """VmRSS of the server every RSS_EVERY_S seconds (plus `sample` on demand); prints progress."""

    def __init__(self, pid: int, plan: Plan, records: list[Record]) -> None:
        super().__init__(daemon=True)
        self.pid, self.plan, self.records = pid, plan, records
        self.samples: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def sample(self, label: str) -> dict[str, Any]:
        rss, hwm = rss_mib(self.pid)
        row = {"t_s": round(time.monotonic() - self.plan.t0, 1), "label": label, "rss_mib": round(rss, 1),
               "hwm_mib": round(hwm, 1)}
        with self.lock:
            self.samples.append(row)
        return row

    def run(self) -> None:
        last_count, last_t = 0, time.monotonic()
        while not self.done.wait(RSS_EVERY_S):
            row = self.sample("periodic")
            count, now = len(self.records), time.monotonic()
            errors = sum(1 for r in list(self.records) if r.status == 0 or is_5xx(r.status))
            print(f"  t={row['t_s']:6.1f}s  requests={count:6d}  {(count - last_count) / (now - last_t):6.1f} req/s  "
                  f"rss={row['rss_mib']:.0f} MiB  5xx+transport={errors}", file=sys.stderr, flush=True)
            last_count, last_t = count, now


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1),
            "max_ms": round(float(array.max()), 1)}


def summarise(records: list[Record], plan: Plan, window_s: float) -> dict[str, Any]:
    """Throughput, per-route latency (measured part) and status counts (whole run)."""
    measured = [r for r in records if r.measured]
    measure_start = plan.warmup_end - plan.t0
    measure_end = max((r.end_s for r in measured), default=measure_start)
    span = max(1e-9, measure_end - measure_start)
    windows = []
    edge = measure_start
    while edge + window_s <= measure_end + 1e-9:
        windows.append(sum(1 for r in measured if edge <= r.end_s < edge + window_s) / window_s)
        edge += window_s
    if not windows and measured:
        windows.append(len(measured) / span)
    routes = {}
    for route in ROUTES:
        mine = [r for r in records if r.route == route]
        timed = [r.ms for r in mine if r.measured and 200 <= r.status <= 299]
        everything = percentiles(r.ms for r in mine if r.measured and r.status != 0)
        routes[route] = {"requests": len(mine), "measured_2xx": len(timed), **percentiles(timed),
                         "all_answers": everything,
                         "statuses": dict(sorted(Counter(str(r.status) for r in mine).items()))}
    statuses = Counter(r.status for r in records)
    errors = [asdict(r) for r in records if r.status == 0 or is_5xx(r.status)]
    n_errors = len(errors)
    return {
        "requests": len(records), "measured_requests": len(measured), "measured_seconds": round(span, 1),
        "rps": round(len(measured) / span, 2) if measured else 0.0,
        "rps_window_s": window_s, "rps_window_min": round(min(windows), 2) if windows else None,
        "rps_window_max": round(max(windows), 2) if windows else None,
        "status_5xx": sum(n for s, n in statuses.items() if is_5xx(s)), "status_503": statuses.get(503, 0),
        "status_503_retry_after": sum(1 for r in records if r.status == 503 and r.retry_after),
        "status_504": statuses.get(504, 0),
        "status_429": statuses.get(429, 0), "transport_errors": statuses.get(0, 0),
        "refused_503_ms": percentiles(r.ms for r in records if r.status == 503),
        "routes": routes, "n_errors": n_errors, "errors": errors[:50],
    }


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


def check_catalogue(url: str, ledger: Ledger, check_limit: int, seed: int) -> dict[str, Any]:
    """GET every id whose state is known (untouched originals: at most `check_limit`, sampled) and
    every unknown one; compare the server's item count with the expected one."""
    present, absent, unknown = ledger.expected()
    touched = set(ledger.state)
    untouched = [i for i in present if i not in touched]
    sampled = untouched
    if len(untouched) > check_limit:
        sampled = random.Random(seed).sample(untouched, check_limit)
    to_check = [(i, PRESENT) for i in present if i in touched] + [(i, PRESENT) for i in sampled]
    to_check += [(i, ABSENT) for i in absent] + [(i, UNKNOWN) for i in unknown]
    local = threading.local()
    opened: list[httpx.Client] = []

    def get(pair: tuple[str, str]) -> tuple[str, str, int, Any]:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, timeout=60, trust_env=False)
            opened.append(local.http)
        item_id, want = pair
        try:
            response = local.http.get(f"/items/{quote(item_id, safe='')}")
        except httpx.HTTPError as exc:
            return item_id, want, 0, f"{type(exc).__name__}: {exc}"
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
        return item_id, want, response.status_code, body

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(get, to_check))
    for http in opened:
        http.close()
    missing, resurrected, wrong_metadata, errors = [], [], [], []
    sent = ledger.sent_metadata
    resolved: dict[str, str] = {}
    for item_id, want, status, body in answers:
        if status not in (200, 404):
            errors.append(f"{item_id}: {status} {str(body)[:200]}")
        elif want == UNKNOWN:
            resolved[item_id] = PRESENT if status == 200 else ABSENT
        elif want == PRESENT and status == 404:
            missing.append(item_id)
        elif want == ABSENT and status == 200:
            resurrected.append(item_id)
        elif want == PRESENT and item_id in sent and body.get("metadata") != sent[item_id]:
            wrong_metadata.append(f"{item_id}: got {body.get('metadata')}, sent {sent[item_id]}")
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
    return {"ok": ok, "checked": len(to_check), "expected_present": len(present), "expected_absent": len(absent),
            "unknown": len(unknown), "unknown_resolved": resolved, "originals_sampled": len(sampled),
            "originals_untouched": len(untouched), "expected_count": expected_count,
            "readyz_items": ready.get("items"), "gauge_items": gauge, "count_ok": count_ok,
            "missing": missing[:50], "n_missing": len(missing), "resurrected": resurrected[:50],
            "n_resurrected": len(resurrected), "wrong_metadata": wrong_metadata[:20],
            "n_wrong_metadata": len(wrong_metadata), "errors": errors[:20],
            "server_5xx_counted": server_5xx(metrics_text)}


def unknown_by_cause(ledger: Ledger, check: dict[str, Any]) -> dict[str, dict[str, int]]:
    """For each cause of an unknown outcome ("add 504"), how many writes turned out applied or not."""
    out: dict[str, dict[str, int]] = {}
    for item_id, cause in sorted(ledger.unknown_cause.items()):
        row = out.setdefault(cause, {PRESENT: 0, ABSENT: 0})
        resolved = check["unknown_resolved"].get(item_id)
        if resolved in row:
            row[resolved] += 1
    return out


def log_problems(log: Path) -> list[str]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:300] for line in lines if LOG_PROBLEM.search(line)]


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def catalogue_contents(index: Path) -> tuple[list[str], list[Path]]:
    """The ids of the index (its snapshot and write-ahead log) and the image files its items name."""
    from index import CatalogueIndex
    from service.item_images import IMAGE_KEY, stored_path

    catalogue = CatalogueIndex.load(index)
    ids = catalogue.ids()
    files = []
    for item_id in ids:
        path = stored_path(index, catalogue.get(item_id).metadata.get(IMAGE_KEY))
        if path is not None and path.is_file():
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
    from search_latency import query_images  # bench/ is on sys.path when this script runs

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


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables, ready to paste."""
    load, rss, writes, cpu = report["load"], report["rss"], report["writes"], report["cpu"]
    first, second, stop = report["check"], report["check_after_restart"], report["stop_1"]
    title = (f"Load test: {report['clients']} clients, {report['warmup_s']:.0f} s warm-up + "
             f"{report['duration_s']:.0f} s measured, catalogue of {report['items_at_start']} items, "
             f"mix {report['mix']}; `{report['command']}`")
    lines = [title, "", "Latency: 2xx answers after the warm-up; statuses: the whole run.", "",
             "| route | requests | statuses | p50 ms | p95 ms | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|"]
    for route, row in load["routes"].items():
        statuses = " ".join(f"{s}:{n}" for s, n in row["statuses"].items()) or "-"
        lines.append(f"| {route} | {row['requests']} | {statuses} | {fmt(row['p50_ms'])} | {fmt(row['p95_ms'])} | "
                     f"{fmt(row['p99_ms'])} | {fmt(row['max_ms'])} |")
    verdict = "PASS" if not report["failures"] else "FAIL: " + "; ".join(report["failures"])
    unknown_line = str(writes["unknown"]) + "".join(
        f"; {cause}: {n[PRESENT]} / {n[ABSENT]}" for cause, n in writes["unknown_by_cause"].items())
    rss_line = " / ".join(fmt(rss[k]) for k in ("start_mib", "warmup_mib", "end_mib", "after_restart_mib"))
    growth_line = (f"{fmt(rss['growth_after_warmup_mib'])} MiB ({fmt(rss['growth_after_warmup_pct'])} %), "
                   f"{fmt(rss['slope_mib_per_min'])} MiB/min; peak (VmHWM) {fmt(rss['peak_mib'])} MiB")
    restart_name = (f"after SIGTERM ({'clean' if stop['clean'] else 'NOT CLEAN'}: exit {stop['returncode']}, "
                    f"{stop['seconds']} s) + restart ({report['restart_s']:.1f} s)")
    check_name = (f"catalogue check (expected {first['expected_count']}, /readyz {first['readyz_items']}, "
                  f"gauge {fmt(first['gauge_items'])})")
    rows = [
        ("requests (whole run / measured)", f"{load['requests']} / {load['measured_requests']}"),
        (f"req/s held (measured, {load['measured_seconds']:.0f} s)", f"{load['rps']:.2f}"),
        (f"req/s per {load['rps_window_s']:.0f} s window, min / max",
         f"{fmt(load['rps_window_min'])} / {fmt(load['rps_window_max'])}"),
        ("CPU s during the load: server / this script (wall s, cores)",
         f"{cpu['server_cpu_s']} / {cpu['load_script_cpu_s']} ({cpu['load_wall_s']}, {cpu['cores']})"),
        ("5xx / transport errors", f"{load['status_5xx']} / {load['transport_errors']}"),
        ("503 (with Retry-After) / 504 / 429",
         f"{load['status_503']} ({load['status_503_retry_after']}) / {load['status_504']} / {load['status_429']}"),
        ("time to a 503 answer, p50 / p99 / max ms",
         " / ".join("-" if load["refused_503_ms"].get(k) is None else f"{load['refused_503_ms'][k]:.1f}"
                    for k in ("p50_ms", "p99_ms", "max_ms"))),
        ("server RSS MiB: start / after warm-up / end / after restart", rss_line),
        ("RSS growth after warm-up", growth_line),
        ("index folder MiB: start / end", f"{report['index_mib_start']:.1f} / {report['index_mib_end']:.1f}"),
        ("acknowledged adds / deletes", f"{writes['acked_adds']} / {writes['acked_deletes']}"),
        ("writes with unknown outcome (cause: resolved present / absent)", unknown_line),
        (check_name, "ok" if first["ok"] else "MISMATCH"),
        (restart_name, "ok" if second["ok"] else "MISMATCH"),
        ("anomalies / server log problems", f"{len(report['anomalies'])} / {len(report['server_log_problems'])}"),
        ("verdict", verdict),
    ]
    lines += ["", "| measure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    return "\n".join(lines)


def rss_summary(samples: list[dict[str, Any]], warmup_end_s: float, limit_mib: float, limit_pct: float,
                ) -> dict[str, Any]:
    def first(label: str) -> float | None:
        return next((s["rss_mib"] for s in samples if s["label"] == label), None)

    start, warm, end = first("start"), first("warmup-end"), first("end")
    after = [s for s in samples if s["t_s"] >= warmup_end_s and s["label"] in ("warmup-end", "periodic", "end")]
    slope = None
    if len(after) >= 3 and after[-1]["t_s"] > after[0]["t_s"]:
        slope = round(float(np.polyfit([s["t_s"] for s in after], [s["rss_mib"] for s in after], 1)[0]) * 60, 2)
    growth = None if warm is None or end is None else round(end - warm, 1)
    pct = None if growth is None or not warm else round(100 * growth / warm, 1)
    flagged = growth is not None and growth > max(limit_mib, warm * limit_pct / 100)  # type: ignore[operator]
    return {"start_mib": start, "warmup_mib": warm, "end_mib": end, "peak_mib": max((s["hwm_mib"] for s in samples),
            default=None), "growth_after_warmup_mib": growth, "growth_after_warmup_pct": pct,
            "slope_mib_per_min": slope, "growth_flagged": flagged, "samples": samples}


# --------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True, help="index directory (copied; never written)")
    parser.add_argument("--images", type=Path, help="folder of query/add images (default: the index's stored "
                        "images, else data/demo/images/test, else drawn garments)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=300.0, help="measured seconds, after the warm-up")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of load before measuring")
    parser.add_argument("--max-requests", type=int, default=200_000, help="hard limit on requests in all")
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"route weights (default {DEFAULT_MIX})")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per throughput window")
    parser.add_argument("--check-limit", type=int, default=20_000,
                        help="untouched original items to GET in the check (sampled beyond this)")
    parser.add_argument("--rss-growth-mib", type=float, default=100.0,
                        help="flag RSS growth after warm-up above max(this, --rss-growth-pct)")
    parser.add_argument("--rss-growth-pct", type=float, default=25.0)
    parser.add_argument("--allow-503", action="store_true",
                        help="do not fail on 503 answers with Retry-After (load shedding; for overload runs)")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="extra server environment")
    parser.add_argument("--workdir", type=Path, help="where the index copy and server log go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder even when everything passed")
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.max_requests < 1:
        parser.error("--clients, --duration and --max-requests must be positive, --warmup not negative")
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
    index_bytes_start = folder_bytes(index)
    originals, stored = catalogue_contents(index)
    if not originals:
        raise SystemExit("the index is empty: nothing to search or delete")
    images, image_source = load_images(args.images, stored)
    server = Server(args.checkpoint.resolve(), index, env, workdir / "server.log")
    print(f"work folder {workdir}; {len(originals)} items; {len(images)} images from {image_source}",
          file=sys.stderr, flush=True)

    ledger = Ledger(originals)
    notes: list[str] = []
    records: list[Record] = []
    stop_1: dict[str, Any] = {}
    stop_2: dict[str, Any] = {}
    try:
        ready_s = server.start()
        ready = httpx.get(f"{server.url}/readyz", timeout=30, trust_env=False).json()
        if ready["items"] != len(originals):
            ledger.note(f"/readyz says {ready['items']} items, the index copy holds {len(originals)}")
        t0 = time.monotonic()
        plan = Plan(server.url, api_key, images, list(ready["attributes"]), mix, t0, t0 + args.warmup,
                    t0 + args.warmup + args.duration, args.max_requests, args.seed)
        sampler = RssSampler(server.pid, plan, records)
        sampler.sample("start")
        sampler.start()
        cpu_start = (cpu_seconds(server.pid), time.process_time())
        print(f"server ready in {ready_s:.1f} s at {server.url}; {args.clients} clients for {args.warmup:.0f} + "
              f"{args.duration:.0f} s", file=sys.stderr, flush=True)
        records_lock = threading.Lock()
        clients = [Client(n, plan, ledger, records, records_lock) for n in range(args.clients)]
        threads = [threading.Thread(target=c.run, name=f"client-{c.number}", daemon=True) for c in clients]
        for thread in threads:
            thread.start()
        if not plan.stop.wait(max(0.0, plan.warmup_end - time.monotonic())):
            sampler.sample("warmup-end")
        plan.stop.wait(max(0.0, plan.deadline - time.monotonic()))
        plan.stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_S + 10)
        sampler.sample("end")
        sampler.done.set()
        load_wall = time.monotonic() - t0
        cpu = {"load_wall_s": round(load_wall, 1),
               "server_cpu_s": round(cpu_seconds(server.pid) - cpu_start[0], 1),
               "load_script_cpu_s": round(time.process_time() - cpu_start[1], 1), "cores": os.cpu_count()}
        if not any(s["label"] == "warmup-end" for s in sampler.samples):  # --max-requests came first
            notes.append("the run ended (--max-requests) before the warm-up did: every request counts as measured")
            plan.warmup_end = plan.t0
            for record in records:
                record.measured = True
        load = summarise(records, plan, args.window)
        print("checking the catalogue ...", file=sys.stderr, flush=True)
        check_1 = check_catalogue(server.url, ledger, args.check_limit, args.seed)
        stop_1 = server.stop()
        restart_s = server.start()
        rss_restart = rss_mib(server.pid)[0]
        check_2 = check_catalogue(server.url, ledger, args.check_limit, args.seed)
    finally:
        stop_2 = server.stop()

    rss = rss_summary(sampler.samples, args.warmup, args.rss_growth_mib, args.rss_growth_pct)
    rss["after_restart_mib"] = round(rss_restart, 1)
    _, absent, unknown = ledger.expected()
    acked_adds = sum(1 for r in records if r.route == "add" and r.status in (200, 201))
    acked_deletes = sum(1 for r in records if r.route == "delete" and r.status == 200)
    flips = {i: (s, check_2["unknown_resolved"].get(i)) for i, s in check_1["unknown_resolved"].items()
             if check_2["unknown_resolved"].get(i) != s}
    problems = log_problems(server.log)
    failures = []
    excused = load["status_503_retry_after"] if args.allow_503 else 0
    if load["status_5xx"] > excused:
        failures.append(f"{load['status_5xx']} answers 5xx" + (f" ({excused} 503 excused)" if excused else ""))
    if load["transport_errors"]:
        failures.append(f"{load['transport_errors']} transport errors")
    if not check_1["ok"]:
        failures.append("catalogue mismatch after the run")
    if not check_2["ok"]:
        failures.append("catalogue mismatch after the restart")
    if flips:
        failures.append(f"{len(flips)} unknown writes changed outcome across the restart")
    applied_503 = sum(row[PRESENT] if cause == "add 503" else row[ABSENT] if cause == "delete 503" else 0
                      for cause, row in unknown_by_cause(ledger, check_1).items())
    if applied_503:
        failures.append(f"{applied_503} writes answered 503 took effect anyway")
    if ledger.anomalies:
        failures.append(f"{len(ledger.anomalies)} anomalies")
    if rss["growth_flagged"]:
        failures.append(f"RSS grew {rss['growth_after_warmup_mib']} MiB after the warm-up")
    if any("Traceback" in line for line in problems):
        failures.append("tracebacks in the server log")
    if not stop_1.get("clean"):
        failures.append(f"SIGTERM: exit {stop_1.get('returncode')}, killed {stop_1.get('killed')}")
    report = {
        "command": " ".join(sys.argv), "clients": args.clients, "warmup_s": args.warmup, "duration_s": args.duration,
        "max_requests": args.max_requests, "mix": args.mix, "seed": args.seed, "items_at_start": len(originals),
        "images": f"{len(images)} from {image_source}", "server_env_extra": args.env, "ready_s": round(ready_s, 1),
        "load": load, "cpu": cpu, "rss": rss, "index_mib_start": index_bytes_start / 2**20,
        "index_mib_end": folder_bytes(index) / 2**20,
        "writes": {"acked_adds": acked_adds, "acked_deletes": acked_deletes, "absent_ids": len(absent),
                   "unknown": len(unknown), "unknown_by_cause": unknown_by_cause(ledger, check_1),
                   "original_deletes_claimed": len(ledger.claimed)},
        "check": check_1, "stop_1": stop_1, "restart_s": round(restart_s, 1), "check_after_restart": check_2,
        "unknown_flipped_across_restart": flips, "stop_2": stop_2, "anomalies": ledger.anomalies[:100],
        "server_log_problems": problems[:100], "notes": notes, "failures": failures, "workdir": str(workdir),
    }
    print(markdown(report))
    error_lines = [f"{e['route']} {e['status']} at {e['end_s']:.1f}s: {e['error']}" for e in load["errors"]]
    for title, lines, total in (("notes", notes, len(notes)), ("anomalies", ledger.anomalies, len(ledger.anomalies)),
                                ("server log problems", problems, len(problems)),
                                ("5xx / transport errors", error_lines, load["n_errors"])):
        if lines:
            print(f"\n{title} (first {min(20, len(lines))} of {total}):")
            print("\n".join(f"  {line}" for line in lines[:20]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if failures or args.keep or args.workdir:
        print(f"\nwork folder kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Acknowledged means on disk: the real server's system calls, traced with strace, show that each
write's log record is written and fsynced before its response is sent, and that every new file
and rename in the index directory is followed by an fsync of its directory before the write that
made it is acknowledged (or, for a compaction, before the process exits).

SIGKILL tests cannot see a missing fsync (the page cache survives the kill); this one can: take
out any `os.fsync` on the write path and it fails.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import image_bytes
from tests.service.serving import ROOT, free_port, wait_ready


@pytest.fixture(autouse=True)
def _strace_installed() -> None:
    """A missing strace fails (never skips) the only test that sees a missing fsync."""
    assert shutil.which("strace"), "strace is missing: `make install` installs it (apt-get install strace)"

_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")


@dataclass
class Call:
    """One system call: where its start and its end stand in the trace, its name and text."""

    name: str
    start: int
    end: int
    text: str


def parse_trace(lines: list[str]) -> list[Call]:
    """Calls of `strace -f` output, joining `<unfinished ...>` lines with their `resumed` ends."""
    calls: list[Call] = []
    open_calls: dict[tuple[str, str], Call] = {}
    for n, line in enumerate(lines):
        match = _LINE.match(line)
        if not match:
            continue
        pid, resumed, name, rest = match.groups()
        if resumed:
            call = open_calls.pop((pid, resumed), None)
            if call is not None:
                call.end, call.text = n, call.text + rest
            continue
        call = Call(name, n, n, name + "(" + rest)
        if rest.endswith("<unfinished ...>"):
            open_calls[(pid, name)] = call
        calls.append(call)
    return calls


def _fd_path(text: str) -> str:
    """The path strace -y shows for a call's first argument: `fsync(7</x/wal-v000001.log>)`."""
    match = re.match(r"\w+\(\d+<([^>]*)>", text)
    return match.group(1) if match else ""


def _is_socket_response(call: Call) -> bool:
    return call.name in ("write", "sendto", "sendmsg", "writev") and "<socket:" in call.text and '"HTTP/1.1 ' in call.text


def _fsyncs(calls: list[Call], path_test) -> list[Call]:  # noqa: ANN001
    return [c for c in calls if c.name in ("fsync", "fdatasync") and path_test(_fd_path(c.text)) and "= 0" in c.text]


def _new_names(calls: list[Call], root: Path) -> list[tuple[Call, Path]]:
    """Each call that made a new name under `root`: renames, mkdirs and files created."""
    made = []
    for c in calls:
        if "= 0" not in c.text and not re.search(r"= \d+<", c.text):
            continue
        strings = re.findall(r'"([^"]*)"', c.text)
        if c.name in ("rename", "renameat", "renameat2") and strings:
            made.append((c, Path(strings[-1])))
        elif c.name in ("mkdir", "mkdirat") and strings:
            made.append((c, Path(strings[0])))
        elif c.name == "openat" and "O_CREAT" in c.text and strings:
            made.append((c, Path(_fd_path(c.text.split("= ", 1)[-1].join(["x(", ")"])) or strings[0])))
    return [(c, p) for c, p in made if str(p).startswith(str(root)) and p.name != "LOCK"]


def _traced_server(tmp_path: Path, checkpoint: Path, index: Path, port: int) -> tuple[subprocess.Popen, Path]:
    trace = tmp_path / "trace.txt"
    command = ["strace", "-f", "-y", "-qq", "-s", "48", "-o", str(trace), "-e",
               "trace=fsync,fdatasync,write,writev,sendto,sendmsg,recvfrom,read,rename,renameat,renameat2,mkdir,"
               "mkdirat,openat", sys.executable, "-m", "asen_search.service.cli", "serve", "--checkpoint", str(checkpoint),
               "--index", str(index), "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "ASEN_API_KEY": ""}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, trace


def _stop(process: subprocess.Popen) -> str:
    """SIGTERM to the traced server (a clean stop compacts: a snapshot, a new log); strace exits
    with it. Killed if that takes too long."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        for pid in children.read_text().split():
            os.kill(int(pid), signal.SIGTERM)
        return process.communicate(timeout=120)[0]
    except (OSError, subprocess.TimeoutExpired):
        for pid in (children.read_text().split() if children.exists() else []):
            os.kill(int(pid), signal.SIGKILL)
        process.kill()
        return process.communicate()[0]


def test_writes_are_fsynced_before_they_are_acknowledged(tmp_path: Path, tiny_checkpoint: Path, index_dir: Path,
                                                         demo_dataset: Path) -> None:
    port = free_port()
    process, trace = _traced_server(tmp_path, tiny_checkpoint, index_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, ready_s=180)
        picture = image_bytes(demo_dataset / "images" / "train" / "00004.jpg")
        added = httpx.post(f"{url}/items", data={"id": "traced"}, files={"image": ("a.jpg", picture)}, timeout=60)
        assert added.status_code == 201, added.text
        deleted = httpx.delete(f"{url}/items/test-00002", timeout=60)
        assert deleted.status_code == 200, deleted.text
    finally:
        output = _stop(process)
    assert "compacted" in output, output
    lines = trace.read_text().splitlines()
    calls = parse_trace(lines)

    def is_log(path: str) -> bool:
        return bool(re.search(r"/wal-v\d+\.log$", path))

    # 1. each write request: log record written, then fsynced, then the response sent
    requests = [c for c in calls if c.name in ("recvfrom", "read") and "<socket:" in c.text
                and ('"POST /items' in c.text or '"DELETE /items' in c.text)]
    assert len(requests) == 2, "both write requests are in the trace"
    responses = [c for c in calls if _is_socket_response(c)]
    for request in requests:
        connection = _fd_path(request.text)  # socket:[inode]
        response = next(r for r in responses if r.start > request.end and _fd_path(r.text) == connection)
        assert '"HTTP/1.1 20' in response.text, response.text
        appends = [c for c in calls if c.name in ("write", "writev") and is_log(_fd_path(c.text))
                   and request.end < c.start < response.start]
        assert appends, f"no log record written between {request.text[:60]} and its response"
        synced = [f for f in _fsyncs(calls, is_log) if appends[-1].end < f.start and f.end < response.start]
        assert synced, (f"the log record of {request.text[:60]} was not fsynced before the response was sent "
                        f"(trace lines {appends[-1].start}..{response.start})")

    # 2. every new name in the index directory (uploaded image, images/, snapshot, CURRENT, new log)
    #    is followed by an fsync of its directory before the next response, the next new name in
    #    that directory (so each step of a commit is durable before the next one), or the end
    made = _new_names(calls, index_dir.resolve())
    kinds = {("image" if "/images/" in str(p) else "log" if p.name.startswith("wal-") else
              "snapshot" if re.match(r"v\d+$", p.name) else p.name) for _, p in made}
    assert {"image", "log", "snapshot", "CURRENT", "images"} <= kinds, kinds
    for call, path in made:
        if any(".tmp" in part for part in path.parts):
            continue  # a temporary name or inside a temporary directory: made durable by the rename (checked)
        parent = str(path.parent)
        later = [r.start for r in responses if r.start > call.end]
        later += [c.start for c, q in made if str(q.parent) == parent and c.start > call.end]
        deadline = min(later, default=len(lines))
        dir_syncs = [f for f in _fsyncs(calls, lambda p, parent=parent: p == parent)
                     if call.end < f.start and f.end < deadline]
        assert dir_syncs, (f"{call.name} of {path} (trace line {call.start}) is not followed by an fsync of {parent} "
                           f"before line {deadline}")

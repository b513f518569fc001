"""Acknowledged means on disk: the real server's system calls, traced with strace, show that

1. each write's log record is written and fsynced before its response is sent;
2. every new name in the index directory is followed by an fsync of its directory before the write
   that made it is acknowledged, before the next name made in that directory, before a truncation
   there (a kept copy of cut bytes is durable before the bytes go) or, for a compaction, before
   the process exits; a name made inside a temporary directory (the files of a snapshot) is made
   durable by an fsync of that directory before the rename that publishes it;
3. every file the server creates in the index directory (the snapshot files of the compaction,
   `CURRENT` through its temporary file, the uploaded image through its temporary file, the new
   log, the kept copy of a torn log tail) has its CONTENT fsynced, on an fd of the file's own
   path, after its last write and before the rename that publishes it (the file's or its
   directory's) and before the next write's acknowledgement.

The traced run starts on an index whose log has a torn tail (cut with a kept copy), uploads an
item's image (a new `images/` directory), deletes an item and stops with SIGTERM, which compacts
(a snapshot, `CURRENT`, a new log).

SIGKILL tests cannot see a missing fsync (the page cache survives the kill); this one can: take
out any `os.fsync` or `fsync_path` on these write paths and it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers.models import image_bytes
from tests.helpers.serving import ROOT, free_port, wait_ready


@pytest.fixture(autouse=True)
def _strace_installed() -> None:
    """A missing strace fails (never skips) the only test that sees a missing fsync."""
    assert shutil.which("strace"), "strace is missing: `make install` installs it (apt-get install strace)"


_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")
_WRITES = ("write", "writev", "pwrite64", "pwritev", "pwritev2")  # the calls that put bytes in a file
_CHANGES = (*_WRITES, "ftruncate")  # ... or change its content otherwise
_RENAMES = ("rename", "renameat", "renameat2")
_TORN_TAIL = b"AWL1\x2a\x00"  # the first 6 bytes of a frame header: an append killed mid-write


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


def _real(path: str) -> Path:
    """A path as strace -y shows fds (symbolic links resolved), for one passed as a string."""
    return Path(os.path.realpath(path))


def _is_socket_response(call: Call) -> bool:
    return (
        call.name in ("write", "sendto", "sendmsg", "writev")
        and "<socket:" in call.text
        and '"HTTP/1.1 ' in call.text
    )


def _fsyncs(calls: list[Call], path_test: Callable[[str], bool]) -> list[Call]:
    return [
        c
        for c in calls
        if c.name in ("fsync", "fdatasync") and path_test(_fd_path(c.text)) and "= 0" in c.text
    ]


def _succeeded(call: Call) -> bool:
    return "= 0" in call.text or bool(re.search(r"= \d+<", call.text))


def _created(call: Call) -> Path | None:
    """The file a successful `openat(..., O_CREAT)` opened (maybe made), as its fd shows it."""
    if call.name != "openat" or "O_CREAT" not in call.text:
        return None
    match = re.search(r"= \d+<([^>]*)>$", call.text)
    return Path(match.group(1)) if match else None


def _renames(calls: list[Call]) -> list[tuple[Call, Path, Path]]:
    """Each successful rename: the call, its source and its target."""
    found = []
    for c in calls:
        strings = re.findall(r'"([^"]*)"', c.text)
        if c.name in _RENAMES and len(strings) >= 2 and _succeeded(c):
            found.append((c, _real(strings[0]), _real(strings[-1])))
    return found


def _publishing_rename(renames: list[tuple[Call, Path, Path]], path: Path, after: int) -> Call | None:
    """The first rename after trace line `after` that moves `path` or a directory holding it."""
    return next(
        (c for c, source, _ in renames if c.start > after and (source == path or source in path.parents)),
        None,
    )


def _new_names(calls: list[Call], root: Path) -> list[tuple[Call, Path]]:
    """Each call that made a new name under `root`: renames, mkdirs and files created."""
    made = []
    for c in calls:
        if not _succeeded(c):
            continue
        strings = re.findall(r'"([^"]*)"', c.text)
        if c.name in _RENAMES and strings:
            made.append((c, _real(strings[-1])))
        elif c.name in ("mkdir", "mkdirat") and strings:
            made.append((c, _real(strings[0])))
        elif (created := _created(c)) is not None:
            made.append((c, created))
    return [(c, p) for c, p in made if root in p.parents and p.name != "LOCK"]


def _temporary(path: Path, root: Path) -> tuple[bool, Path | None]:
    """Whether `path`'s own name is a temporary one, and the temporary directory holding it, if any."""
    holder = next((a for a in path.parents if root in a.parents and ".tmp" in a.name), None)
    return ".tmp" in path.name, holder


def _kind(path: Path, root: Path) -> str:
    """What a file or name of the index directory is, for the checks' coverage and messages."""
    temporary, holder = _temporary(path, root)
    if holder is not None:
        return "snapshot file"
    if ".cut-" in path.name:
        return "cut copy"
    if path.parent.name == "images":
        return "image"
    if path.name.startswith("wal-"):
        return "log"
    if re.match(r"(\.tmp-)?v\d+", path.name):
        return "snapshot"
    return path.name.split(".tmp")[0] if temporary else path.name


def _traced_server(tmp_path: Path, checkpoint: Path, index: Path, port: int) -> tuple[subprocess.Popen, Path]:
    trace = tmp_path / "trace.txt"
    command = [
        "strace",
        "-f",
        "-y",
        "-qq",
        "-s",
        "48",
        "-o",
        str(trace),
        "-e",
        "trace=fsync,fdatasync,write,writev,pwrite64,pwritev,pwritev2,ftruncate,sendto,sendmsg,recvfrom,read,"
        "rename,renameat,renameat2,mkdir,mkdirat,openat",
        sys.executable,
        "-m",
        "asen_search.service.cli",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--index",
        str(index),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "ASEN_API_KEY": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
        for pid in children.read_text().split() if children.exists() else []:
            os.kill(int(pid), signal.SIGKILL)
        process.kill()
        return process.communicate()[0]


def test_writes_are_fsynced_before_they_are_acknowledged(
    tmp_path: Path, tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path
) -> None:
    root = index_dir.resolve()
    version = (root / "CURRENT").read_text().strip()
    (root / f"wal-{version}.log").write_bytes(_TORN_TAIL)  # cut at the start, its bytes kept in a new file
    existed = set(root.rglob("*"))
    port = free_port()
    process, trace = _traced_server(tmp_path, tiny_checkpoint, index_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, ready_s=180)
        picture = image_bytes(demo_dataset / "images" / "train" / "00004.jpg")
        added = httpx.post(
            f"{url}/items", data={"id": "traced"}, files={"image": ("a.jpg", picture)}, timeout=60
        )
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
    requests = [
        c
        for c in calls
        if c.name in ("recvfrom", "read")
        and "<socket:" in c.text
        and ('"POST /items' in c.text or '"DELETE /items' in c.text)
    ]
    assert len(requests) == 2, "both write requests are in the trace"
    responses = [c for c in calls if _is_socket_response(c)]
    acks = []  # the responses to the write requests
    for request in requests:
        connection = _fd_path(request.text)  # socket:[inode]
        response = next(r for r in responses if r.start > request.end and _fd_path(r.text) == connection)
        assert '"HTTP/1.1 20' in response.text, response.text
        acks.append(response)
        appends = [
            c
            for c in calls
            if c.name in _WRITES and is_log(_fd_path(c.text)) and request.end < c.start < response.start
        ]
        assert appends, f"no log record written between {request.text[:60]} and its response"
        synced = [f for f in _fsyncs(calls, is_log) if appends[-1].end < f.start and f.end < response.start]
        assert synced, (
            f"the log record of {request.text[:60]} was not fsynced before the response was sent "
            f"(trace lines {appends[-1].start}..{response.start})"
        )

    # 2. every new name in the index directory (uploaded image, images/, snapshot, CURRENT, new log,
    #    the torn tail's copy) is followed by an fsync of its directory before the next response,
    #    the next new name in that directory (so each step of a commit is durable before the next
    #    one), a truncation in it or the end; names inside a temporary directory (the snapshot's
    #    files) by an fsync of that directory before the rename that publishes it
    renames = _renames(calls)
    made = [(c, p) for c, p in _new_names(calls, root) if not (c.name == "openat" and p in existed)]
    kinds = {_kind(p, root) for _, p in made}
    assert {"image", "log", "snapshot", "snapshot file", "CURRENT", "images", "cut copy"} <= kinds, kinds
    unsynced_names = []
    for call, path in made:
        temporary, holder = _temporary(path, root)
        parent = str(path.parent)
        if temporary and holder is None:
            continue  # a temporary name: made durable by the rename that publishes it (checked)
        if holder is not None:
            publish = _publishing_rename(renames, holder, call.end)
            assert publish is not None, f"{holder}, holding {path.name}, is never renamed into place"
            deadline = publish.start
        else:
            later = [r.start for r in responses if r.start > call.end]
            later += [c.start for c, q in made if str(q.parent) == parent and c.start > call.end]
            later += [
                c.start
                for c in calls
                if c.name == "ftruncate"
                and c.start > call.end
                and str(Path(_fd_path(c.text)).parent) == parent
                and Path(_fd_path(c.text)).name != "LOCK"
            ]
            deadline = min(later, default=len(lines))
        dir_syncs = [
            f
            for f in _fsyncs(calls, lambda p, parent=parent: p == parent)
            if call.end < f.start and f.end < deadline
        ]
        if not dir_syncs:
            unsynced_names.append(
                f"{call.name} of {path} (trace line {call.start}) is not followed by an fsync of "
                f"{parent} before line {deadline}"
            )
    assert not unsynced_names, "\n".join(unsynced_names)

    # 3. every file created in the index directory has its content fsynced (on an fd of its own
    #    path: the temporary one before its rename) after its last change and before whichever
    #    comes first: the rename that publishes it (its own or its directory's), the next write's
    #    acknowledgement, the file being created again, the end
    created = [
        (c, p) for c in calls if (p := _created(c)) is not None and root in p.parents and p.name != "LOCK"
    ]
    checked, unsynced_files = set(), []
    for n, (create, path) in enumerate(created):
        publish = _publishing_rename(renames, path, create.end)
        again = next((c for c, q in created[n + 1 :] if q == path), None)
        bound = min([c.start for c in (publish, again) if c is not None], default=len(lines))
        changes = [
            c
            for c in calls
            if c.name in _CHANGES and _fd_path(c.text) == str(path) and create.end < c.start < bound
        ]
        after = changes[-1].end if changes else create.end
        deadline = min([bound] + [a.start for a in acks if a.start > after])
        synced = [
            f
            for f in _fsyncs(calls, lambda p, path=str(path): p == path)
            if after < f.start and f.end < deadline
        ]
        kind = _kind(path, root)
        if ".tmp" in str(path.relative_to(root)):
            assert publish is not None, f"the temporary {path} ({kind}) is never renamed into place"
        checked.add(kind)
        if not synced:
            unsynced_files.append(
                f"{kind} {path}: its content (created at trace line {create.start}, last changed at "
                f"line {after}) is not fsynced before line {deadline}"
            )
    assert {"snapshot file", "CURRENT", "image", "log", "cut copy"} <= checked, checked
    snapshot_files = {p.name for _, p in created if _kind(p, root) == "snapshot file"}
    assert {
        "manifest.json",
        "ids.json",
        "metadata.jsonl",
        "attr_0.faiss",
        "attr_0.tombstones.npy",
    } <= snapshot_files
    assert not unsynced_files, "\n".join(unsynced_files)

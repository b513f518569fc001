"""Run `asen serve` in a subprocess on a free port for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from tests.helpers import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(
    url: str, process: subprocess.Popen | None = None, ready_s: float = 90, log: IO[str] | None = None
) -> None:
    """Poll `url`/readyz until it answers 200; fail at once if `process` exits, or after `ready_s`."""
    deadline = time.monotonic() + ready_s
    while True:
        if process is not None and process.poll() is not None:
            if log is not None:
                log.seek(0)
                output = log.read()
            else:
                output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"server exited {process.returncode}: {output}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server not ready in {ready_s} s"
        time.sleep(0.05)


def read_only_mounts_allowed() -> bool:
    """Whether this machine lets a process remount / read-only in a private mount namespace
    (`unshare -m`): how the tests make a filesystem read-only for real, even as root."""
    script = "mount --make-rprivate / && mount -o remount,bind,ro / && ! touch /.asen-probe 2>/dev/null"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@contextmanager
def serving(args: Sequence[str], env: dict[str, str], port: int, ready_s: float = 90) -> Iterator[str]:
    """`asen <args>` as a subprocess until /readyz answers 200; yields the base URL; SIGTERM after."""
    command = [sys.executable, "-m", "asen_search.service.cli", *args]
    # the server's log goes to a file: a pipe nobody reads fills after 64 KiB and stops the server
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process, ready_s, log)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def served(checkpoint: Path, index: Path, **env: str) -> Iterator[str]:
    """`asen serve --checkpoint C --index I --port P`."""
    port = free_port()
    with serving(
        ["serve", "--checkpoint", str(checkpoint), "--index", str(index), "--port", str(port)], env, port
    ) as url:
        yield url

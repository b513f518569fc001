"""Run `asen serve` in a subprocess on a free port for end-to-end tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(args: Sequence[str], env: dict[str, str], port: int, ready_s: float = 90) -> Iterator[str]:
    """`asen <args>` as a subprocess until /readyz answers 200; yields the base URL; SIGTERM after."""
    command = [sys.executable, "-m", "service.cli", *args]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited {process.returncode}: {process.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready in {ready_s} s"
            time.sleep(0.2)
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
    with serving(["serve", "--checkpoint", str(checkpoint), "--index", str(index), "--port", str(port)], env,
                 port) as url:
        yield url

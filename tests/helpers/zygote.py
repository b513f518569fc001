"""A process that imports the service once, then starts each server as a fork of itself: `asen
serve` without the ~3 s of importing torch, FastAPI and faiss per start, for tests that restart a
server many times. Each child is a separate server process that loads the model and the index from
disk, exactly as `asen serve ...` does (it runs `asen_search.service.cli.main`).

Protocol, one line each way: `serve ARGS...` -> the child's pid; `kill PID` -> SIGKILL, reap, `dead
STATUS`; `term PID` -> SIGTERM, reap, `dead STATUS`. Nothing has run in this process that starts
threads (no model was loaded), so forking it is safe."""

from __future__ import annotations

import os
import signal
import sys

from asen_search.model.tuning import THREAD_ENV  # light: ctypes only

os.environ.setdefault("OMP_WAIT_POLICY", THREAD_ENV["OMP_WAIT_POLICY"])
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_ENV["OPENBLAS_THREAD_TIMEOUT"])
import faiss  # noqa: F401 - imported before forking, like everything below
import uvicorn  # noqa: F401

import asen_search.model.encoder  # noqa: F401
import asen_search.service.api.app
import asen_search.service.api.server  # noqa: F401
from asen_search.service.cli.main import main


def _child(args: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # stdout is this process's answer channel
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        code = main(args)
    finally:
        sys.stderr.flush()
    os._exit(code)


def run() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "serve":
            pid = os.fork()
            if pid == 0:
                _child(["serve", *rest])
            print(pid, flush=True)
        elif command in ("kill", "term"):
            pid = int(rest[0])
            os.kill(pid, signal.SIGKILL if command == "kill" else signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
            print(f"dead {status}", flush=True)


if __name__ == "__main__":
    run()

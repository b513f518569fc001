"""The embedded Milvus server from PyPI (`pip install '.[milvus-server]'`: etcd and storage in one
process tree, Milvus 2.3) on free ports, for the tests that need a real Milvus server: the replicas,
the contract suite's server backend, a Milvus made slow. Started once per test session."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers.serving import free_port


def _milvus_server() -> str | None:
    beside = Path(sys.executable).parent / "milvus-server"
    return str(beside) if beside.exists() else shutil.which("milvus-server")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`milvus-server` (etcd and storage embedded) on free ports; yields HOST:PORT of its proxy."""
    command = _milvus_server()
    assert command is not None, "no milvus-server: make install installs it (the '.[milvus-server]' extra)"
    port, data = free_port(), tmp_path_factory.mktemp("milvus")
    process = subprocess.Popen(
        [command, "--data", str(data), "--proxy-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"milvus-server exited {process.returncode}; logs in {data}/logs"
            try:
                MilvusClient(f"http://127.0.0.1:{port}", timeout=5).close()
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline, "milvus-server did not answer in 180 s"
                time.sleep(2)
        yield f"127.0.0.1:{port}"
    finally:  # the wrapper, and the etcd + milvus processes it starts in sessions of their own
        everything = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        for each in everything:
            each.terminate()
        _, alive = psutil.wait_procs(everything, timeout=3)  # its data is a temporary folder: no need to wait
        for each in alive:
            each.kill()
        process.wait()

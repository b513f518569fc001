"""One writer per index directory, as real processes: a running `asen serve` refuses a second
`asen serve`, `asen index compact` and `asen index build --out` on its directory up front, each
naming the server's process, and nothing the server acknowledged is lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from asen_search.index import FaissCatalogue
from tests.helpers.models import image_bytes
from tests.helpers.serving import ROOT, free_port, served


def _asen(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asen_search.service.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ASEN_API_KEY": ""},
    )


def _server_pid(port: int) -> int:
    """The pid of the process listening on `port` (from /proc/net/tcp and /proc/*/fd)."""
    inode = next(
        line.split()[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
    )
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(os.readlink(fd) == f"socket:[{inode}]" for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
            except OSError:
                continue
    raise AssertionError(f"no process listens on {port}")


@pytest.mark.slow  # a real server and three CLI writers (fast suite under 10 min)
def test_a_served_directory_refuses_other_writers(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path, n_items: int
) -> None:
    with served(tiny_checkpoint, index_dir) as url:
        port = int(url.rsplit(":", 1)[1])
        pid = _server_pid(port)
        picture = {
            "image": ("a.jpg", image_bytes(demo_dataset / "images" / "train" / "00001.jpg"), "image/jpeg")
        }
        assert httpx.post(f"{url}/items", data={"id": "before"}, files=picture, timeout=30).status_code == 201

        compact = _asen("index", "compact", "--index", str(index_dir))
        assert compact.returncode == 2 and f"being written by process {pid}" in compact.stderr, compact.stderr

        other_port = free_port()
        second = _asen(
            "serve",
            "--checkpoint",
            str(tiny_checkpoint),
            "--index",
            str(index_dir),
            "--port",
            str(other_port),
        )
        assert second.returncode == 2 and f"process {pid}" in second.stderr, second.stdout + second.stderr

        build = _asen(
            "index",
            "build",
            "--checkpoint",
            str(tiny_checkpoint),
            "--catalogue",
            str(demo_dataset),
            "--out",
            str(index_dir),
        )
        assert build.returncode == 2 and f"process {pid}" in build.stderr, build.stderr
        assert "encoding catalogue" not in build.stderr, "refused before encoding anything"

        assert httpx.post(f"{url}/items", data={"id": "after"}, files=picture, timeout=30).status_code == 201
        assert httpx.delete(f"{url}/items/test-00001", timeout=30).status_code == 200
    loaded = FaissCatalogue.load(index_dir)
    assert "before" in loaded and "after" in loaded and "test-00001" not in loaded
    assert len(loaded) == n_items + 1
    # once the server has stopped, the offline compaction runs
    assert _asen("index", "compact", "--index", str(index_dir)).returncode == 0

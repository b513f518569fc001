"""`asen encode` on a Ray cluster of two nodes on this machine (a head and a worker started with
`ray start`, one CPU each): the real command, by address, gives every shard and the same catalogue."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asen_search.index import FaissCatalogue
from asen_search.service.jobs.shards import load_shards
from tests.helpers.serving import free_port

pytestmark = [pytest.mark.slow, pytest.mark.ray]
# Ray 2.60 turns token authentication on for clusters started by `ray start`; these two local nodes
# run without it (docs/scale.md).
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture
def two_nodes() -> Iterator[str]:
    port = free_port()
    # its own session folder, short: Ray's unix socket paths must stay under 108 characters
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    head = [
        RAY,
        "start",
        "--head",
        "--num-cpus=1",
        f"--port={port}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]
    try:
        subprocess.run(head, env=ENV, check=True, capture_output=True, timeout=120)
        subprocess.run(
            [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats"],
            env=ENV,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=ENV, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_encode_by_address_on_two_nodes(
    two_nodes: str, tiny_checkpoint: Path, built_index: Path, demo_dataset: Path, tmp_path: Path
) -> None:
    deadline = time.monotonic() + 90
    while True:  # the worker registers with the head a few seconds after `ray start` returns
        status = subprocess.run(
            [RAY, "status", f"--address={two_nodes}"], env=ENV, capture_output=True, text=True, timeout=120
        )
        if status.stdout.count("node_") == 2:
            break
        assert time.monotonic() < deadline, f"the worker never joined: {status.stdout}"
        time.sleep(2)
    shards = tmp_path / "shards"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asen_search.service.cli",
            "encode",
            "--checkpoint",
            str(tiny_checkpoint),
            "--catalogue",
            str(demo_dataset),
            "--split",
            "test",
            "--out",
            str(shards),
            "--shard-size",
            "100",
            "--ray",
            two_nodes,
            "--ray-actors",
            "2",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "0 unreadable" in done.stdout
    single = FaissCatalogue.load(built_index)
    distributed = load_shards(shards, str(tmp_path / "index"))
    assert sorted(distributed.ids()) == sorted(single.ids())

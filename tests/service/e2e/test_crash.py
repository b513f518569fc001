"""Durability under `kill -9`: the real server is SIGKILLed 20 times while two clients add and
delete items; after every restart each acknowledged add is there, each acknowledged delete is
gone, and an unacknowledged write is either complete (in every attribute index) or absent.

The log is compacted every few writes (ASEN_COMPACT_LOG_BYTES), so kills also land during
compactions. Each server is a fork of a process that imported the service once
(tests/helpers/zygote.py): a separate process loading everything from disk, minus 3 s of imports."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from asen_search.index import FaissCatalogue
from asen_search.index.store import current_version
from tests.helpers.serving import ROOT, free_port, wait_ready

CYCLES = 20
KEY = "crash-test-key"


@dataclass
class Ledger:
    """What the clients were told: acknowledged adds and deletes, and writes whose fate is
    unknown (the connection died with the server)."""

    present: set[str]
    absent: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    metadata: dict[str, dict[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: int = 0
    errors: list[str] = field(default_factory=list)

    def pick_to_delete(self, rng: random.Random) -> str | None:
        with self.lock:
            return rng.choice(sorted(self.present)) if self.present else None


class Servers:
    """Starts `asen serve` processes through tests/helpers/zygote.py (forks of a process that has
    imported the service already) and kills them."""

    def __init__(self, checkpoint: Path, index: Path, port: int) -> None:
        self.args = f"--checkpoint {checkpoint} --index {index} --port {port}"
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "ASEN_API_KEY": KEY,
            "ASEN_COMPACT_LOG_BYTES": "20000",
            "ASEN_LOG_LEVEL": "warning",
        }
        self.zygote = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.zygote"],
            cwd=ROOT,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._ask(None) == "ready"
        self.pid: int | None = None

    def _ask(self, line: str | None) -> str:
        if line is not None:
            self.zygote.stdin.write(line + "\n")  # type: ignore[union-attr]
            self.zygote.stdin.flush()  # type: ignore[union-attr]
        answer = self.zygote.stdout.readline().strip()  # type: ignore[union-attr]
        assert answer, f"the zygote exited {self.zygote.poll()}"
        return answer

    def start(self) -> None:
        self.pid = int(self._ask(f"serve {self.args}"))
        wait_ready(self.url)

    def kill(self) -> int:
        """SIGKILL the server; its wait status."""
        assert self.pid is not None
        status = int(self._ask(f"kill {self.pid}").split()[1])
        self.pid = None
        return status

    def close(self) -> None:
        if self.pid is not None:
            self.kill()
        self.zygote.stdin.close()  # type: ignore[union-attr]
        self.zygote.wait(timeout=30)


def _writer(
    url: str, ledger: Ledger, images: list[bytes], name: str, cycle: int, stop: threading.Event
) -> None:
    """Adds fresh items and deletes acknowledged ones until the server dies (or `stop`)."""
    rng = random.Random(f"{name}-{cycle}")
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as client:
        n = 0
        while not stop.is_set():
            victim = ledger.pick_to_delete(rng) if rng.random() < 0.4 else None
            meta = {"cycle": cycle, "n": n}
            item_id = f"{name}-{cycle}-{n}" if victim is None else victim
            n += victim is None
            if victim is not None:
                with ledger.lock:
                    ledger.present.discard(item_id)  # in flight: no other writer may pick it
            ok = (201,) if victim is None else (200,)
            try:
                if victim is None:
                    response = client.post(
                        "/items",
                        data={"id": item_id, "metadata": json.dumps(meta)},
                        files={"image": ("a.jpg", rng.choice(images), "image/jpeg")},
                    )
                else:
                    response = client.delete(f"/items/{item_id}")
            except httpx.TransportError:
                with ledger.lock:
                    ledger.unknown.add(item_id)
                return  # the server is gone
            with ledger.lock:
                if response.status_code not in ok:
                    ledger.errors.append(f"{item_id}: {response.status_code} {response.text}")
                    return
                ledger.acked += 1
                if victim is None:
                    ledger.present.add(item_id)
                    ledger.metadata[item_id] = meta
                else:
                    ledger.absent.add(item_id)


def _check_live(url: str, ledger: Ledger, attributes: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for item_id in sorted(ledger.metadata.keys() & ledger.present):
            response = client.get(f"/items/{item_id}")
            assert response.status_code == 200, f"acknowledged add {item_id} lost"
            assert response.json()["metadata"] == ledger.metadata[item_id]
        for item_id in sorted(ledger.absent):
            assert client.get(f"/items/{item_id}").status_code == 404, (
                f"acknowledged delete {item_id} came back"
            )
        for item_id in sorted(ledger.unknown):
            if client.get(f"/items/{item_id}").status_code == 200:  # then complete: in every attribute index
                for attribute in attributes:
                    search = client.post(
                        "/search", data={"attribute": attribute, "item_id": item_id, "top_k": "1"}
                    )
                    assert search.status_code == 200, (item_id, attribute, search.text)


def _check_on_disk(index: Path, ledger: Ledger, original: set[str]) -> None:
    catalogue = FaissCatalogue.load(index)
    ids = set(catalogue.ids())
    assert ledger.present <= ids and not (ledger.absent & ids)
    assert ids - ledger.present <= ledger.unknown  # nothing appeared that nobody wrote
    assert ids <= original | ledger.metadata.keys() | ledger.unknown
    for attribute in catalogue.attributes:  # every item in every attribute index, nothing else there
        vectors = np.stack([catalogue.vector(item_id, attribute) for item_id in ids])
        assert np.isfinite(vectors).all() and vectors.shape[0] == len(ids)
    assert {len(ix) for ix in catalogue._indexes} == {len(ids)}


# ~50 s of repeated kills: slow (the fsync and WAL mechanisms have fast tests: test_fsync_order, test_wal_integrity)
@pytest.mark.slow
def test_acknowledged_writes_survive_repeated_sigkill(
    tiny_checkpoint: Path, index_dir: Path, demo_dataset: Path
) -> None:
    original = set(FaissCatalogue.load(index_dir).ids())
    attributes = json.loads((index_dir / "v000001" / "manifest.json").read_text())["attributes"]
    images = [(demo_dataset / "images" / "train" / f"{i:05d}.jpg").read_bytes() for i in range(6)]
    ledger = Ledger(present=set(original))
    rng = random.Random(0)
    servers = Servers(tiny_checkpoint, index_dir, free_port())
    try:
        servers.start()
        for cycle in range(CYCLES):
            stop = threading.Event()
            writers = [
                threading.Thread(target=_writer, args=(servers.url, ledger, images, f"w{k}", cycle, stop))
                for k in range(2)
            ]
            for thread in writers:
                thread.start()
            time.sleep(rng.uniform(0.2, 1.2))
            status = servers.kill()
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            stop.set()
            for thread in writers:
                thread.join(timeout=60)
            assert not ledger.errors, ledger.errors
            servers.start()
            _check_live(servers.url, ledger, attributes)
        assert ledger.acked >= 4 * CYCLES, (
            f"only {ledger.acked} acknowledged writes: the test did not exercise much"
        )
        assert ledger.absent and len(ledger.metadata) >= 2 * CYCLES
        servers.kill()
        _check_on_disk(index_dir, ledger, original)
        assert int(current_version(index_dir)[1:]) > 1, "no compaction happened during the test"  # type: ignore[index]
    finally:
        servers.close()

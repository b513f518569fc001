"""Searches run in parallel; writes are exclusive and never corrupt concurrent searches."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from asen_search.index import FaissCatalogue
from asen_search.index.rwlock import RWLock
from tests.helpers.engines import clustered, make_catalogue


def test_readers_share_the_lock() -> None:
    lock = RWLock()
    both_inside = threading.Barrier(2, timeout=5)

    def reader() -> None:
        with lock.read():
            both_inside.wait()  # raises BrokenBarrierError unless both readers are inside at once

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert not both_inside.broken


def test_writer_waits_for_readers_and_blocks_new_ones() -> None:
    lock = RWLock()
    events: list[str] = []
    reading = threading.Event()
    release_reader = threading.Event()

    def long_reader() -> None:
        with lock.read():
            reading.set()
            release_reader.wait(5)
            events.append("reader done")

    def writer() -> None:
        with lock.write():
            events.append("writer")

    first = threading.Thread(target=long_reader)
    first.start()
    reading.wait(5)
    second = threading.Thread(target=writer)
    second.start()
    time.sleep(0.1)
    assert events == []  # the writer is still waiting for the reader
    release_reader.set()
    first.join(5)
    second.join(5)
    assert events == ["reader done", "writer"]


def test_searches_while_a_writer_adds_and_removes() -> None:
    catalogue, vectors, _ = make_catalogue(300)
    rng = np.random.default_rng(5)
    new_vectors = clustered(rng, 200)
    errors: list[BaseException] = []
    writer_done = threading.Event()
    start = threading.Barrier(3, timeout=10)
    batches_done = [0]  # how many write batches had finished when each search ended
    seen: list[int] = []

    def writer() -> None:
        try:
            start.wait()
            for batch in range(20):
                ids = [f"new-{batch}-{j}" for j in range(10)]
                catalogue.add(ids, new_vectors[batch * 10 : batch * 10 + 10], [{"i": -1}] * 10)
                catalogue.remove([f"item-{batch}"])
                batches_done[0] = batch + 1
                time.sleep(0.002)  # room for searches between batches, as between requests
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            writer_done.set()

    def reader(seed: int) -> None:
        local = np.random.default_rng(seed)
        try:
            start.wait()
            while not writer_done.is_set():
                query = vectors[local.integers(300), 1]
                for results in [
                    *catalogue.search(query[None].repeat(2, 0), "sleeve", 15, filters={"i": [-1, 150, 151]}),
                    catalogue.search(query, "sleeve", 15),
                ]:
                    scores = [r.score for r in results]
                    assert scores == sorted(scores, reverse=True)
                    assert len({r.id for r in results}) == len(results)
                    for r in results:
                        assert r.id.startswith("new-") or r.metadata["i"] == int(r.id.split("-")[1])
                if not writer_done.is_set():
                    seen.append(batches_done[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    # the searches really overlapped the writes: they ended between many different write batches
    assert len({n for n in seen if 0 < n < 20}) >= 5, sorted(set(seen))
    assert len(catalogue) == 300 + 200 - 20
    returned = {r.id for row in catalogue.search(vectors[:20, 1], "sleeve", 50) for r in row}
    assert not {f"item-{b}" for b in range(20)} & returned


def test_searches_go_on_while_a_write_waits_for_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log's fsync happens outside the lock searches need: with a write stuck in its fsync,
    searches and reads answer (and do not see the write until it is applied)."""
    catalogue, vectors, _ = make_catalogue(50)
    catalogue.save(tmp_path / "ix")
    live = FaissCatalogue.load(tmp_path / "ix", writer=True)
    live.open_log()
    in_fsync, release = threading.Event(), threading.Event()
    real_fsync = os.fsync
    writer_thread: list[threading.Thread] = []

    def slow_fsync(fd: int) -> None:
        if writer_thread and threading.current_thread() is writer_thread[0]:
            in_fsync.set()
            release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    writer_thread.append(
        threading.Thread(target=live.add, args=(["late"], clustered(np.random.default_rng(1), 1)))
    )
    writer_thread[0].start()
    try:
        assert in_fsync.wait(10)
        answered: list[object] = []
        reader = threading.Thread(
            target=lambda: answered.extend(
                [live.search(vectors[0, 1], "sleeve", 5), live.get("item-3"), live.vector("item-4", "colour")]
            )
        )
        reader.start()
        reader.join(5)
        assert len(answered) == 3, "a search waited for another write's fsync"
        assert "late" not in live  # logged but not yet applied
    finally:
        release.set()
        writer_thread[0].join(10)
    assert "late" in live and "late" in FaissCatalogue.load(tmp_path / "ix")
    live.close()

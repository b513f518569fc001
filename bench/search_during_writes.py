"""Do writes stall searches? `/search` by item id (no model work: the catalogue alone) and
`/healthz`, p50/p99/max over real HTTP, first alone, then while writers add and delete items as
fast as the server takes them (each write appended to the log and fsynced before it is answered).

    .venv/bin/python bench/search_during_writes.py --checkpoint var/demo/model/best.pt --index var/demo/index
    .venv/bin/python bench/search_during_writes.py ... --source /path/to/another/checkout   # the same, older code

The index is copied to a temporary directory first (the writes never touch it). `--source` serves
another checkout of this project (e.g. a `git worktree` of an earlier commit), so two versions can
be measured side by side in one run on one machine. `--fsync-delay-ms` makes every fsync of the
server take that much longer (a `sitecustomize` wrapping `os.fsync` with a sleep), standing in for a
slower disk than this machine's (network block storage, a busy or rotating disk: 1-20 ms).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from search_latency import ROOT, query_images, start_server


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
    }


def measure(url: str, ids: list[str], seconds: float, writers: int, images: list[bytes]) -> dict[str, object]:
    stop = threading.Event()
    searches: list[float] = []
    pings: list[float] = []
    writes: list[float] = []

    def searcher() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            n = 0
            while not stop.is_set():
                start = time.perf_counter()
                answer = http.post(
                    "/search", data={"attribute": "colour", "item_id": ids[n % len(ids)], "top_k": 10}
                )
                searches.append(time.perf_counter() - start)
                assert answer.status_code == 200, answer.text
                n += 1

    def pinger() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                start = time.perf_counter()
                http.get("/healthz")
                pings.append(time.perf_counter() - start)
                time.sleep(0.01)

    def writer(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            n = 0
            while not stop.is_set():
                start = time.perf_counter()
                item = f"bench-{k}-{n}"
                added = http.post(
                    "/items", data={"id": item}, files={"image": ("a.jpg", images[n % len(images)])}
                )
                assert added.status_code == 201, added.text
                assert http.delete(f"/items/{item}").status_code == 200
                writes.append(time.perf_counter() - start)
                n += 1

    threads = [threading.Thread(target=searcher), threading.Thread(target=pinger)]
    threads += [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "search_by_id": _stats(searches),
        "healthz": _stats(pings),
        "writes_per_s": round(2 * len(writes) / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument(
        "--source", type=Path, default=ROOT, help="code tree to serve (default: this checkout)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument(
        "--fsync-delay-ms", type=float, default=0.0, help="added to every fsync of the server"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(shutil.copytree(args.index, Path(tmp) / "index"))
        env = {}
        if args.fsync_delay_ms > 0:
            site = Path(tmp) / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text(
                "import os, time\n_fsync = os.fsync\n"
                f"def fsync(fd):\n    time.sleep({args.fsync_delay_ms / 1000!r})\n    _fsync(fd)\nos.fsync = fsync\n"
            )
            env["PYTHONPATH"] = f"{site}:{args.source.resolve()}"
        process, url = start_server(args.checkpoint, index, args.source.resolve(), env)
        try:
            ids = [f"test-{i:05d}" for i in range(50)]
            images = query_images(None, 8)
            result = {
                "source": str(args.source.resolve()),
                "seconds": args.seconds,
                "writers": args.writers,
                "fsync_delay_ms": args.fsync_delay_ms,
                "alone": measure(url, ids, args.seconds, 0, images),
                "with_writes": measure(url, ids, args.seconds, args.writers, images),
            }
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

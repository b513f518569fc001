"""What durability costs: the time of one logged write (append + fsync) and of a compaction
(a full snapshot, during which writes wait) as the catalogue grows.

    .venv/bin/python bench/wal_cost.py --sizes 1400 20000 100000 --dim 256 --attributes 7 --writes 2000

Synthetic unit vectors (cost depends on the number of vectors, not what they show), in a temporary
directory on the same disk as the project unless --workdir says otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from asen_search.index import FaissCatalogue


def _vectors(rng: np.random.Generator, n: int, attributes: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, attributes, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def measure(size: int, attributes: int, dim: int, writes: int, workdir: Path) -> dict[str, float]:
    rng = np.random.default_rng(0)
    root = workdir / f"ix-{size}"
    catalogue = FaissCatalogue.create([f"a{i}" for i in range(attributes)], dim, "bench")
    for start in range(0, size, 20_000):
        n = min(20_000, size - start)
        catalogue.add(
            [f"item-{start + i}" for i in range(n)],
            _vectors(rng, n, attributes, dim),
            [{"category": f"c{(start + i) % 10}"} for i in range(n)],
        )
    catalogue.save(root)
    catalogue = FaissCatalogue.load(root)
    catalogue.open_log()
    times = []
    for i in range(writes):
        vectors = _vectors(rng, 1, attributes, dim)
        start = time.perf_counter()
        catalogue.upsert([f"new-{i}"], vectors, [{"category": "new"}])
        times.append(time.perf_counter() - start)
    log_bytes = catalogue.log_size
    start = time.perf_counter()
    FaissCatalogue.load(root)  # the snapshot plus a replay of every logged write
    replay_load = time.perf_counter() - start
    start = time.perf_counter()
    catalogue.checkpoint()
    compaction = time.perf_counter() - start
    start = time.perf_counter()
    FaissCatalogue.load(root)
    load = time.perf_counter() - start
    catalogue.close()
    shutil.rmtree(root)
    ms = np.array(times) * 1000
    return {
        "size": size,
        "write_p50_ms": float(np.percentile(ms, 50)),
        "write_p99_ms": float(np.percentile(ms, 99)),
        "log_bytes_per_write": log_bytes / writes,
        "compaction_s": compaction,
        "load_s": load,
        "replay_load_s": replay_load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1400, 20_000, 100_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--attributes", type=int, default=7)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=Path("var"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        print(
            f"| items | logged write p50 ms | p99 ms | log bytes per write | load s with {args.writes} logged writes "
            "| compaction s | load s after it |"
        )
        print("|---|---|---|---|---|---|---|")
        for size in args.sizes:
            r = measure(size, args.attributes, args.dim, args.writes, Path(tmp))
            print(
                f"| {size:,} | {r['write_p50_ms']:.2f} | {r['write_p99_ms']:.2f} | {r['log_bytes_per_write']:.0f} | "
                f"{r['replay_load_s']:.2f} | {r['compaction_s']:.2f} | {r['load_s']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""The same catalogue in both backends, side by side in one run: FAISS Flat in process
(`FaissCatalogue`) against Milvus Lite (`MilvusCatalogue` on a local file): insert rate, search latency
by one query (p50/p99, unfiltered and filtered), and the process's memory after each load.

    .venv/bin/python bench/milvus_vs_faiss.py --items 100000 --attributes 7 --dim 256
    .venv/bin/python bench/milvus_vs_faiss.py --items 100000 --no-lite --server 127.0.0.1:19530   # a Milvus server too
    .venv/bin/python bench/milvus_vs_faiss.py --items 20000 --no-lite --server 127.0.0.1:19530 \
        --consistency Strong,Bounded,Eventually     # what read-your-writes costs on that server

Vectors are random unit vectors (search cost does not depend on their content for exact search);
metadata: a category out of 20. Results go to stdout as a markdown table (docs/scale.md).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from asen_search.index import FaissCatalogue
from asen_search.index.milvus import MilvusCatalogue


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(
    catalogue: object, ids: list[str], vectors: np.ndarray, metas: list[dict[str, str]], batch: int
) -> float:
    start = time.perf_counter()
    for s in range(0, len(ids), batch):
        catalogue.add(ids[s : s + batch], vectors[s : s + batch], metas[s : s + batch])  # type: ignore[attr-defined]
    return len(ids) / (time.perf_counter() - start)


def latency(
    catalogue: object, queries: np.ndarray, attribute: str, filters: dict[str, str] | None
) -> list[float]:
    times = []
    for q in queries:
        start = time.perf_counter()
        catalogue.search(q, attribute, 10, filters=filters)  # type: ignore[attr-defined]
        times.append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--attributes", type=int, default=7)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--filtered-queries",
        type=int,
        default=None,
        help="filtered queries (default: --queries; fewer for Milvus Lite at 100k, where each takes seconds)",
    )
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--no-lite", action="store_true", help="skip Milvus Lite")
    parser.add_argument(
        "--server", metavar="HOST:PORT", help="also a Milvus server (layout rows: any version)"
    )
    parser.add_argument(
        "--consistency",
        default="Strong",
        help="the server's read consistency levels to measure, "
        "comma-separated (Strong, Bounded, Session, Eventually)",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.items, args.attributes, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    ids = [f"item-{i}" for i in range(args.items)]
    metas = [{"category": f"c{i % 20}"} for i in range(args.items)]
    attributes = [f"a{i}" for i in range(args.attributes)]
    queries = vectors[rng.integers(0, args.items, args.queries), 0]
    rows = []
    base = rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        backends: list[tuple[str, object]] = [
            ("FAISS Flat (in process)", lambda: FaissCatalogue.create(attributes, args.dim, "bench"))
        ]
        if not args.no_lite:
            backends.append(
                (
                    "Milvus Lite FLAT, fields (file)",
                    lambda: MilvusCatalogue.create(
                        f"milvus-lite:{tmp}/bench.db#bench", attributes, args.dim, "bench"
                    ),
                )
            )
        for level in args.consistency.split(",") if args.server else []:
            backends.append(
                (
                    f"Milvus server FLAT, rows, {level}",
                    lambda level=level: MilvusCatalogue.create(
                        f"milvus://{args.server}/bench_{time.time_ns()}?consistency={level}",
                        attributes,
                        args.dim,
                        "bench",
                        layout="rows",
                    ),
                )
            )
        for name, make in backends:  # type: ignore[assignment]
            catalogue = make()  # type: ignore[operator]
            before = rss_mib()
            rate = load(catalogue, ids, vectors, metas, args.batch)
            held = rss_mib() - before
            plain = latency(catalogue, queries, "a0", None)
            filtered = latency(
                catalogue, queries[: args.filtered_queries or len(queries)], "a0", {"category": "c3"}
            )
            rows.append(
                (
                    name,
                    rate,
                    np.percentile(plain, 50),
                    np.percentile(plain, 99),
                    np.percentile(filtered, 50),
                    np.percentile(filtered, 99),
                    held,
                )
            )
            if isinstance(catalogue, MilvusCatalogue) and catalogue.location.uri.startswith("http"):
                catalogue.drop()  # the server keeps nothing of the benchmark
            catalogue.close()  # type: ignore[attr-defined]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.items} items x {args.attributes} attributes x {args.dim} dims; {args.queries} single queries "
        f"({args.filtered_queries or args.queries} filtered), "
        f"top 10; process RSS at start {base:.0f} MiB, peak {peak:.0f} MiB\n"
    )
    print(
        "| backend | insert items/s | search p50 ms | p99 ms | filtered (1/20) p50 ms | p99 ms | RSS added MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rate, p50, p99, f50, f99, held in rows:
        print(f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {f50:.2f} | {f99:.2f} | {held:,.0f} |")


if __name__ == "__main__":
    main()

"""Threshold searches ("every item at least this similar", `FaissCatalogue.search_range`) at catalogue
scale: recall against the exact set and latency, per index kind, for the default way and for growing
top-k searches (what approximate indexes larger than RANGE_SCAN_MAX items do).

    .venv/bin/python -m bench.threshold_search --checkpoint var/demo/model/best.pt \\
        --images var/demo/data/images --items 100000 --json threshold.json

Vectors: bench/composed_recall.py's catalogue (real encoder vectors of demo images for every attribute,
then synthetic items around them, calibrated on nearest-neighbour cosine; see its docstring). Queries:
a random catalogue item's vector under one attribute; for each, thresholds chosen so that 10, 100 and
1,000 items pass (the midpoint between two consecutive exact scores, so no item sits on it). The
exact set is computed with numpy over the generated float32 vectors (for SQ8 indexes also over the
stored, decoded vectors: "vs stored"). recall = |returned ∩ exact| / |exact|, mean over queries; max
results 5,000 (never reached). Latency: wall time of one `search_range` call, 2 FAISS threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

import asen_search.index.attribute_index as attribute_index
from asen_search.index import FaissCatalogue

KINDS = (("Flat", {}), ("HNSW32", {"ef_search": 256}), ("IVF1024,SQ8", {"nprobe": 32}))
COUNTS = (10, 100, 1000)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(factory: str, knobs: dict[str, int], names: list[str], columns: list[np.ndarray]) -> FaissCatalogue:
    vectors = np.stack(columns, axis=1)
    catalogue = FaissCatalogue.create(names, vectors.shape[2], "bench", factory)
    catalogue.add([str(i) for i in range(len(vectors))], vectors)
    if knobs:
        catalogue.set_search_params(**knobs)
    return catalogue


def measure(
    catalogue: FaissCatalogue,
    name: str,
    queries: list[tuple[np.ndarray, float, set[int], set[int]]],
    scan: bool,
) -> dict[str, float]:
    saved = attribute_index.RANGE_SCAN_MAX
    attribute_index.RANGE_SCAN_MAX = saved if scan else 0
    try:
        recalls, stored_recalls, times = [], [], []
        for vector, threshold, exact, exact_stored in queries:
            started = time.perf_counter()
            hits, _ = catalogue.search_range(vector, name, threshold, 5000)
            times.append(time.perf_counter() - started)
            found = {int(h.id) for h in hits}
            recalls.append(len(found & exact) / len(exact))
            stored_recalls.append(len(found & exact_stored) / max(len(exact_stored), 1))
    finally:
        attribute_index.RANGE_SCAN_MAX = saved
    return {
        "recall": float(np.mean(recalls)),
        "recall_min": float(np.min(recalls)),
        "recall_vs_stored": float(np.mean(stored_recalls)),
        "p50_ms": 1000 * float(np.median(times)),
        "p95_ms": 1000 * float(np.percentile(times, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="folder of demo images to encode")
    parser.add_argument("--real", type=int, default=1500, help="at most this many real images")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=30, help="queries per passing count")
    parser.add_argument("--attribute", type=int, default=2, help="the attribute searched (index)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/idxscale"), help="real-vector cache")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from bench.composed_recall import make_catalogue

    faiss.omp_set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    spec = argparse.Namespace(
        checkpoint=args.checkpoint,
        images=args.images,
        real=args.real,
        seed=args.seed,
        work_dir=args.work_dir,
        attributes=0,
        items=args.items,
        parents="independent",
        noise="shaped",
    )
    cat = make_catalogue(spec, rng)
    name, column = cat.names[args.attribute], cat.columns[args.attribute]
    rows = []
    for factory, knobs in KINDS:
        started = time.perf_counter()
        catalogue = build(factory, knobs, cat.names, cat.columns)
        built = time.perf_counter() - started
        index = catalogue._index(name)
        stored = index.reconstruct(np.arange(args.items, dtype=np.int64))
        for count in COUNTS:
            queries = []
            for row in rng.integers(0, args.items, args.queries):
                vector = column[row]
                scores = column @ vector
                ordered = np.sort(scores)[::-1]
                threshold = float((ordered[count - 1] + ordered[count]) / 2)
                stored_scores = stored @ vector
                queries.append(
                    (
                        vector,
                        threshold,
                        set(np.flatnonzero(scores >= threshold).tolist()),
                        set(np.flatnonzero(stored_scores >= np.float32(threshold)).tolist()),
                    )
                )
            for way, scan in (("default", True), ("growing top-k", False)):
                if factory == "Flat" and not scan:
                    continue  # Flat always answers with FAISS's exact range search
                result = measure(catalogue, name, queries, scan)
                row = {
                    "kind": factory,
                    **knobs,
                    "way": way if factory != "Flat" else "range search",
                    "passing": count,
                    "build_s": round(built, 1),
                    **{k: round(v, 4) for k, v in result.items()},
                }
                rows.append(row)
                log(json.dumps(row))
        catalogue.close()
    print(
        f"{'kind':<22} {'way':<14} {'passing':>7} {'recall':>7} {'min':>6} {'vs stored':>9} {'p50 ms':>7} {'p95 ms':>7}"
    )
    for r in rows:
        kind = r["kind"] + "".join(f" {k}={r[k]}" for k in ("ef_search", "nprobe") if k in r)
        print(
            f"{kind:<22} {r['way']:<14} {r['passing']:>7} {r['recall']:>7.4f} {r['recall_min']:>6.3f} "
            f"{r['recall_vs_stored']:>9.4f} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"items": args.items, "attribute": name, "rows": rows, "vectors": cat.info}, indent=2)
        )


if __name__ == "__main__":
    main()

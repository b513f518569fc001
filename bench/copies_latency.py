"""`POST /copies` latency over real HTTP, without and with `verify` (geometric verification of the best
50 copies: model/copy_verify.py), one client, split into the server's stages (Server-Timing).

    .venv/bin/python -m bench.copies_latency --checkpoint var/demo/model/best.pt --index var/demo/index \\
        [--designs 20] [--top-k 10] [--json latency.json]

The designs are the catalogue's first `--designs` items (id order), each sent as `item_id`; every
design is asked once without and once with `verify`, in turn. The server is `asen serve` in a
subprocess (bench/search_latency.py `start_server`), the catalogue read as it is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from asen_search.client import Client
from bench.search_latency import parse_timing, start_server

STAGES = ("decode", "encode", "search", "verify")


def _summary(records: list[tuple[float, dict[str, float]]]) -> dict[str, Any]:
    latency = np.array([r[0] for r in records])
    row: dict[str, Any] = {
        "requests": len(records),
        "p50_ms": float(np.percentile(latency, 50)),
        "p95_ms": float(np.percentile(latency, 95)),
    }
    for stage in STAGES:
        row[f"{stage}_p50_ms"] = float(np.percentile([r[1].get(stage, 0.0) for r in records], 50))
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--index", type=Path, required=True, help="an index directory with stored images")
    p.add_argument("--designs", type=int, default=20)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    process, url = start_server(args.checkpoint, args.index)
    try:
        with Client(url) as asen:
            designs = [item.id for item in asen.list_items(limit=args.designs, include_metadata=False).items]
        records: dict[bool, list[tuple[float, dict[str, float]]]] = {False: [], True: []}
        with httpx.Client(base_url=url, timeout=300) as http:
            http.post("/copies", json={"item_id": designs[0], "top_k": args.top_k, "verify": True})  # warm up
            for design in designs:
                for verify in (False, True):
                    started = time.perf_counter()
                    answer = http.post(
                        "/copies", json={"item_id": design, "top_k": args.top_k, "verify": verify}
                    )
                    elapsed = 1000 * (time.perf_counter() - started)
                    answer.raise_for_status()
                    records[verify].append((elapsed, parse_timing(answer.headers.get("server-timing", ""))))
    finally:
        process.terminate()
        process.wait(timeout=60)
    out = {"designs": len(designs), "top_k": args.top_k}
    for verify, rows in records.items():
        out["verified" if verify else "plain"] = _summary(rows)
        print("verify" if verify else "plain ", json.dumps(_summary(rows)))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

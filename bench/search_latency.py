"""`/search` latency over real HTTP on localhost: p50/p99 with 1 and 8 concurrent clients, split into
decode, encode and search time (from the server's Server-Timing header).

    .venv/bin/python bench/search_latency.py --checkpoint var/demo/model/best.pt --index var/demo/index
    .venv/bin/python bench/search_latency.py --checkpoint var/demo/model/best.pt --catalogue-size 100000

With --catalogue-size the index is synthetic: random unit vectors for the checkpoint's attributes
(search time depends on the number of vectors, not on what they show). The server is `asen serve`
in a subprocess with the allocator settings of docs/tuning.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from asen_search.model.tuning import PROCESS_ENV

ROOT = Path(__file__).resolve().parents[1]

STAGES = ("decode", "encode", "search")


def synthetic_index(checkpoint: Path, size: int, out: Path, factory: str) -> Path:
    """`size` random unit vectors per attribute, under the checkpoint's fingerprint."""
    from asen_search.index import FaissCatalogue
    from asen_search.model.encoder import Encoder

    encoder = Encoder.from_checkpoint(checkpoint)
    catalogue = FaissCatalogue.create(encoder.attribute_names, encoder.dim, encoder.fingerprint, factory)
    rng = np.random.default_rng(0)
    for start in range(0, size, 20_000):
        n = min(20_000, size - start)
        vectors = rng.standard_normal((n, len(encoder.attributes), encoder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
        catalogue.add(
            [f"syn-{start + i:07d}" for i in range(n)],
            vectors,
            [{"shard": (start + i) % 10} for i in range(n)],
        )
    catalogue.save(out)
    return out


def query_images(folder: Path | None, n: int = 16) -> list[bytes]:
    """JPEG bytes: files of `folder`, or freshly drawn garments."""
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
        if files:
            return [p.read_bytes() for p in files]
    from asen_search.model.data.synth import draw_garment, sample_labels

    rng = np.random.default_rng(1)
    images = []
    for _ in range(n):
        buffer = io.BytesIO()
        draw_garment(sample_labels(rng), rng).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def start_server(
    checkpoint: Path, index: Path, source: Path = ROOT, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`asen serve` on a free port, run from the code tree `source` (default: this one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "asen_search.service.cli",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--index",
        str(index),
        "--port",
        str(port),
    ]
    env = {
        **os.environ,
        **PROCESS_ENV,
        "ASEN_LOG_LEVEL": "warning",
        "PYTHONPATH": str(source),
        **(env_extra or {}),
    }
    process = subprocess.Popen(command, cwd=source, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("server not ready in 300 s")


def parse_timing(header: str) -> dict[str, float]:
    """`decode;dur=1.2, encode;dur=20.0` -> {"decode": 1.2, "encode": 20.0} (ms)."""
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def run_clients(
    url: str, images: list[bytes], attribute: str, clients: int, requests: int, top_k: int
) -> dict[str, float]:
    """`requests` searches spread over `clients` threads, each with its own connection."""
    records: list[tuple[float, dict[str, float]]] = []
    lock = threading.Lock()

    def worker(worker_id: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in range(worker_id, requests, clients):
                image = images[i % len(images)]
                start = time.perf_counter()
                response = http.post(
                    "/search",
                    data={"attribute": attribute, "top_k": str(top_k)},
                    files={"image": ("q.jpg", image, "image/jpeg")},
                )
                elapsed = 1000 * (time.perf_counter() - start)
                response.raise_for_status()
                with lock:
                    records.append((elapsed, parse_timing(response.headers.get("server-timing", ""))))

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latency = np.array([r[0] for r in records])
    row = {
        "clients": clients,
        "requests": len(records),
        "throughput_rps": len(records) / wall,
        "p50_ms": float(np.percentile(latency, 50)),
        "p99_ms": float(np.percentile(latency, 99)),
    }
    for stage in STAGES:
        values = np.array([r[1].get(stage, 0.0) for r in records])
        row[f"{stage}_p50_ms"] = float(np.percentile(values, 50))
        row[f"{stage}_p99_ms"] = float(np.percentile(values, 99))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--index", type=Path, help="index directory (else --catalogue-size)")
    parser.add_argument("--catalogue-size", type=int, help="serve a synthetic index of this many items")
    parser.add_argument("--factory", default="Flat", help="FAISS factory of the synthetic index")
    parser.add_argument("--images", type=Path, help="query images folder (default: drawn garments)")
    parser.add_argument("--attribute", default=None, help="default: the first attribute")
    parser.add_argument("--requests", type=int, default=200, help="requests per client setting")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    if (args.index is None) == (args.catalogue_size is None):
        parser.error("give exactly one of --index and --catalogue-size")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        index = args.index or synthetic_index(
            args.checkpoint, args.catalogue_size, Path(tmp) / "index", args.factory
        )
        build_s = time.perf_counter() - started
        images = query_images(args.images)
        started = time.perf_counter()
        process, url = start_server(args.checkpoint, index)
        ready_s = time.perf_counter() - started
        try:
            ready = httpx.get(f"{url}/readyz").json()
            attribute = args.attribute or ready["attributes"][0]
            run_clients(url, images, attribute, 1, min(10, args.requests), args.top_k)  # warm up
            rows = [run_clients(url, images, attribute, c, args.requests, args.top_k) for c in args.clients]
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    print(
        f"catalogue: {ready['items']} items, {len(ready['attributes'])} attributes, dim {ready['dim']}; "
        f"attribute {attribute}; command: {' '.join(sys.argv)}"
    )
    if args.catalogue_size:
        print(f"synthetic index written in {build_s:.1f} s; ", end="")
    print(f"server start to /readyz 200: {ready_s:.1f} s")
    print("| clients | req/s | p50 ms | p99 ms | decode p50 | encode p50 | search p50 | search p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['decode_p50_ms']:.1f} | {r['encode_p50_ms']:.1f} | {r['search_p50_ms']:.1f} | "
            f"{r['search_p99_ms']:.1f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "items": ready["items"],
                    "attribute": attribute,
                    "ready_s": ready_s,
                    "build_s": build_s if args.catalogue_size else None,
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

"""Every performance figure of docs/performance.md in one run: each beside its floor (or goal) and the
ratio, methods side by side in the same process (these machines drift by +-25% between runs).

    .venv/bin/python -m bench.perf --checkpoint var/demo/model/best.pt --data var/demo/data \\
        --index var/demo/index --json docs/perf.json --plot docs/performance.png

Sections (`--only` picks some):
- encode: images/s for all attributes (batch 32) per runtime (torch, ONNX Runtime, OpenVINO), the
  naive loop (torch, the whole network once per attribute), the floor (the runtime's backbones alone:
  one global pass per image and one local pass per attribute, timed alone), and single-image latency.
- crops: the stage-2 RoI-crop pass of training (global attention on cached maps, crops cut from the
  decoded originals, local stem) in crops/s, torch stem against the runtime's stem.
- flat: exact top-10 over 100k and 1M 256-d unit vectors, one query and a batch of 64: FAISS
  IndexFlatIP against this project's scan (index/attribute_index.py), beside the memory-bandwidth
  floor (one query) and the compute floor (a batch: the FLOPs at the rate of a square SGEMM measured
  in the same run).
- http: `/search` by image over real HTTP, 1/2/4/8 clients, on the demo index and on a synthetic
  100k-item one; the server with dynamic batching (the defaults) and without (ASEN_BATCH_MAX=1 and two
  inference workers: the previous design).
- build: `asen index build` of the demo test split in images/s, torch against the default runtime.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = ("encode", "crops", "flat", "http", "build")
RUNTIMES = ("torch", "onnxruntime", "openvino")


def _median_s(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _installed(runtime: str) -> bool:
    import torch

    from asen_search.model.runtime import RuntimeUnavailable, resolve_runtime

    try:
        resolve_runtime(runtime, torch.device("cpu"))
    except RuntimeUnavailable:
        return False
    return True


def encode_section(checkpoint: Path, images: list[Any], rounds: int) -> list[dict[str, Any]]:
    import torch

    from asen_search.model.encoder import Encoder
    from asen_search.model.nn.preprocess import global_inputs, local_inputs

    encoders = {rt: Encoder.from_checkpoint(checkpoint, runtime=rt) for rt in RUNTIMES if _installed(rt)}
    torch_enc = encoders["torch"]
    n_attr, n = len(torch_enc.attributes), len(images)
    pre = torch_enc.preprocess
    x, views = global_inputs(images, pre)
    flat_views = [v for v in views for _ in range(n_attr)]
    boxes = torch.tensor([[40.0, 40.0, 180.0, 180.0]]).expand(n * n_attr, -1)
    crops = local_inputs([img for img in images for _ in range(n_attr)], flat_views, boxes, pre)
    rows: list[dict[str, Any]] = []
    results: dict[str, list[float]] = {}

    def naive() -> None:
        for a in range(n_attr):
            torch_enc.encode(images, [a], batch_size=32)

    methods: dict[str, Callable[[], object]] = {"naive loop (torch)": naive}
    for rt, enc in encoders.items():
        methods[f"encoder ({rt})"] = lambda enc=enc: enc.encode(images, batch_size=32)

        def floor(enc: Encoder = enc) -> None:
            with torch.inference_mode():
                for start in range(0, n, 32):
                    enc._global(x[start : start + 32])
                for start in range(0, len(crops), 32 * n_attr):
                    enc._local(crops[start : start + 32 * n_attr])  # type: ignore[misc]

        methods[f"backbones alone ({rt})"] = floor
    for fn in methods.values():
        fn()  # warm-up
    for _ in range(rounds):  # alternate, so drift hits every method alike
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            results.setdefault(name, []).append(time.perf_counter() - start)
    ips = {name: n / statistics.median(t) for name, t in results.items()}
    naive_ips = ips["naive loop (torch)"]
    rows.append(
        {
            "section": "encode",
            "metric": "naive loop (torch), images/s, all attributes",
            "value": naive_ips,
            "unit": "img/s",
        }
    )
    for rt in encoders:
        value, floor_ips = ips[f"encoder ({rt})"], ips[f"backbones alone ({rt})"]
        rows.append(
            {
                "section": "encode",
                "metric": f"encoder ({rt}), images/s, all {n_attr} attributes",
                "value": value,
                "unit": "img/s",
                "floor": floor_ips,
                "ratio": floor_ips / value,
                "vs_naive": value / naive_ips,
                "goal": ">= 35 img/s, <= 1.3x floor, >= 3x naive",
            }
        )
    for rt, enc in encoders.items():
        one = _median_s(lambda enc=enc: enc.encode(images[:1], [0], batch_size=1), 15, 3)
        every = _median_s(lambda enc=enc: enc.encode(images[:1], batch_size=1), 15, 3)
        rows.append(
            {
                "section": "encode",
                "metric": f"one image, one attribute ({rt})",
                "value": one * 1000,
                "unit": "ms",
            }
        )
        rows.append(
            {
                "section": "encode",
                "metric": f"one image, all attributes ({rt})",
                "value": every * 1000,
                "unit": "ms",
            }
        )
    return rows


def crops_section(checkpoint: Path, paths: list[Path], rounds: int) -> list[dict[str, Any]]:
    import torch

    from asen_search.model.checkpoint import load_checkpoint
    from asen_search.model.runtime import Stems
    from asen_search.model.training.map_cache import MemoryBudget, build_image_set, local_maps

    ckpt = load_checkpoint(checkpoint)
    model, pre = ckpt.model.eval(), ckpt.preprocess
    stems = {
        rt: Stems.of(model, pre.global_size, pre.local_size, rt)
        for rt in ("torch", "openvino")
        if _installed(rt)
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = build_image_set(
            model, pre, paths, "perf", Path(tmp), progress=False, stem=stems["torch"].global_
        )
        images.keep_originals(MemoryBudget(None), "perf", progress=False)  # as training does when they fit
        n_attr = model.cfg.n_attributes
        fids = torch.arange(len(paths)).repeat_interleave(n_attr)
        attrs = torch.arange(n_attr).repeat(len(paths))
        seconds: dict[str, list[float]] = {rt: [] for rt in stems}
        for _ in range(rounds):
            for rt, stem in stems.items():
                start = time.perf_counter()
                local_maps(model, pre, images, fids, attrs, "perf", progress=False, stem=stem.local)
                seconds[rt].append(time.perf_counter() - start)
    base = len(fids) / statistics.median(seconds["torch"])
    for rt in stems:
        value = len(fids) / statistics.median(seconds[rt])
        rows.append(
            {
                "section": "crops",
                "metric": f"stage-2 crop pass ({rt} stem), crops/s",
                "value": value,
                "unit": "crops/s",
                "vs_torch": value / base,
            }
        )
    return rows


def flat_section(sizes: list[int], bandwidth_gbs: float) -> list[dict[str, Any]]:
    import faiss

    from asen_search.index.attribute_index import AttributeIndex

    faiss.omp_set_num_threads(2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    gemm_s = _median_s(lambda: a @ a, 5)
    peak_flops = 2 * 2048**3 / gemm_s
    rows: list[dict[str, Any]] = [
        {
            "section": "flat",
            "metric": "SGEMM 2048^3 (compute peak used as the batch floor)",
            "value": peak_flops / 1e9,
            "unit": "GFLOP/s",
        }
    ]
    dim = 256
    for n in sizes:
        ours = AttributeIndex.create(dim, "Flat")
        theirs = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        for start in range(0, n, 100_000):
            block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            keys = np.arange(start, start + len(block), dtype=np.int64)
            ours.add(keys, block)
            theirs.add_with_ids(block, keys)
        queries = rng.standard_normal((64, dim), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        floor_one = n * dim * 4 / (bandwidth_gbs * 1e9)
        floor_batch = max(floor_one, 2 * n * dim * 64 / peak_flops) / 64
        settings = (("one query", queries[:1], floor_one), ("64 queries, per query", queries, floor_batch))
        for label, batch, floor in settings:
            repeats = 15 if len(batch) == 1 else 5
            faiss_s = _median_s(lambda b=batch, i=theirs: i.search(b, 10), repeats) / len(batch)
            ours_s = _median_s(lambda b=batch, i=ours: i.search(b, 10), repeats) / len(batch)
            for name, s in (("FAISS IndexFlatIP", faiss_s), ("our scan", ours_s)):
                rows.append(
                    {
                        "section": "flat",
                        "metric": f"{n:,} items, {label}: {name}",
                        "value": s * 1000,
                        "unit": "ms",
                        "floor": floor * 1000,
                        "ratio": s / floor,
                        "goal": "<= 2x floor",
                    }
                )
    return rows


def _cpu_s(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def http_section(
    checkpoint: Path,
    index: Path | None,
    images_dir: Path | None,
    requests: int,
    clients: list[int],
    synthetic: int,
) -> list[dict[str, Any]]:
    import httpx
    import psutil

    from bench.search_latency import query_images, run_clients, start_server, synthetic_index

    rows: list[dict[str, Any]] = []
    designs = {
        "batched (defaults)": {},
        "unbatched (2 workers)": {"ASEN_BATCH_MAX": "1", "ASEN_INFERENCE_CONCURRENCY": "2"},
    }
    images = query_images(images_dir)
    with tempfile.TemporaryDirectory() as tmp:
        catalogues = {"demo": index} if index is not None else {}
        if synthetic:
            catalogues[f"{synthetic // 1000}k synthetic"] = synthetic_index(
                checkpoint, synthetic, Path(tmp) / "syn", "Flat"
            )
        for cat_name, cat_path in catalogues.items():
            for design, env in designs.items():
                process, url = start_server(checkpoint, cat_path, env_extra=env)
                server = psutil.Process(process.pid)
                try:
                    attribute = httpx.get(f"{url}/readyz").json()["attributes"][0]
                    run_clients(url, images, attribute, 1, 10, 10)  # warm-up
                    for c in clients:
                        cpu_before, wall_before = _cpu_s(server), time.perf_counter()
                        r = run_clients(url, images, attribute, c, max(requests, 20 * c), 10)
                        cpu_used, wall = _cpu_s(server) - cpu_before, time.perf_counter() - wall_before
                        rows.append(
                            {
                                "section": "http",
                                "catalogue": cat_name,
                                "design": design,
                                "clients": c,
                                "metric": f"/search {cat_name}, {design}, {c} client(s)",
                                "value": r["p50_ms"],
                                "unit": "ms p50",
                                "p99_ms": r["p99_ms"],
                                "rps": r["throughput_rps"],
                                "encode_p50_ms": r["encode_p50_ms"],
                                "search_p50_ms": r["search_p50_ms"],
                                "server_cpu_ms_per_request": 1000 * cpu_used / r["requests"],
                                "server_cores_busy": cpu_used / wall,
                            }
                        )
                finally:
                    process.send_signal(signal.SIGINT)
                    process.wait(timeout=60)
    for cat_name in {r["catalogue"] for r in rows}:
        for design in designs:
            mine = [r for r in rows if r["catalogue"] == cat_name and r["design"] == design]
            one = next((r for r in mine if r["clients"] == 1), None)
            for r in mine:
                if one is not None:
                    r["rps_vs_1_client"] = r["rps"] / one["rps"]
    return rows


def build_section(checkpoint: Path, data: Path) -> list[dict[str, Any]]:
    from asen_search.service.jobs.build import BuildConfig, build_index

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rt in ("torch", "auto"):
            report = build_index(
                BuildConfig(checkpoint, data, Path(tmp) / rt, "test", progress=False, runtime=rt)
            )
            rows.append(
                {
                    "section": "build",
                    "metric": f"asen index build ({rt} runtime), {report.items} images",
                    "value": report.images_per_second,
                    "unit": "img/s",
                    "goal": ">= 40 img/s",
                }
            )
    return rows


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| section | figure | value | unit | floor | ratio | other | goal |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        other = ", ".join(
            f"{k} {_fmt(r[k])}"
            for k in (
                "vs_naive",
                "vs_torch",
                "p99_ms",
                "rps",
                "rps_vs_1_client",
                "encode_p50_ms",
                "search_p50_ms",
                "server_cpu_ms_per_request",
                "server_cores_busy",
            )
            if k in r
        )
        print(
            f"| {r['section']} | {r['metric']} | {_fmt(r['value'])} | {r['unit']} | {_fmt(r.get('floor'))} | "
            f"{_fmt(r.get('ratio'))} | {other} | {r.get('goal', '')} |"
        )


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    http = [r for r in rows if r["section"] == "http"]
    for key in sorted({(r["catalogue"], r["design"]) for r in http}):
        mine = sorted((r for r in http if (r["catalogue"], r["design"]) == key), key=lambda r: r["clients"])
        left.plot(
            [r["clients"] for r in mine], [r["value"] for r in mine], marker="o", label=f"{key[0]}, {key[1]}"
        )
    left.set(xlabel="concurrent clients", ylabel="/search p50 latency (ms)", title="Latency vs clients")
    left.legend(fontsize=8)
    enc = [r for r in rows if r["section"] in ("encode", "build") and r["unit"] == "img/s"]
    right.barh([r["metric"].split(",")[0] for r in enc], [r["value"] for r in enc], color="#4a7")
    right.set(xlabel="images/s", title="Encoding throughput")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--data", type=Path, required=True, help="the demo dataset (its test split is the catalogue)"
    )
    parser.add_argument(
        "--index", type=Path, help="the demo index (http section; else only the synthetic one)"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--images", type=int, default=64, help="images for the encode and crops sections")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flat-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=25.0,
        help="memory read bandwidth for the flat floor (machine-notes.md: about 25 GB/s)",
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per client setting")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--synthetic", type=int, default=100_000, help="items of the synthetic catalogue (0: none)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--plot", type=Path, help="PNG: latency vs clients and images/s per method (matplotlib)"
    )
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    import torch

    from asen_search.model.data.dataset import load_dataset
    from asen_search.model.nn.preprocess import load_image
    from asen_search.model.tuning import tune_allocator

    tune_allocator()
    torch.set_num_threads(2)
    paths = list(load_dataset(args.data).split("test").paths[: args.images])
    rows: list[dict[str, Any]] = []
    if "encode" in only:
        rows += encode_section(args.checkpoint, [load_image(p) for p in paths], args.rounds)
    if "crops" in only:
        rows += crops_section(args.checkpoint, paths, args.rounds)
    if "flat" in only:
        rows += flat_section(args.flat_sizes, args.bandwidth_gbs)
    if "http" in only:
        rows += http_section(
            args.checkpoint,
            args.index,
            args.data / "images" / "test" if (args.data / "images" / "test").is_dir() else None,
            args.requests,
            args.clients,
            args.synthetic,
        )
    if "build" in only:
        rows += build_section(args.checkpoint, args.data)
    print(f"command: {' '.join(sys.argv)}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()

"""FAISS index options at catalogue scale (default 1M items for one attribute): memory per item,
recall@10 against exact search, build time, load time (read_index and mmap) and query latency.

    .venv/bin/python -m bench.index_scale --checkpoint /tmp/composerun/data/model/best.pt \
        --images /tmp/composerun/data/data/images --items 1000000 --json /tmp/idxscale/results.json

(`--items 50000` checks the whole pipeline in about a minute; the IVF nlist scales with it, as the
power of two nearest 4 * sqrt(items). `--extra HNSW32,SQfp16 IVF4096,SQfp16` measures more factory
strings: SQ8's quantisation alone caps recall@10 near 0.96 here, and the cap falls as items grow.)

Vectors. Up to `--real` catalogue images are encoded by the trained model for `--attribute` (cached
as .npy under `--work-dir`, so a rerun skips the encoder). `--real-queries` of them are held out as
queries; the rest go into the base set. The base is filled up to `--items` with synthetic vectors:
each is a random real base vector plus zero-mean Gaussian noise (covariance shaped like the real
vectors' covariance unless `--noise isotropic`), re-normalised to unit length. The noise scale is
found by bisection so that the median cosine similarity of a synthetic vector to its nearest real
vector equals the median nearest-neighbour cosine of the real vectors among themselves
(leave-one-out); both distributions are printed. `--synthetic-queries` extra synthetic vectors
(not in the base) join the queries.

Measurements, one index at a time, all metric inner product, built with `faiss.index_factory`,
faiss.omp_set_num_threads(--threads, default 2):
- bytes/item: serialised index size (write_index file) / items; RSS B/item: resident-set growth
  of this process while building (index held, sample copies freed) / items;
- build s: train + add (PQ without polysemous training: "PQ32np"); load s: read_index after the
  file's page cache was dropped (best effort, posix_fadvise) / again with the file cached;
  mmap s: read_index with IO_FLAG_MMAP_IFC (flat-code storage: Flat, SQ, PQ, HNSW storage) or
  IO_FLAG_MMAP (IVF inverted lists);
- recall@10: |top-10 ∩ exact top-10| / 10 over all queries, exact = brute force (IndexFlatIP);
- p50/p99 ms: one query per search call over all queries; batch64 ms/q: 64 queries per call,
  time per query (median over batches).
HNSW rows sweep efSearch, IVF rows sweep nprobe. The recommendation is the approximate option
with recall@10 >= `--target-recall` that minimises (bytes/item / smallest) x (p50 / smallest)
among those that qualify.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import hashlib
import json
import math
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
K = 10
BATCH = 64
HNSW_EF_SEARCH = (16, 32, 64, 128, 256, 512)
IVF_NPROBE = (4, 8, 16, 32, 64, 128, 256)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- vectors


def find_images(folder: Path, limit: int, seed: int) -> list[Path]:
    """A seeded random sample of at most `limit` images under `folder` (recursive)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SystemExit(f"no images under {folder}")
    if len(files) > limit:
        picked = np.random.default_rng(seed).choice(len(files), limit, replace=False)
        files = [files[i] for i in sorted(picked)]
    return files


def real_vectors(args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    """Encoder vectors `[n, dim]` for the sampled images, from the .npy cache when it matches."""
    files = find_images(args.images, args.real, args.seed)
    stat = args.checkpoint.stat()
    key = hashlib.sha1(
        json.dumps(
            [
                str(args.checkpoint.resolve()),
                stat.st_size,
                stat.st_mtime_ns,
                args.attribute,
                [str(p) for p in files],
            ]
        ).encode()
    ).hexdigest()[:16]
    cache = args.work_dir / f"real_a{args.attribute}_{len(files)}_{key}.npy"
    meta_path = cache.with_suffix(".json")
    if cache.exists() and meta_path.exists():
        log(f"real vectors: cached {cache}")
        return np.load(cache), json.loads(meta_path.read_text())

    from tqdm import tqdm

    from asen_search.model.encoder import Encoder
    from asen_search.model.nn.preprocess import load_image

    encoder = Encoder.from_checkpoint(args.checkpoint)
    out = np.zeros((len(files), encoder.dim), dtype=np.float32)
    kept = np.zeros(len(files), dtype=bool)
    chunk = 128
    start_t = time.perf_counter()
    for start in tqdm(range(0, len(files), chunk), desc="encode", unit="chunk", file=sys.stderr):
        images, rows = [], []
        for i, path in enumerate(files[start : start + chunk], start):
            try:
                images.append(load_image(path))
                rows.append(i)
            except OSError as exc:
                log(f"skip unreadable {path}: {exc}")
        if images:
            out[rows] = encoder.encode(images, [args.attribute], batch_size=32)[:, 0]
            kept[rows] = True
    meta = {
        "checkpoint": str(args.checkpoint),
        "attribute": args.attribute,
        "attribute_name": encoder.attribute_names[args.attribute],
        "n_attributes": len(encoder.attributes),
        "dim": encoder.dim,
        "images": int(kept.sum()),
        "encode_s": round(time.perf_counter() - start_t, 1),
    }
    vectors = out[kept]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    meta_path.write_text(json.dumps(meta, indent=1))
    log(f"real vectors: encoded {len(vectors)} images in {meta['encode_s']} s -> {cache}")
    return vectors, meta


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def nn_cosine(queries: np.ndarray, base: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Cosine of each (unit) query to its nearest (unit) base vector, in chunks."""
    best = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), 2048):
        sims = queries[start : start + 2048] @ base.T
        if exclude_self:
            rows = np.arange(len(sims))
            sims[rows, rows + start] = -np.inf
        best[start : start + 2048] = sims.max(axis=1)
    return best


def cosine_stats(values: np.ndarray) -> dict[str, float]:
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {
        "p10": round(float(p10), 4),
        "median": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "mean": round(float(values.mean()), 4),
    }


@dataclass
class NoiseModel:
    """Synthetic vector = unit(parent + scale * z @ shape.T), z ~ N(0, I)."""

    shape: np.ndarray
    scale: float = 0.0

    def sample(
        self, parents: np.ndarray, rng: np.random.Generator, z: np.ndarray | None = None
    ) -> np.ndarray:
        if z is None:
            z = rng.standard_normal(parents.shape, dtype=np.float32)
        return unit(parents + self.scale * (z @ self.shape.T))


def noise_model(real: np.ndarray, kind: str) -> NoiseModel:
    """Noise covariance: the real vectors' (trace normalised to dim) or the identity."""
    dim = real.shape[1]
    if kind == "isotropic":
        return NoiseModel(np.eye(dim, dtype=np.float32))
    cov = np.cov(real.astype(np.float64), rowvar=False)
    cov *= dim / np.trace(cov)
    cov += 1e-3 * np.eye(dim)
    return NoiseModel(np.linalg.cholesky(cov).astype(np.float32))


def calibrate(
    model: NoiseModel, real: np.ndarray, target: float, rng: np.random.Generator, n: int = 4000
) -> np.ndarray:
    """Bisect the noise scale (on log scale, common random numbers) so that the median cosine of a
    synthetic vector to its nearest real vector is `target`; returns that sample's NN cosines."""
    parents = real[rng.integers(0, len(real), n)]
    z = rng.standard_normal(parents.shape, dtype=np.float32)
    lo, hi = 1e-4, 1.0
    for _ in range(40):
        model.scale = math.sqrt(lo * hi)
        median = float(np.median(nn_cosine(model.sample(parents, rng, z), real)))
        if abs(median - target) < 1e-4:
            break
        lo, hi = (model.scale, hi) if median > target else (lo, model.scale)
    return nn_cosine(model.sample(parents, rng, z), real)


# ---------------------------------------------------------------------------------------------- memory


class PeakRss:
    """Samples this process's RSS every 20 ms in a thread (faiss releases the GIL)."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.start = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def release_memory() -> None:
    """Give freed heap back to the kernel so the next RSS delta starts clean."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):
            pass


def drop_page_cache(path: Path) -> None:
    """Best effort: evict `path` from the page cache (a cold read without root)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- options


@dataclass
class Option:
    name: str
    factory: str
    sweep: str = ""  # "efSearch", "nprobe" or ""
    values: tuple[int, ...] = ()


@dataclass
class Row:
    option: str
    factory: str
    param: str
    recall: float
    recall_real: float
    p50_ms: float
    p99_ms: float
    batch_ms_per_query: float


@dataclass
class Result:
    option: str
    factory: str
    items: int
    file_bytes_per_item: float
    rss_bytes_per_item: float
    peak_rss_mb: float
    train_s: float
    add_s: float
    build_s: float
    load_cold_s: float
    load_warm_s: float
    load_rss_mb: float
    mmap_load_s: float | None
    mmap_rss_mb: float | None
    mmap_flag: str
    mmap_same_results: bool | None
    rows: list[Row] = field(default_factory=list)


def extra_option(factory: str) -> Option:
    """Any factory string; HNSW sweeps efSearch, IVF sweeps nprobe."""
    if factory.startswith("HNSW"):
        return Option(factory, factory, "efSearch", HNSW_EF_SEARCH)
    if factory.startswith("IVF"):
        nlist = int(factory[3:].split(",")[0].split("_")[0])
        return Option(factory, factory, "nprobe", tuple(p for p in IVF_NPROBE if p <= nlist))
    return Option(factory, factory)


def options(items: int, nlist: int | None, only: set[str] | None, extra: list[str]) -> list[Option]:
    nlist = nlist or 2 ** round(math.log2(4 * math.sqrt(items)))
    chosen = [
        Option("Flat", "Flat"),
        Option("SQ8", "SQ8"),
        Option("SQfp16", "SQfp16"),
        Option("PQ32", "PQ32np"),
        Option("HNSW32", "HNSW32", "efSearch", HNSW_EF_SEARCH),
        Option("HNSW32,SQ8", "HNSW32,SQ8", "efSearch", HNSW_EF_SEARCH),
        Option(f"IVF{nlist},SQ8", f"IVF{nlist},SQ8", "nprobe", tuple(p for p in IVF_NPROBE if p <= nlist)),
    ]
    if only:
        chosen = [o for o in chosen if o.name in only or (o.sweep == "nprobe" and "IVF" in only)]
        if "PQ64" in only:
            chosen.append(Option("PQ64", "PQ64np"))
    return chosen + [extra_option(f) for f in extra]


def set_param(index: Any, sweep: str, value: int) -> None:
    import faiss

    if sweep == "efSearch":
        index.hnsw.efSearch = value
    elif sweep == "nprobe":
        faiss.extract_index_ivf(index).nprobe = value


def build(option: Option, base: np.ndarray, rng: np.random.Generator) -> tuple[Any, float, float]:
    """Train (on a sample, when the index needs it) and add; returns (index, train s, add s)."""
    import faiss

    index = faiss.index_factory(base.shape[1], option.factory, faiss.METRIC_INNER_PRODUCT)
    if option.sweep == "efSearch":
        index.hnsw.efConstruction = 40
    train_s = 0.0
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        n_train = min(len(base), 40 * ivf.nlist if ivf is not None else 100_000)
        sample = base[np.sort(rng.choice(len(base), n_train, replace=False))]
        start = time.perf_counter()
        index.train(sample)
        train_s = time.perf_counter() - start
        del sample
    start = time.perf_counter()
    for lo in range(0, len(base), 100_000):
        index.add(base[lo : lo + 100_000])
    return index, train_s, time.perf_counter() - start


def latency(index: Any, queries: np.ndarray) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) one query per call, and median ms per query with 64 queries per call."""
    for q in queries[:5]:
        index.search(q[None], K)
    single = []
    for q in queries:
        start = time.perf_counter()
        index.search(q[None], K)
        single.append(time.perf_counter() - start)
    batched = []
    for lo in range(0, len(queries) - BATCH + 1, BATCH):
        start = time.perf_counter()
        index.search(queries[lo : lo + BATCH], K)
        batched.append((time.perf_counter() - start) / BATCH)
    if not batched:  # fewer queries than one batch
        start = time.perf_counter()
        index.search(queries, K)
        batched.append((time.perf_counter() - start) / len(queries))
    p50, p99 = np.percentile(single, [50, 99]) * 1000
    return float(p50), float(p99), float(np.median(batched) * 1000)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per-query |found ∩ exact| / k."""
    return np.array([len(set(f.tolist()) & set(e.tolist())) / exact.shape[1] for f, e in zip(found, exact)])


def measure(
    option: Option,
    base: np.ndarray,
    queries: np.ndarray,
    exact: np.ndarray,
    n_real_queries: int,
    work_dir: Path,
    rng: np.random.Generator,
) -> Result:
    import faiss

    release_memory()
    with PeakRss() as mem:
        index, train_s, add_s = build(option, base, rng)
        release_memory()
        rss_growth = mem.rss() - mem.start
    n = len(base)
    log(f"  built in {train_s + add_s:.1f} s (train {train_s:.1f}), RSS +{rss_growth / 2**20:.0f} MB")

    path = work_dir / "index.faiss"
    faiss.write_index(index, str(path))
    file_bytes = path.stat().st_size

    rows: list[Row] = []
    for value in option.values or (0,):
        set_param(index, option.sweep, value)
        _, found = index.search(queries, K)
        per_query = recall_at_k(found, exact)
        p50, p99, batch = latency(index, queries)
        param = f"{option.sweep}={value}" if option.sweep else ""
        rows.append(
            Row(
                option.name,
                option.factory,
                param,
                float(per_query.mean()),
                float(per_query[:n_real_queries].mean()),
                p50,
                p99,
                batch,
            )
        )
        log(
            f"  {param or '-':>12}: recall@10 {rows[-1].recall:.4f}, p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
            f"batch64 {batch:.4f} ms/q"
        )
    check_param = option.values[-1] if option.values else 0
    set_param(index, option.sweep, check_param)
    _, reference = index.search(queries[:8], K)
    del index
    release_memory()

    import psutil

    process = psutil.Process()
    drop_page_cache(path)
    before = process.memory_info().rss
    start = time.perf_counter()
    loaded = faiss.read_index(str(path))
    load_cold = time.perf_counter() - start
    load_rss = (process.memory_info().rss - before) / 2**20
    del loaded
    release_memory()
    start = time.perf_counter()
    loaded = faiss.read_index(str(path))
    load_warm = time.perf_counter() - start
    del loaded
    release_memory()

    is_ivf = option.sweep == "nprobe"
    flag_name = "IO_FLAG_MMAP" if is_ivf else "IO_FLAG_MMAP_IFC"
    mmap_s: float | None = None
    mmap_rss: float | None = None
    same: bool | None = None
    drop_page_cache(path)
    before = process.memory_info().rss
    try:
        start = time.perf_counter()
        mapped = faiss.read_index(str(path), getattr(faiss, flag_name) | faiss.IO_FLAG_READ_ONLY)
        mmap_s = time.perf_counter() - start
        mmap_rss = (process.memory_info().rss - before) / 2**20
        set_param(mapped, option.sweep, check_param)
        same = bool((mapped.search(queries[:8], K)[1] == reference).all())
        del mapped
    except RuntimeError as exc:
        log(f"  mmap read not supported: {str(exc).splitlines()[0][:200]}")
    release_memory()
    path.unlink()
    log(
        f"  file {file_bytes / n:.1f} B/item, load cold {load_cold:.2f} s / warm {load_warm:.2f} s, "
        f"mmap {mmap_s if mmap_s is None else round(mmap_s, 4)} s"
    )
    return Result(
        option.name,
        option.factory,
        n,
        file_bytes / n,
        rss_growth / n,
        (mem.peak - mem.start) / 2**20,
        train_s,
        add_s,
        train_s + add_s,
        load_cold,
        load_warm,
        load_rss,
        mmap_s,
        mmap_rss,
        flag_name,
        same,
        rows,
    )


# ---------------------------------------------------------------------------------------------- report


def recommend(results: list[Result], target: float) -> tuple[Result, Row] | None:
    """The approximate (option, param) with recall >= target minimising normalised memory x p50."""
    candidates = [(r, row) for r in results if r.option != "Flat" for row in r.rows if row.recall >= target]
    if not candidates:
        return None
    min_bytes = min(r.file_bytes_per_item for r, _ in candidates)
    min_p50 = min(row.p50_ms for _, row in candidates)
    return min(candidates, key=lambda c: (c[0].file_bytes_per_item / min_bytes) * (c[1].p50_ms / min_p50))


def table(results: list[Result]) -> str:
    head = (
        "| index | search param | bytes/item (file) | RSS B/item (build) | build s | load s cold/warm | mmap load s "
        "| recall@10 | p50 ms | p99 ms | batch64 ms/q |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        for i, row in enumerate(r.rows):
            fixed = (
                (
                    f"{r.file_bytes_per_item:.1f} | {r.rss_bytes_per_item:.0f} | {r.build_s:.1f} | "
                    f"{r.load_cold_s:.2f}/{r.load_warm_s:.2f} | "
                    f"{'n/a' if r.mmap_load_s is None else f'{r.mmap_load_s:.4f}'}"
                )
                if i == 0
                else " | | | | "
            )
            lines.append(
                f"| {r.option if i == 0 else ''} | {row.param or '-'} | {fixed} | {row.recall:.4f} | "
                f"{row.p50_ms:.3f} | {row.p99_ms:.3f} | {row.batch_ms_per_query:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/composerun/data/model/best.pt"))
    parser.add_argument(
        "--images",
        type=Path,
        default=Path("/tmp/composerun/data/data/images"),
        help="folder searched recursively for .jpg/.jpeg/.png",
    )
    parser.add_argument("--attribute", type=int, default=0, help="attribute index to encode")
    parser.add_argument("--real", type=int, default=1500, help="at most this many real images")
    parser.add_argument("--items", type=int, default=1_000_000, help="base vectors (real + synthetic)")
    parser.add_argument("--real-queries", type=int, default=150, help="held-out real vectors used as queries")
    parser.add_argument(
        "--synthetic-queries", type=int, default=50, help="synthetic queries (not in the base)"
    )
    parser.add_argument(
        "--noise",
        choices=("shaped", "isotropic"),
        default="shaped",
        help="noise covariance: the real vectors' covariance or the identity",
    )
    parser.add_argument("--nlist", type=int, help="IVF lists (default: power of two nearest 4 * sqrt(items))")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="a subset of: Flat SQ8 SQfp16 PQ32 PQ64 HNSW32 HNSW32,SQ8 IVF",
    )
    parser.add_argument(
        "--extra",
        nargs="+",
        default=[],
        metavar="FACTORY",
        help="more index_factory strings to measure, e.g. HNSW32,SQfp16 IVF4096,SQfp16",
    )
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=2, help="faiss.omp_set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/idxscale"))
    parser.add_argument("--json", type=Path, default=Path("/tmp/idxscale/results.json"))
    args = parser.parse_args()
    # As the service runs (docs/tuning.md): idle OpenMP threads sleep instead of spinning, which
    # matters on 2 shared cores (torch's pool stays alive after encoding). Read when faiss loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()

    real, meta = real_vectors(args)
    real = unit(real.astype(np.float32))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(real))
    n_real_q = min(args.real_queries, len(real) // 5)
    real_queries, real_base = real[order[:n_real_q]], real[order[n_real_q:]]
    if args.items < len(real_base):
        real_base = real_base[: args.items]

    # Noise calibration: synthetic -> nearest real cosine matches real -> nearest other real cosine.
    real_nn = nn_cosine(real_base, real_base, exclude_self=True)
    model = noise_model(real_base, args.noise)
    synth_nn = calibrate(model, real_base, float(np.median(real_nn)), rng)
    log(
        f"noise scale {model.scale:.5f}: real NN cos {cosine_stats(real_nn)}, synthetic->real NN cos {cosine_stats(synth_nn)}"
    )

    import faiss

    faiss.omp_set_num_threads(args.threads)
    dim = real.shape[1]
    base = np.empty((args.items, dim), dtype=np.float32)
    start = time.perf_counter()
    for lo in range(0, args.items, 100_000):
        hi = min(lo + 100_000, args.items)
        base[lo:hi] = model.sample(real_base[rng.integers(0, len(real_base), hi - lo)], rng)
    base[rng.choice(args.items, len(real_base), replace=False)] = real_base
    synth_queries = model.sample(real_base[rng.integers(0, len(real_base), args.synthetic_queries)], rng)
    queries = np.ascontiguousarray(np.concatenate([real_queries, synth_queries]))
    log(
        f"base: {args.items} vectors ({len(real_base)} real) in {time.perf_counter() - start:.1f} s; "
        f"queries: {n_real_q} real held-out + {args.synthetic_queries} synthetic"
    )

    start = time.perf_counter()
    exact_d = np.empty((len(queries), K), dtype=np.float32)
    exact = np.empty((len(queries), K), dtype=np.int64)
    for lo in range(0, len(queries), BATCH):
        exact_d[lo : lo + BATCH], exact[lo : lo + BATCH] = faiss.knn(
            queries[lo : lo + BATCH], base, K, metric=faiss.METRIC_INNER_PRODUCT
        )
    gt_s = time.perf_counter() - start
    top1 = {
        "real_queries": cosine_stats(exact_d[:n_real_q, 0]),
        "synthetic_queries": cosine_stats(exact_d[n_real_q:, 0]),
        "real_queries_top10": cosine_stats(exact_d[:n_real_q, -1]),
    }
    log(f"exact top-{K} in {gt_s:.1f} s; query top-1 cos {top1}")

    only = set(args.only) if args.only else None
    todo = options(args.items, args.nlist, only, args.extra)
    results: list[Result] = []
    for option in todo:
        log(f"[{option.name}] {option.factory}")
        results.append(measure(option, base, queries, exact, n_real_q, args.work_dir, rng))
        pq_recall = results[-1].rows[0].recall
        if option.name == "PQ32" and pq_recall < args.target_recall and (only is None or "PQ64" not in only):
            log(f"PQ32 recall {pq_recall:.3f} < {args.target_recall}: trying PQ64")
            results.append(
                measure(Option("PQ64", "PQ64np"), base, queries, exact, n_real_q, args.work_dir, rng)
            )

    best = recommend(results, args.target_recall)
    n_attr = int(meta.get("n_attributes", 1))
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{args.items:,} items x dim {dim} (attribute {args.attribute} {meta.get('attribute_name', '')!r}), "
        f"{len(real_base)} real + {args.items - len(real_base):,} synthetic; {len(queries)} queries "
        f"({n_real_q} real held-out, {args.synthetic_queries} synthetic); faiss {faiss.__version__}, "
        f"{args.threads} threads, {os.cpu_count()} CPUs"
    )
    print(
        f"synthetic = unit(real + {model.scale:.4f} * N(0, {'Sigma_real' if args.noise == 'shaped' else 'I'})); "
        f"NN cosine real->real {cosine_stats(real_nn)}, synthetic->real {cosine_stats(synth_nn)}"
    )
    print(
        f"exact top-1 cosine: real queries {top1['real_queries']}, synthetic queries {top1['synthetic_queries']}"
    )
    print()
    print(table(results))
    print()
    if best is None:
        print(
            f"recommendation: no approximate option reached recall@10 >= {args.target_recall}; use Flat or SQfp16."
        )
    else:
        r, row = best
        gb = r.file_bytes_per_item * args.items / 1e9
        print(
            f"recommendation: {r.option} {row.param} — recall@10 {row.recall:.4f} (real queries {row.recall_real:.4f}), "
            f"{r.file_bytes_per_item:.0f} B/item = {gb:.2f} GB per attribute at {args.items:,} items "
            f"({gb * n_attr:.2f} GB for {n_attr} attributes), p50 {row.p50_ms:.3f} ms, p99 {row.p99_ms:.3f} ms "
            f"(rule: recall@10 >= {args.target_recall}, minimise bytes/item x p50, each relative to the best qualifying)"
        )
    print(f"total wall time {time.perf_counter() - wall:.0f} s")

    report = {
        "command": sys.argv,
        "items": args.items,
        "dim": dim,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "faiss": faiss.__version__,
        "python": platform.python_version(),
        "real": meta,
        "real_in_base": len(real_base),
        "queries": {"real": n_real_q, "synthetic": args.synthetic_queries},
        "synthetic": {
            "method": f"unit(parent + scale * N(0, {args.noise} covariance)); scale bisected so the median "
            "synthetic->nearest-real cosine equals the median real leave-one-out NN cosine",
            "noise": args.noise,
            "scale": model.scale,
            "real_nn_cosine": cosine_stats(real_nn),
            "synthetic_to_real_nn_cosine": cosine_stats(synth_nn),
        },
        "exact_top1_cosine": top1,
        "ground_truth_s": gt_s,
        "target_recall": args.target_recall,
        "results": [asdict(r) for r in results],
        "recommendation": None
        if best is None
        else {
            "option": best[0].option,
            "param": best[1].param,
            "recall": best[1].recall,
            "bytes_per_item": best[0].file_bytes_per_item,
            "p50_ms": best[1].p50_ms,
        },
        "wall_s": time.perf_counter() - wall,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"json: {args.json}")


if __name__ == "__main__":
    main()

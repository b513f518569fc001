"""Encoding throughput, side by side in one run: the single-process `asen index build` against
`asen encode` on a local Ray instance with 1 actor (all cores) and with N actors (a core each).

    .venv/bin/python bench/ray_encode_throughput.py --checkpoint var/demo/model/best.pt \\
        --catalogue var/demo/data --split test --limit 400

Each actor's start and model load are inside the measured time (Ray's own start is not); that
overhead is also reported alone: a run over 1 shard of 1 image.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from asen_search.model.tuning import PROCESS_ENV, tune_allocator
from asen_search.service.catalogue.build import BuildConfig, build_index
from asen_search.service.catalogue.ray_encode import EncodeConfig, encode_with_ray
from asen_search.service.catalogue.sources import read_catalogue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--catalogue", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=400, help="images to encode")
    parser.add_argument("--shard-size", type=int, default=50)
    args = parser.parse_args()
    import ray

    tune_allocator()  # as `asen` does for itself; the actors get the same (ray_encode.py)
    entries = read_catalogue(args.catalogue, args.split)[:args.limit]
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_index(BuildConfig(args.checkpoint, args.catalogue, Path(tmp) / "index", progress=False), entries)
        rows.append(("asen index build (one process, all cores)", time.perf_counter() - start))
        for actors, cpus in ((1, cores), (cores, 1)):
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": PROCESS_ENV})
            start = time.perf_counter()
            encode_with_ray(EncodeConfig(args.checkpoint, Path(tmp) / f"shards-{actors}", actors=actors,
                                         cpus_per_actor=cpus, shard_size=args.shard_size), entries)
            rows.append((f"asen encode, {actors} actor(s) x {cpus} thread(s)", time.perf_counter() - start))
            start = time.perf_counter()
            encode_with_ray(EncodeConfig(args.checkpoint, Path(tmp) / f"overhead-{actors}", actors=actors,
                                         cpus_per_actor=cpus, shard_size=1), entries[:1])
            rows.append((f"  overhead: 1 image, {actors} actor(s)", time.perf_counter() - start))
            ray.shutdown()
            shutil.rmtree(Path(tmp) / f"shards-{actors}")
    print(f"{len(entries)} images, {cores} cores\n\n| run | seconds | images/s |\n|---|---|---|")
    for name, seconds in rows:
        n = 1 if "overhead" in name else len(entries)
        print(f"| {name} | {seconds:.1f} | {n / seconds:.1f} |")


if __name__ == "__main__":
    main()

"""Encoding throughput, side by side in one run: the single-process `asen index build` against
`asen encode` on a local Ray instance with 1 actor (all cores) and with N actors (a core each).

    .venv/bin/python bench/ray_encode_throughput.py --checkpoint var/demo/model/best.pt \\
        --catalogue var/demo/data --split test --limit 400

Each actor's start and model load are inside the measured time (Ray's own start is not); that
overhead is also reported alone: a run over 1 shard of 1 image. For each Ray run it also reports the
rate inside the actors (the time they spent in whole shards) and where the CPU time of the run went,
by process (this process, the actors, Ray's own processes: raylet, GCS, agents), to show what a
Ray run costs besides encoding.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from asen_search.model.tuning import PROCESS_ENV, tune_allocator
from asen_search.service.jobs.build import BuildConfig, build_index
from asen_search.service.jobs.ray_encode import EncodeConfig, encode_with_ray
from asen_search.service.jobs.sources import read_catalogue


def _cpu_by_process() -> Counter[str]:
    """CPU seconds (user + system) of this process and every descendant, by kind of process."""
    me = psutil.Process()
    found: Counter[str] = Counter()
    for proc in [me, *me.children(recursive=True)]:
        try:
            name, times, cmd = proc.name(), proc.cpu_times(), " ".join(proc.cmdline()[:3])
        except psutil.Error:
            continue
        kind = (
            "this process (driver, Ray Data's executor)"
            if proc.pid == me.pid
            else "encoder actors"
            if "ShardEncoder" in name or "ShardEncoder" in cmd
            else "idle Ray workers"
            if name.startswith("ray::")
            else name
            if name in ("raylet", "gcs_server")
            else "other Ray processes (agents, log monitor)"
        )
        found[kind] += times.user + times.system
    return found


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
    entries = read_catalogue(args.catalogue, args.split)[: args.limit]
    cores = os.cpu_count() or 1
    rows, cpu_notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_index(
            BuildConfig(args.checkpoint, args.catalogue, Path(tmp) / "index", progress=False), entries
        )
        rows.append(("asen index build (one process, all cores)", time.perf_counter() - start))
        for actors, cpus in ((1, cores), (cores, 1)):
            ray.init(
                num_cpus=cores,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": PROCESS_ENV},
            )
            before, start = _cpu_by_process(), time.perf_counter()
            report = encode_with_ray(
                EncodeConfig(
                    args.checkpoint,
                    Path(tmp) / f"shards-{actors}",
                    actors=actors,
                    cpus_per_actor=cpus,
                    shard_size=args.shard_size,
                ),
                entries,
            )
            seconds = time.perf_counter() - start
            rows.append((f"asen encode, {actors} actor(s) x {cpus} thread(s)", seconds))
            after = _cpu_by_process()
            used = {kind: after[kind] - before.get(kind, 0.0) for kind in after}
            cpu_notes.append(
                f"{actors} actor(s) x {cpus} thread(s): {seconds:.1f} s wall; inside the actors "
                f"{report.actor_seconds:.1f} actor-s, {len(entries) / report.actor_seconds:.1f} images/s "
                f"per actor, {report.actor_cpu_seconds / report.actor_seconds:.2f} cores busy per actor; "
                "CPU seconds by process: "
                + ", ".join(f"{k} {v:.1f}" for k, v in sorted(used.items(), key=lambda kv: -kv[1]))
            )
            start = time.perf_counter()
            encode_with_ray(
                EncodeConfig(
                    args.checkpoint,
                    Path(tmp) / f"overhead-{actors}",
                    actors=actors,
                    cpus_per_actor=cpus,
                    shard_size=1,
                ),
                entries[:1],
            )
            rows.append((f"  overhead: 1 image, {actors} actor(s)", time.perf_counter() - start))
            ray.shutdown()
            shutil.rmtree(Path(tmp) / f"shards-{actors}")
    print(f"{len(entries)} images, {cores} cores\n\n| run | seconds | images/s |\n|---|---|---|")
    for name, seconds in rows:
        n = 1 if "overhead" in name else len(entries)
        print(f"| {name} | {seconds:.1f} | {n / seconds:.1f} |")
    print("\n" + "\n".join(cpu_notes))


if __name__ == "__main__":
    main()

"""Where Ray's per-image cost comes from: the same `ShardEncoder` (decode a batch ahead, encode, write
the shard) on the same shards, timed inside the call, side by side in one run: in this process, in a
plain Ray actor (called from the driver), and as the UDF of Ray Data's actor pool (as `asen encode` runs
it). Actor start and model load are outside every number.

    .venv/bin/python bench/ray_actor_context.py --checkpoint var/demo/model/best.pt --catalogue var/demo/data \\
        --split test --images 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from asen_search.model.tuning import PROCESS_ENV, tune_allocator
from asen_search.service.jobs.ray_encode import ShardEncoder
from asen_search.service.jobs.sources import read_catalogue

SHARD = 50


class TimedEncoder(ShardEncoder):
    """Adds what the call cost, and on which thread it ran."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start, cpu = time.perf_counter(), time.process_time()
        out = super().__call__(batch)
        out["timing"] = np.array(
            [
                json.dumps(
                    {
                        "wall": time.perf_counter() - start,
                        "cpu": time.process_time() - cpu,
                        "thread": threading.current_thread().name,
                    }
                )
            ]
            * len(batch["shard"])
        )
        return out


def _row(name: str, timings: list[dict[str, Any]], images: int) -> str:
    wall, cpu = sum(t["wall"] for t in timings), sum(t["cpu"] for t in timings)
    return (
        f"| {name} | {timings[0]['thread']} | {wall:.1f} | {images / wall:.1f} | {cpu / images * 1000:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--catalogue", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    import ray
    import ray.data

    tune_allocator()
    entries = read_catalogue(args.catalogue, args.split)[: args.images]
    rows = [
        {
            "shard": n,
            "entries": json.dumps(
                [
                    {"id": e.id, "path": str(e.path), "metadata": e.metadata}
                    for e in entries[n * SHARD : (n + 1) * SHARD]
                ]
            ),
        }
        for n in range((len(entries) + SHARD - 1) // SHARD)
    ]
    batches = [
        {"shard": np.array([r["shard"]]), "entries": np.array([r["entries"]], dtype=object)} for r in rows
    ]
    ctor = (str(args.checkpoint), tempfile.mkdtemp(), 32, 2)
    table = []
    local = TimedEncoder(*ctor)
    local(batches[0])  # warm-up, as the actors get one below
    table.append(_row("this process", [json.loads(local(b)["timing"][0]) for b in batches], len(entries)))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": PROCESS_ENV})
    actor = ray.remote(num_cpus=2)(TimedEncoder).remote(*ctor)
    ray.get(actor.__call__.remote(batches[0]))
    table.append(
        _row(
            "a plain Ray actor",
            [json.loads(ray.get(actor.__call__.remote(b))["timing"][0]) for b in batches],
            len(entries),
        )
    )
    ray.kill(actor)
    done = (
        ray.data.from_items(rows[:1] + rows, override_num_blocks=len(rows) + 1)
        .map_batches(
            TimedEncoder,
            batch_size=1,
            fn_constructor_args=ctor,
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=2,
        )
        .take_all()
    )
    timings = [json.loads(d["timing"]) for d in done][1:]  # the first (warm-up) shard left out
    table.append(_row("Ray Data's actor pool (asen encode)", timings, len(entries)))
    ray.shutdown()
    print(f"{len(entries)} images in shards of {SHARD}, 2 torch threads everywhere\n")
    print("| where | thread | seconds | images/s | CPU ms per image |\n|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()

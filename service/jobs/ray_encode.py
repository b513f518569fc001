"""`asen encode`: a catalogue encoded on a Ray cluster (Ray Data, an actor pool of encoders), into
Parquet shards (`shards.py`) that `asen index load-shards` turns into a FAISS directory or a Milvus
collection. Ray is an optional dependency: `pip install 'asen-search[ray]'`.

Each actor loads the model once and encodes whole shards (`shard_size` catalogue entries), decoding
one batch ahead in a thread like `asen index build`, and writes the shard itself, so only summaries
travel back. A shard whose Parquet file exists is skipped, so a second run resumes; an actor that dies
is restarted by Ray and its shard retried (`max_restarts`, `max_task_retries`). Unreadable images are
listed per shard and in the summary, never fatal.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asen_search.model.image_input import ImageLimits
from asen_search.service.jobs.locations import absolute, as_ref
from asen_search.service.jobs.shards import failures_of, open_plan, shard_path, write_shard
from asen_search.service.jobs.sources import CatalogueEntry, check_entries, entries_digest

ACTOR_RESTARTS = 3  # an encoder actor that dies is restarted this often, and its shard retried


@dataclass(frozen=True)
class EncodeConfig:
    checkpoint: Path
    out: Path  # the shards folder (shared by every node of a cluster)
    ray: str = "local"  # local: a Ray instance in this process; auto: the running cluster; or an address
    actors: int = 2  # encoder actors (one model each)
    cpus_per_actor: float = 1.0  # also the actor's torch threads
    gpus_per_actor: float = 0.0
    batch_size: int = 32  # images per forward pass
    shard_size: int = 1000  # entries per shard (the unit of resuming and retrying)
    restart: bool = False  # discard the shards of an earlier run instead of resuming


@dataclass(frozen=True)
class EncodeReport:
    shards: int
    encoded_now: int  # images this run read (shards of earlier runs are kept)
    failures: list[dict[str, str]]  # every unreadable image of the whole catalogue: id, reason
    seconds: float
    actor_seconds: float = 0.0  # wall time the actors spent reading, encoding and writing shards (summed)
    actor_cpu_seconds: float = 0.0  # CPU time of the actors' processes meanwhile (all their threads)

    @property
    def images_per_second(self) -> float:
        return self.encoded_now / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        busy = (
            f"; inside the actors {self.actor_seconds:.1f} s ({self.encoded_now / self.actor_seconds:.1f} images/s "
            f"per actor, {self.actor_cpu_seconds / self.actor_seconds:.2f} cores busy)"
            if self.actor_seconds > 0
            else ""
        )
        return (
            f"encoded {self.encoded_now} images in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s) "
            f"into {self.shards} shards; {len(self.failures)} unreadable"
            + (f" (first: {self.failures[0]['id']}: {self.failures[0]['reason']})" if self.failures else "")
            + busy
        )


class ShardEncoder:
    """A Ray actor: one model, encoding whole shards (a Ray Data batch holds one shard per row)."""

    def __init__(self, checkpoint: str, out: str, batch_size: int, threads: int, device: str = "cpu") -> None:
        import torch

        from asen_search.model.encoder import Encoder
        from asen_search.model.tuning import tune_allocator

        tune_allocator()  # the allocator settings of docs/tuning.md, in each actor's own process
        torch.set_num_threads(max(1, threads))
        self.encoder = Encoder.from_checkpoint(checkpoint, device)  # a GPU actor sees only its own GPU
        self.out, self.batch_size = Path(out), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tqdm import tqdm

        from asen_search.service.jobs.build import encode_entries

        encoded, failed, seconds, cpu = [], [], [], []
        for number, entries_json in zip(batch["shard"].tolist(), batch["entries"].tolist()):
            start, start_cpu = time.perf_counter(), time.process_time()
            entries = [
                CatalogueEntry(e["id"], as_ref(e["path"]), e["metadata"]) for e in json.loads(entries_json)
            ]
            self.before_shard(int(number))
            with tqdm(disable=True) as quiet:
                chunk = encode_entries(self.encoder, entries, self.batch_size, ImageLimits(), quiet)
            write_shard(self.out, int(number), chunk.ids, chunk.vectors, chunk.metadata, chunk.failed)
            encoded.append(len(chunk.ids))
            failed.append(len(chunk.failed))
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        return {
            "shard": batch["shard"],
            "encoded": np.array(encoded),
            "failed": np.array(failed),
            "seconds": np.array(seconds),
            "cpu": np.array(cpu),
        }

    def before_shard(self, number: int) -> None:
        """A hook before each shard (tests use it to kill an actor mid-run)."""


def _connect(address: str, cpus: float) -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("distributed encoding needs Ray: pip install 'asen-search[ray]'") from None
    if ray.is_initialized():
        return
    from asen_search.model.tuning import PROCESS_ENV

    runtime_env = {"env_vars": PROCESS_ENV}  # the process tuning of docs/tuning.md in every worker
    if address == "local":
        ray.init(
            num_cpus=max(1, math.ceil(cpus)),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=runtime_env,
        )
    else:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
        except ConnectionError as exc:
            raise RuntimeError(
                f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head`, or "
                "use --ray local"
            ) from None


def encode_with_ray(
    cfg: EncodeConfig, entries: Sequence[CatalogueEntry], actor_class: type[ShardEncoder] = ShardEncoder
) -> EncodeReport:
    """Encode `entries` into shards under `cfg.out` (resuming an earlier run of the same plan)."""
    start = time.monotonic()
    check_entries(list(entries), str(cfg.out))
    from asen_search.model.encoder import Encoder

    model = Encoder.from_checkpoint(cfg.checkpoint)  # what the plan records; the actors load their own
    n_shards = math.ceil(len(entries) / cfg.shard_size)
    plan = {
        "fingerprint": model.fingerprint,
        "attributes": model.attribute_names,
        "dim": model.dim,
        "catalogue": entries_digest(list(entries)),
        "items": len(entries),
        "shard_size": cfg.shard_size,
        "shards": n_shards,
    }
    open_plan(cfg.out, plan, cfg.restart)
    todo = [n for n in range(n_shards) if not shard_path(cfg.out, n).is_file()]
    encoded_now, actor_seconds, actor_cpu = 0, 0.0, 0.0
    if todo:
        _connect(cfg.ray, cfg.actors * cfg.cpus_per_actor)
        import ray.data

        rows = [
            {
                "shard": n,
                "entries": json.dumps(
                    [
                        {"id": e.id, "path": str(absolute(e.path)), "metadata": e.metadata}
                        for e in entries[n * cfg.shard_size : (n + 1) * cfg.shard_size]
                    ]
                ),
            }
            for n in todo
        ]
        summaries = (
            ray.data.from_items(rows, override_num_blocks=len(rows))
            .map_batches(
                actor_class,
                batch_size=1,
                fn_constructor_args=(
                    str(cfg.checkpoint),
                    str(cfg.out),
                    cfg.batch_size,
                    max(1, int(cfg.cpus_per_actor)),
                    "cuda" if cfg.gpus_per_actor else "cpu",
                ),
                compute=ray.data.ActorPoolStrategy(size=cfg.actors),
                num_cpus=cfg.cpus_per_actor,
                num_gpus=cfg.gpus_per_actor or None,
                max_restarts=ACTOR_RESTARTS,
                max_task_retries=ACTOR_RESTARTS,
            )
            .take_all()
        )
        encoded_now = sum(int(s["encoded"]) + int(s["failed"]) for s in summaries)
        actor_seconds = sum(float(s["seconds"]) for s in summaries)
        actor_cpu = sum(float(s["cpu"]) for s in summaries)
    return EncodeReport(
        n_shards, encoded_now, failures_of(cfg.out), time.monotonic() - start, actor_seconds, actor_cpu
    )

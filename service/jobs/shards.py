"""Encoded catalogue shards: what the distributed encoder writes and either backend loads.

A shards folder holds `plan.json` (the model, the catalogue's digest, the shard size) and, per shard
of `shard_size` catalogue entries, `shard-NNNNN.failed.json` (the entries whose image could not be
used, and why) and `shard-NNNNN.parquet` (columns `id`, `metadata` as JSON text, and `vectors`, a
fixed-size list of n_attributes x dim float32). Each file is written atomically, the Parquet file
last: a shard is done when its Parquet file exists, so an interrupted run resumes with the others.
The folder is any path the writers share (one machine, or a shared filesystem for a cluster).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from asen_search.fileio import atomic_write
from asen_search.index import Catalogue
from asen_search.index.transfer import fill_catalogue

PLAN = "plan.json"


def shard_path(folder: Path, number: int) -> Path:
    return folder / f"shard-{number:05d}.parquet"


def failed_path(folder: Path, number: int) -> Path:
    return folder / f"shard-{number:05d}.failed.json"


def open_plan(folder: Path, plan: dict[str, Any], restart: bool = False) -> None:
    """Start or resume the shards folder of this plan; a clear error if it holds another one."""
    folder.mkdir(parents=True, exist_ok=True)
    found_file = folder / PLAN
    if found_file.is_file() and not restart:
        found = json.loads(found_file.read_text())
        if found != plan:
            differs = sorted(k for k in plan if found.get(k) != plan[k])
            raise ValueError(
                f"{folder} holds shards of a different {'/'.join(differs)}; pass --restart to discard them"
            )
        return
    for old in [*folder.glob("shard-*.parquet"), *folder.glob("shard-*.failed.json")]:
        old.unlink()
    atomic_write(found_file, lambda fh: fh.write(json.dumps(plan, indent=2).encode()))


def write_shard(
    folder: Path,
    number: int,
    ids: list[str],
    vectors: np.ndarray,
    metadata: list[dict[str, Any]],
    failed: list[tuple[str, str]],
) -> None:
    """One shard: its failures, then its vectors (`[n, n_attributes, dim]`) as the done marker."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    atomic_write(
        failed_path(folder, number),
        lambda fh: fh.write(json.dumps([{"id": i, "reason": why} for i, why in failed]).encode()),
    )
    n, n_attr, dim = vectors.shape
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "metadata": pa.array([json.dumps(m) for m in metadata], pa.string()),
            "vectors": pa.FixedSizeListArray.from_arrays(flat, n_attr * dim),
        },
        metadata={"n_attributes": str(n_attr), "dim": str(dim)},
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write(shard_path(folder, number), lambda fh: fh.write(buffer.getvalue()))


def read_shard(path: Path) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """(ids, vectors `[n, n_attributes, dim]`, metadata) of one shard."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    n_attr, dim = int(meta[b"n_attributes"]), int(meta[b"dim"])
    flat = table.column("vectors").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(table.num_rows, n_attr, dim)
    return (
        table.column("id").to_pylist(),
        vectors,
        [json.loads(m) for m in table.column("metadata").to_pylist()],
    )


def shards_of(folder: Path) -> list[Path]:
    """The finished shards, in order; FileNotFoundError when there is no plan."""
    if not (folder / PLAN).is_file():
        raise FileNotFoundError(f"{folder}: not a shards folder (no {PLAN}); make one with `asen encode`")
    return sorted(folder.glob("shard-*.parquet"))


def failures_of(folder: Path) -> list[dict[str, str]]:
    return [
        row for path in sorted(folder.glob("shard-*.failed.json")) for row in json.loads(path.read_text())
    ]


def iter_shards(folder: Path) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
    for path in shards_of(folder):
        yield read_shard(path)


def load_shards(
    folder: Path,
    destination: str | Path,
    index_type: str | None = None,
    layout: str = "fields",
    progress: Callable[[int], object] = lambda n: None,
) -> Catalogue:
    """A new catalogue at `destination` (an index directory, or a Milvus collection) from every
    shard of `folder`; refused while shards are missing."""
    plan = json.loads((folder / PLAN).read_text()) if (folder / PLAN).is_file() else None
    done = shards_of(folder)
    if plan is None or len(done) != plan["shards"]:
        raise ValueError(
            f"{folder}: {len(done)} of {plan and plan['shards']} shards are finished; run the same "
            "`asen encode` again to finish them"
        )
    return fill_catalogue(
        destination,
        plan["attributes"],
        plan["dim"],
        plan["fingerprint"],
        iter_shards(folder),
        index_type,
        layout,
        progress,
    )

"""`asen index build`: encode every catalogue image for every attribute and commit the indexes.

Each item's metadata records the absolute path of its image (`service/jobs/item_images.py`), so that the
service can show it, and, when the checkpoint has value prototypes, the predicted value of every
attribute (`service/jobs/tags.py`). Work is kept in `OUT/.build/` as one file per finished chunk of images, so an
interrupted build resumes where it stopped (same checkpoint, same catalogue). Unreadable images are
reported by id and skipped; every other problem stops the build before anything is encoded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from asen_search.fileio import atomic_write, fsync_path
from asen_search.index import CatalogueExists, DirectoryLock, FaissCatalogue
from asen_search.index.dirlock import LOCK_FILE
from asen_search.index.store import current_version
from asen_search.model.encoder import Encoder
from asen_search.model.image_input import ImageLimits, ImageRejected, decode_image
from asen_search.service.jobs.item_images import with_image
from asen_search.service.jobs.locations import ImageRef, absolute, read_bytes
from asen_search.service.jobs.sources import CatalogueEntry, check_entries, entries_digest, read_catalogue
from asen_search.service.jobs.tags import with_tags

WORK_DIR = ".build"
REPORT = "build_report.json"


@dataclass(frozen=True)
class BuildConfig:
    checkpoint: Path
    catalogue: ImageRef  # a local path or a URL (locations.py)
    out: Path
    split: str = "test"  # for a dataset directory
    batch_size: int = 32  # images per forward pass
    chunk_size: int = 512  # images per resumable unit of work
    factory: str = "Flat"  # FAISS factory string of every attribute index
    restart: bool = False  # discard the work of an interrupted build instead of resuming it
    progress: bool = True
    limits: ImageLimits = field(default_factory=ImageLimits)
    device: str = "auto"  # model/device.py
    runtime: str = "auto"  # model/runtime.py
    allow_any_url: bool = False  # a listing may name images anywhere (sources.check_listing)
    replace: bool = False  # `out` may hold a catalogue: kept as a dated backup, then replaced


@dataclass(frozen=True)
class BuildReport:
    out: Path
    items: int
    skipped: list[tuple[str, str]]  # (id, why) of unreadable images
    encoded_now: int  # images read by this run (the rest came from an interrupted one)
    seconds: float
    backup: Path | None = None  # where the replaced catalogue was kept (--replace)

    @property
    def images_per_second(self) -> float:
        return self.encoded_now / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Chunk:
    ids: list[str]
    vectors: np.ndarray  # [n, n_attributes, dim]
    metadata: list[dict[str, Any]]
    failed: list[tuple[str, str]]


def load_or_reason(ref: ImageRef, limits: ImageLimits) -> Image.Image | str:
    """The decoded image at `ref`, or why it cannot be used (also for `asen scan`'s designs)."""
    try:
        data = read_bytes(ref)
    except OSError as exc:
        return f"unreadable file: {exc.strerror or exc}"
    try:
        return decode_image(data, limits)
    except ImageRejected as exc:
        return f"{exc.code}: {exc}"


def _load_batch(entries: Sequence[CatalogueEntry], limits: ImageLimits) -> list[Image.Image | str]:
    return [load_or_reason(e.path, limits) for e in entries]


def encode_entries(
    encoder: Encoder, entries: list[CatalogueEntry], batch_size: int, limits: ImageLimits, bar: tqdm
) -> Chunk:
    """Decode (one batch ahead, in a thread) and encode the images of one chunk; unreadable images
    are listed in `failed`, never fatal. Also used by the distributed encoder (ray_encode.py)."""
    batches = [entries[i : i + batch_size] for i in range(0, len(entries), batch_size)]
    encoded: list[CatalogueEntry] = []
    failed: list[tuple[str, str]] = []
    parts = [np.zeros((0, len(encoder.attributes), encoder.dim), np.float32)]
    with ThreadPoolExecutor(1) as pool:
        pending: Future = pool.submit(_load_batch, batches[0], limits)
        for b, batch in enumerate(batches):
            loaded = pending.result()
            if b + 1 < len(batches):
                pending = pool.submit(_load_batch, batches[b + 1], limits)
            images = []
            for entry, result in zip(batch, loaded):
                if isinstance(result, str):
                    failed.append((entry.id, result))
                    bar.write(f"skipped {entry.id} ({entry.path}): {result}")
                else:
                    encoded.append(entry)
                    images.append(result)
            if images:
                parts.append(encoder.encode(images, batch_size=batch_size))
            bar.update(len(batch))
    vectors = np.concatenate(parts)
    return Chunk(
        [e.id for e in encoded],
        vectors,
        [
            with_image(with_tags(e.metadata, encoder.prototypes, v), absolute(e.path))
            for e, v in zip(encoded, vectors)
        ],
        failed,
    )


def _save_chunk(path: Path, chunk: Chunk) -> None:
    ids = np.array(chunk.ids, dtype=str)
    metadata = np.array([json.dumps(m) for m in chunk.metadata], dtype=str)
    failed = np.array([json.dumps(f) for f in chunk.failed], dtype=str)
    # named keywords, not **dict: numpy's stubs would match a dict's values against allow_pickle
    atomic_write(
        path, lambda fh: np.savez(fh, ids=ids, vectors=chunk.vectors, metadata=metadata, failed=failed)
    )


def _read_chunk(path: Path) -> Chunk:
    with np.load(path, allow_pickle=False) as z:
        return Chunk(
            z["ids"].tolist(),
            z["vectors"].astype(np.float32),
            [json.loads(m) for m in z["metadata"]],
            [tuple(json.loads(f)) for f in z["failed"]],
        )


def _open_work(cfg: BuildConfig, encoder: Encoder, entries: list[CatalogueEntry]) -> Path:
    """The work folder of this build: resumed when its plan matches, else a clear error."""
    plan = {
        "fingerprint": encoder.fingerprint,
        "catalogue": entries_digest(entries),
        "items": len(entries),
        "chunk_size": cfg.chunk_size,
        "factory": cfg.factory,
    }
    return open_work_dir(cfg.out / WORK_DIR, plan, cfg.restart, "an interrupted build")


def open_work_dir(work: Path, plan: dict[str, Any], restart: bool, what: str) -> Path:
    """A resumable job's work folder (also `asen scan`'s): kept when its `plan.json` equals `plan`,
    refused naming what differs when not, emptied first with `restart`."""
    if restart and work.exists():
        shutil.rmtree(work)
    if (work / "plan.json").is_file():
        found = json.loads((work / "plan.json").read_text())
        if found != plan:
            # a key only one of the plans has differs too (a setting the other run did not use)
            differs = sorted(k for k in plan.keys() | found.keys() if found.get(k) != plan.get(k))
            raise ValueError(
                f"{work} holds {what} of a different {'/'.join(differs)}; pass --restart to discard it"
            )
        return work
    work.mkdir(parents=True, exist_ok=True)
    atomic_write(work / "plan.json", lambda fh: fh.write(json.dumps(plan, indent=2).encode()))
    return work


def _chunks(entries: list[CatalogueEntry], size: int) -> Iterator[tuple[int, list[CatalogueEntry]]]:
    for number, start in enumerate(range(0, len(entries), size)):
        yield number, entries[start : start + size]


def build_index(
    cfg: BuildConfig, entries: list[CatalogueEntry] | None = None, encoder: Encoder | None = None
) -> BuildReport:
    """Build (or resume building) the catalogue index at `cfg.out`; `entries` default to those of
    `cfg.catalogue`."""
    start = time.monotonic()
    encoder = encoder or Encoder.from_checkpoint(cfg.checkpoint, cfg.device, cfg.runtime)
    entries = read_catalogue(cfg.catalogue, cfg.split, cfg.allow_any_url) if entries is None else entries
    check_entries(entries, str(cfg.catalogue))
    # The build writes cfg.out from its first chunk to its commit: no server or other build may
    # write it meanwhile (refused here, before any encoding, naming the process that has it).
    with DirectoryLock.acquire(cfg.out, "building the index", create=True) as lock:
        if not cfg.replace and (version := current_version(cfg.out)) is not None:
            raise CatalogueExists(
                f"{cfg.out} already holds a catalogue (version {version}, with every item added "
                "or deleted through the API since): building there would replace it. Give another "
                "--out, or pass --replace to replace it (the old one is kept as a dated backup)"
            )
        return _build_locked(cfg, encoder, entries, lock, start)


def keep_backup(out: Path) -> Path:
    """A copy of the catalogue in `out` (committed versions, write-ahead logs, uploaded images) beside
    it, named by the time: `OUT.replaced-20261206T161500Z`. Snapshot files and images are hard-linked
    where the filesystem allows (never changed in place), the write-ahead logs (appended to) copied.
    Caller holds `out`'s lock."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = out.with_name(f"{out.name}.replaced-{stamp}")
    shutil.copytree(
        out,
        backup,
        ignore=shutil.ignore_patterns(WORK_DIR, LOCK_FILE, ".tmp-*", "CURRENT.tmp-*"),
        copy_function=_link_or_copy,
    )
    fsync_path(backup.parent)
    return backup


def _link_or_copy(source: str, destination: str) -> None:
    if not os.path.basename(source).startswith("wal-"):
        try:
            os.link(source, destination)
            return
        except OSError:
            pass
    shutil.copy2(source, destination)


def _build_locked(
    cfg: BuildConfig, encoder: Encoder, entries: list[CatalogueEntry], lock: DirectoryLock, start: float
) -> BuildReport:
    work = _open_work(cfg, encoder, entries)
    todo = [
        (n, part)
        for n, part in _chunks(entries, cfg.chunk_size)
        if not (work / f"chunk-{n:06d}.npz").is_file()
    ]
    done = len(entries) - sum(len(part) for _, part in todo)
    encoded_now = 0
    with tqdm(
        total=len(entries),
        initial=done,
        unit="img",
        desc="encoding catalogue",
        disable=not cfg.progress,
        smoothing=0.1,
    ) as bar:
        if done:
            bar.write(f"resuming: {done} of {len(entries)} images already encoded in {work}")
        try:
            for n, part in todo:
                _save_chunk(
                    work / f"chunk-{n:06d}.npz",
                    encode_entries(encoder, part, cfg.batch_size, cfg.limits, bar),
                )
                encoded_now += len(part)
        except KeyboardInterrupt:
            bar.write(f"interrupted: finished chunks are kept in {work}; run the same command to resume")
            raise
    report = _commit(
        cfg,
        encoder,
        work,
        math.ceil(len(entries) / cfg.chunk_size),
        encoded_now,
        time.monotonic() - start,
        lock,
    )
    shutil.rmtree(work)
    return report


def _commit(
    cfg: BuildConfig,
    encoder: Encoder,
    work: Path,
    n_chunks: int,
    encoded_now: int,
    elapsed: float,
    lock: DirectoryLock,
) -> BuildReport:
    """Gather the chunks into one catalogue and save it atomically to `cfg.out`."""
    chunks = [_read_chunk(p) for n in range(n_chunks) if (p := work / f"chunk-{n:06d}.npz").is_file()]
    ids = [i for c in chunks for i in c.ids]
    skipped = [f for c in chunks for f in c.failed]
    if not ids:
        raise ValueError(f"none of the {len(skipped)} catalogue images could be read; first: {skipped[:3]}")
    catalogue = FaissCatalogue.create(encoder.attribute_names, encoder.dim, encoder.fingerprint, cfg.factory)
    catalogue.add(ids, np.concatenate([c.vectors for c in chunks]), [m for c in chunks for m in c.metadata])
    backup = keep_backup(cfg.out) if cfg.replace and current_version(cfg.out) is not None else None
    catalogue.save(cfg.out, lock, replace=cfg.replace)
    report = BuildReport(cfg.out, len(ids), skipped, encoded_now, elapsed, backup)
    atomic_write(
        cfg.out / REPORT,
        lambda fh: fh.write(
            json.dumps(
                {
                    "items": len(ids),
                    "skipped": [{"id": i, "reason": r} for i, r in skipped],
                    "fingerprint": encoder.fingerprint,
                    "catalogue": str(cfg.catalogue),
                },
                indent=2,
            ).encode()
        ),
    )
    return report

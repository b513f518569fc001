"""Crash-safe persistence of a catalogue as versioned directories plus a ``CURRENT`` pointer.

Layout of a save root::

    root/CURRENT            "v000007\\n": the committed version (replaced atomically)
    root/v000007/           manifest.json, ids.json, metadata.jsonl,
                            attr_<i>.faiss, attr_<i>.tombstones.npy
    root/v000006/           the previous version, kept for readers still loading it
    root/LOCK               flock'ed by the one writer of the directory (index/dirlock.py)

A save writes a fresh ``.tmp-*`` directory, fsyncs every file and the directory, renames it to
the next ``v<n>`` and only then replaces ``CURRENT`` (write beside, fsync, ``os.replace``, fsync
the root). A crash at any point leaves ``CURRENT`` naming a complete version; leftovers
(``.tmp-*`` directories, versions newer than ``CURRENT``) are ignored and removed later.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from asen_search.fileio import atomic_write, fsync_path

from .attribute_index import AttributeIndex
from .dirlock import DirectoryLock
from .errors import FingerprintMismatch, IndexFormatError
from .ids import IdMap
from .metadata import MetadataStore

FORMAT_VERSION = 1
POINTER = "CURRENT"
MANIFEST = "manifest.json"
_VERSION_RE = re.compile(r"^v(\d{6,})$")
_TEMP_PREFIXES = (".tmp-", POINTER + ".tmp-")
logger = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """Everything a catalogue persists. ``info`` holds fingerprint, dim, attributes, factory,
    search_params and created_at; ``save`` adds the counts, times and file sizes."""

    info: dict[str, Any]
    ids: IdMap
    metadata: MetadataStore
    indexes: list[AttributeIndex]


def _write(path: Path, write: Callable[[Path], object]) -> None:
    write(path)
    fsync_path(path)


def _save_array(path: Path, array: np.ndarray) -> None:
    np.save(path, array)


def _write_text(path: Path, text: str) -> None:
    _write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _versions(root: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _VERSION_RE.match(p.name)) and p.is_dir())


def current_version(root: Path) -> str | None:
    """The committed version directory name, or None if nothing was ever committed."""
    try:
        name = (root / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not _VERSION_RE.match(name):
        raise IndexFormatError(f"{root / POINTER} is corrupt: {name[:40]!r}")
    return name


def _tidy(root: Path, keep: set[str]) -> None:
    """Delete temp leftovers and version directories not in ``keep``. Caller holds the lock."""
    for path in root.iterdir():
        if path.name.startswith(_TEMP_PREFIXES) or (_VERSION_RE.match(path.name) and path.name not in keep):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _keep_set(root: Path, current: str | None) -> set[str]:
    """The committed version and the newest older one (a reader may still be loading it)."""
    if current is None:
        return set()
    number = int(current[1:])
    older = [v for v in _versions(root) if v < number]
    return {current} | ({f"v{older[-1]:06d}"} if older else set())


def _write_version(directory: Path, snap: Snapshot) -> None:
    """All files of one version into ``directory``, each fsynced, the manifest last."""
    _write_text(directory / "ids.json", json.dumps({"next_key": snap.ids.next_key, "ids": snap.ids.pairs()}))
    lines = (
        json.dumps({"id": snap.ids.id_of(key), "metadata": meta}, ensure_ascii=False)
        for key, meta in sorted(snap.metadata.items(), key=lambda kv: kv[0])
    )
    _write_text(directory / "metadata.jsonl", "".join(line + "\n" for line in lines))
    for i, index in enumerate(snap.indexes):
        _write(directory / f"attr_{i}.faiss", index.write)
        _write(directory / f"attr_{i}.tombstones.npy", partial(_save_array, array=index.tombstones))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = {
        "format_version": FORMAT_VERSION,
        **snap.info,
        "count": len(snap.ids),
        "attribute_counts": {a: len(ix) for a, ix in zip(snap.info["attributes"], snap.indexes, strict=True)},
        "updated_at": now,
        "files": {p.name: p.stat().st_size for p in sorted(directory.iterdir())},
    }
    _write_text(directory / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
    fsync_path(directory)


def save_snapshot(root: str | os.PathLike[str], snap: Snapshot, lock: DirectoryLock | None = None) -> Path:
    """Commit ``snap`` as the next version under ``root``; returns the version directory. The
    caller's held ``lock`` of ``root``, or else the lock is taken for the save (DirectoryLocked
    when another writer has the directory)."""
    root = Path(root)
    if lock is not None and not lock.covers(root):
        raise ValueError(f"the lock passed to save_snapshot is not a held lock of {root}")
    own = DirectoryLock.acquire(root, "saving a snapshot", create=True) if lock is None else None
    try:
        return _save_locked(root, snap)
    finally:
        if own is not None:
            own.release()


def _save_locked(root: Path, snap: Snapshot) -> Path:
    """The save itself; the caller holds the directory's lock."""
    current = current_version(root)
    _tidy(root, _keep_set(root, current))
    version = f"v{max(_versions(root), default=0) + 1:06d}"
    temp = root / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        _write_version(temp, snap)
        os.rename(temp, root / version)
        fsync_path(root)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    atomic_write(root / POINTER, lambda fh: fh.write(f"{version}\n".encode()))
    _tidy(root, {version} | ({current} if current else set()))
    return root / version


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The committed version's manifest (cheap: reads no vectors)."""
    root = Path(root)
    if not root.is_dir():
        raise IndexFormatError(f"no saved index at {root}: not a directory")
    version = current_version(root)
    if version is None:
        raise IndexFormatError(f"no saved index at {root}: it has no {POINTER} pointer")
    try:
        manifest: dict[str, Any] = json.loads((root / version / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"saved index {root / version} is unreadable: {exc}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"saved index {root / version} has format version {manifest.get('format_version')!r}; "
            f"this code reads version {FORMAT_VERSION}"
        )
    manifest["version"] = version
    return manifest


def _check_files(directory: Path, manifest: dict[str, Any]) -> None:
    for name, size in manifest["files"].items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            raise IndexFormatError(
                f"saved index {directory} is incomplete or corrupt: {name} missing or resized"
            )


def tidy_after_load(root: Path, version: str) -> None:
    """Remove leftovers of crashed saves; the caller holds the directory's lock. Best effort."""
    try:
        if current_version(root) == version:
            _tidy(root, _keep_set(root, version))
    except OSError as exc:
        logger.warning("could not tidy %s after loading: %s", root, exc)


def load_snapshot(
    root: str | os.PathLike[str], expected_fingerprint: str | None = None, mmap: bool = False
) -> tuple[Snapshot, dict[str, Any]]:
    """Load the committed version: the snapshot and its manifest.

    Raises FingerprintMismatch before reading any vectors when ``expected_fingerprint`` differs.
    """
    root = Path(root)
    manifest = read_manifest(root)
    directory = root / manifest["version"]
    if expected_fingerprint is not None and manifest["fingerprint"] != expected_fingerprint:
        raise FingerprintMismatch(str(directory), manifest["fingerprint"], expected_fingerprint)
    _check_files(directory, manifest)
    raw_ids = json.loads((directory / "ids.json").read_text(encoding="utf-8"))
    ids = IdMap((tuple(pair) for pair in raw_ids["ids"]), raw_ids["next_key"])
    metadata = MetadataStore()
    with open(directory / "metadata.jsonl", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            metadata.put(ids.key(record["id"]), record["metadata"])
    indexes = [
        AttributeIndex.read(
            directory / f"attr_{i}.faiss",
            manifest["dim"],
            manifest["factory"],
            np.load(directory / f"attr_{i}.tombstones.npy"),
            mmap=mmap,
        )
        for i in range(len(manifest["attributes"]))
    ]
    counts = {len(ids), len(metadata), manifest["count"], *(len(ix) for ix in indexes)}
    if len(counts) != 1:
        raise IndexFormatError(
            f"saved index {directory} is inconsistent: item counts differ {sorted(counts)}"
        )
    keys = ("fingerprint", "dim", "attributes", "factory", "search_params", "created_at")
    return Snapshot({k: manifest[k] for k in keys}, ids, metadata, indexes), manifest

"""What `asen index build` can read a catalogue from: a directory of images (ids from file names),
a JSONL or CSV file of `id, path[, metadata...]`, or a split of a dataset in the dataset format."""
from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asen_search.index import validate_id
from asen_search.model.data.dataset import load_dataset

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"})


@dataclass(frozen=True)
class CatalogueEntry:
    """One catalogue item to encode: its id, image file and metadata."""

    id: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)


def read_catalogue(source: str | Path, split: str = "test") -> list[CatalogueEntry]:
    """Entries of a catalogue source, checked: valid and unique ids, at least one entry."""
    source = Path(source)
    if source.is_dir():
        entries = dataset_entries(source, split) if (source / "meta.json").is_file() else directory_entries(source)
    elif source.suffix.lower() in (".jsonl", ".ndjson"):
        entries = jsonl_entries(source)
    elif source.suffix.lower() == ".csv":
        entries = csv_entries(source)
    elif source.exists():
        raise ValueError(f"{source}: expected a directory of images, a dataset directory, a .jsonl or a .csv file")
    else:
        raise FileNotFoundError(f"catalogue source not found: {source}")
    check_entries(entries, str(source))
    return entries


def check_entries(entries: list[CatalogueEntry], where: str) -> None:
    if not entries:
        raise ValueError(f"{where}: the catalogue has no images")
    for entry in entries:
        try:
            validate_id(entry.id)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad item id for {entry.path}: {exc}") from None
    dupes = [i for i, n in Counter(e.id for e in entries).items() if n > 1]
    if dupes:
        raise ValueError(f"{where}: {len(dupes)} ids occur more than once, e.g. {sorted(dupes)[:5]}")


def entries_digest(entries: list[CatalogueEntry]) -> str:
    """Identifies a catalogue (ids, paths, metadata) so that a resumed build is the same build."""
    digest = hashlib.sha256()
    for e in entries:
        digest.update(json.dumps([e.id, str(e.path), e.metadata], sort_keys=True).encode() + b"\n")
    return digest.hexdigest()


def directory_entries(root: Path) -> list[CatalogueEntry]:
    """Every image file under `root` (hidden files and folders skipped); the id is the path
    relative to `root` without its suffix: `shirts/a17.jpg` -> `shirts/a17`."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return [CatalogueEntry(p.relative_to(root).with_suffix("").as_posix(), p) for p in files]


def _entry(record: dict[str, Any], base: Path, where: str) -> CatalogueEntry:
    item_id, path = record.pop("id", None), record.pop("path", None)
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"{where}: needs a non-empty string 'id'")
    if not isinstance(path, str) or not path:
        raise ValueError(f"{where}: needs a non-empty string 'path'")
    nested = record.pop("metadata", {})
    if not isinstance(nested, dict):
        raise ValueError(f"{where}: 'metadata' must be an object")
    return CatalogueEntry(item_id, base / path, {**record, **nested})


def jsonl_entries(path: Path) -> list[CatalogueEntry]:
    """One JSON object a line: `{"id": ..., "path": ..., other keys or "metadata": {...}}`; relative
    paths are relative to the file's folder."""
    entries = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path.name} line {lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path.name} line {lineno}: expected a JSON object")
        entries.append(_entry(record, path.parent, f"{path.name} line {lineno}"))
    return entries


def csv_entries(path: Path) -> list[CatalogueEntry]:
    """A header row with `id` and `path`; every other column is metadata (text; empty cells omitted)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"id", "path"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path.name}: the header needs the columns {sorted(missing)}")
        return [_entry({k: v for k, v in row.items() if k is not None and v not in (None, "")},
                       path.parent, f"{path.name} line {reader.line_num}") for row in reader]


def dataset_entries(root: Path, split: str) -> list[CatalogueEntry]:
    """The images of one split: ids `<split>-<fid:05d>`, metadata `{"split": ..., <attribute>: <value>}`
    for every label the dataset has for the image (train: all; valid/test: the tagged attribute)."""
    ds = load_dataset(root, check_images=False)
    paths = ds.split(split).paths
    metadata: list[dict[str, Any]] = [{"split": split} for _ in paths]
    tagged = [ds.train_labels()] if split == "train" else [
        getattr(ds, kind)(split) for kind in ("queries", "candidates")
        if (root / f"{'query' if kind == 'queries' else 'candidate'}_{split}.txt").is_file()]
    for rows in tagged:
        for fid, attr, value in zip(rows.fids.tolist(), rows.attrs.tolist(), rows.values.tolist()):
            attribute = ds.attributes[attr]
            metadata[fid][attribute.name] = attribute.values[value]
    return [CatalogueEntry(f"{split}-{fid:05d}", path, metadata[fid]) for fid, path in enumerate(paths)]

"""What `asen index build` and `asen encode` read a catalogue from: a directory of images (ids from
file names), a JSONL or CSV file of `id, path[, metadata...]`, or a split of a dataset in the dataset
format. Directories and listings may also be URLs that fsspec reads (`s3://bucket/shop/listing.jsonl`;
`locations.py`); their image paths are then resolved against the listing's URL. What a listing may
name (its own folder, or its own scheme and bucket; `--allow-any-url`) is checked by `check_listing`
before anything is read or encoded."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asen_search.index import validate_id
from asen_search.model.data.dataset import load_dataset
from asen_search.service.jobs.locations import (
    ImageRef,
    ListingRefused,
    check_listed,
    filesystem,
    is_url,
    join,
    parent,
    read_text,
)
from asen_search.service.jobs.tags import PREDICTED, reserved_keys

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"})


@dataclass(frozen=True)
class CatalogueEntry:
    """One catalogue item to encode: its id, image file and metadata."""

    id: str
    path: ImageRef  # a local path, or a URL (locations.py)
    metadata: dict[str, Any] = field(default_factory=dict)
    line: int | None = field(
        default=None, compare=False
    )  # its line in the listing it came from, for messages


def read_catalogue(
    source: str | Path, split: str = "test", allow_any_url: bool = False
) -> list[CatalogueEntry]:
    """Entries of a catalogue source, checked: valid and unique ids, at least one entry, and for a
    listing, images only where it may name them (`check_listing`; `allow_any_url` lifts what may be lifted)."""
    if is_url(source):
        assert isinstance(source, str)
        entries = remote_entries(source)
        check_entries(entries, source)
        check_listing(entries, source, allow_any_url)  # a folder's files are in its own bucket
        return entries
    source = Path(source)
    if source.is_dir():
        entries = (
            dataset_entries(source, split) if (source / "meta.json").is_file() else directory_entries(source)
        )
    elif source.suffix.lower() in (".jsonl", ".ndjson"):
        entries = jsonl_entries(source.read_text(encoding="utf-8"), source.parent, source.name)
    elif source.suffix.lower() == ".csv":
        entries = csv_entries(source.read_text(encoding="utf-8"), source.parent, source.name)
    elif source.exists():
        raise ValueError(
            f"{source}: expected a directory of images, a dataset directory, a .jsonl or a .csv file"
        )
    else:
        raise FileNotFoundError(f"catalogue source not found: {source}")
    check_entries(entries, str(source))
    if source.is_file():
        check_listing(entries, source, allow_any_url)
    return entries


def check_listing(entries: list[CatalogueEntry], listing: ImageRef, allow_any_url: bool = False) -> None:
    """Every image the listing at `listing` names stays in its folder (a local listing) or its scheme and
    bucket/host (a URL), unless `allow_any_url`; never a local file from a URL listing, never a link-local
    or cloud metadata address (`locations.check_listed`). One error names the first offender, its line and
    the rule, and counts the others."""
    refused = []
    for entry in entries:
        where = (
            f"{listing} line {entry.line} (item {entry.id!r})"
            if entry.line
            else f"{listing} (item {entry.id!r})"
        )
        try:
            check_listed(listing, entry.path, where, allow_any_url)
        except ListingRefused as exc:
            refused.append(str(exc))
    if refused:
        more = (
            f" ({len(refused) - 1} more entries of the listing are refused as well)"
            if len(refused) > 1
            else ""
        )
        raise ListingRefused(refused[0] + more)


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
    reserved = [(e.id, reserved_keys(e.metadata)) for e in entries if reserved_keys(e.metadata)]
    if reserved:
        raise ValueError(
            f"{where}: {len(reserved)} items have metadata keys starting with {PREDICTED!r}, which are "
            f"reserved for predicted tags (service/jobs/tags.py), e.g. {reserved[:3]}: rename them"
        )


def entries_digest(entries: list[CatalogueEntry]) -> str:
    """Identifies a catalogue (ids, paths, metadata) so that a resumed build is the same build."""
    digest = hashlib.sha256()
    for e in entries:
        digest.update(json.dumps([e.id, str(e.path), e.metadata], sort_keys=True).encode() + b"\n")
    return digest.hexdigest()


def directory_entries(root: Path) -> list[CatalogueEntry]:
    """Every image file under `root` (hidden files and folders skipped); the id is the path
    relative to `root` without its suffix: `shirts/a17.jpg` -> `shirts/a17`."""
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    return [CatalogueEntry(p.relative_to(root).with_suffix("").as_posix(), p) for p in files]


def remote_entries(url: str) -> list[CatalogueEntry]:
    """A folder of images or a JSONL/CSV listing at a URL (dataset folders must be local)."""
    fs, path = filesystem(url)
    name = url.rstrip("/").rsplit("/", 1)[-1]
    try:
        if fs.isdir(path):
            if fs.isfile(path.rstrip("/") + "/meta.json"):
                raise ValueError(
                    f"{url}: a dataset folder must be local; copy it, or list its images in a JSONL file"
                )
            root = url.rstrip("/")
            names = sorted(p for p in fs.find(path) if posixpath.splitext(p)[1].lower() in IMAGE_SUFFIXES)
            base = path.rstrip("/") + "/"
            relative = [p[len(base) :] if p.startswith(base) else p.lstrip("/") for p in names]
            return [
                CatalogueEntry(posixpath.splitext(r)[0], f"{root}/{r}")
                for r in relative
                if not any(part.startswith(".") for part in r.split("/"))
            ]
        suffix = posixpath.splitext(path)[1].lower()
        if suffix in (".jsonl", ".ndjson"):
            return jsonl_entries(read_text(url), parent(url), name)
        if suffix == ".csv":
            return csv_entries(read_text(url), parent(url), name)
        if fs.exists(path):
            raise ValueError(f"{url}: expected a folder of images, a .jsonl or a .csv file")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OSError(f"cannot read the catalogue at {url}: {exc}") from None
    raise FileNotFoundError(f"catalogue source not found: {url}")


def _entry(record: dict[str, Any], base: ImageRef, where: str, line: int) -> CatalogueEntry:
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
    return CatalogueEntry(item_id, join(base, path), {**record, **nested}, line)


def jsonl_entries(text: str, base: ImageRef, name: str) -> list[CatalogueEntry]:
    """One JSON object a line: `{"id": ..., "path": ..., other keys or "metadata": {...}}`; relative
    paths are relative to the listing's folder `base`."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name} line {lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{name} line {lineno}: expected a JSON object")
        entries.append(_entry(record, base, f"{name} line {lineno}", lineno))
    return entries


def csv_entries(text: str, base: ImageRef, name: str) -> list[CatalogueEntry]:
    """A header row with `id` and `path`; every other column is metadata (text; empty cells omitted)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"id", "path"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{name}: the header needs the columns {sorted(missing)}")
    return [
        _entry(
            {k: v for k, v in row.items() if k is not None and v not in (None, "")},
            base,
            f"{name} line {reader.line_num}",
            reader.line_num,
        )
        for row in reader
    ]


def dataset_entries(root: Path, split: str) -> list[CatalogueEntry]:
    """The images of one split: ids `<split>-<fid:05d>`, metadata `{"split": ..., <attribute>: <value>}`
    for every label the dataset has for the image (train: all; valid/test: the tagged attribute)."""
    ds = load_dataset(root, check_images=False)
    paths = ds.split(split).paths
    metadata: list[dict[str, Any]] = [{"split": split} for _ in paths]
    tagged = (
        [ds.train_labels()]
        if split == "train"
        else [
            getattr(ds, kind)(split)
            for kind in ("queries", "candidates")
            if (root / f"{'query' if kind == 'queries' else 'candidate'}_{split}.txt").is_file()
        ]
    )
    for rows in tagged:
        for fid, attr, value in zip(rows.fids.tolist(), rows.attrs.tolist(), rows.values.tolist()):
            attribute = ds.attributes[attr]
            metadata[fid][attribute.name] = attribute.values[value]
    return [CatalogueEntry(f"{split}-{fid:05d}", path, metadata[fid]) for fid, path in enumerate(paths)]

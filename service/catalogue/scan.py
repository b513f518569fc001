"""`asen scan`: design protection. For each protected design, every catalogue item at least this
similar under one attribute, written as `matches.csv` and a static `report.html` that a person opens
from disk: per design, the design and its matches side by side, each with the attention map and RoI
box of that attribute drawn over it (why the model thinks they match).

Each finished design is kept in `OUT/.scan/` (its matches and pictures), so an interrupted scan of a
large catalogue resumes where it stopped (same checkpoint, catalogue, attribute and threshold).
Unreadable design images are listed (in the report, `summary.json` and on stderr), never fatal. The
catalogue is read through the `Catalogue` interface: an index directory or a Milvus location.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image
from tqdm import tqdm

from asen_search.index import Catalogue, SearchResult
from asen_search.index.fileio import atomic_write
from asen_search.index.milvus import is_milvus
from asen_search.index.transfer import open_catalogue
from asen_search.model.encoder import Encoder
from asen_search.model.image_input import ImageLimits
from asen_search.model.thresholds import Curve, NoThreshold
from asen_search.service.catalogue.build import load_or_reason, open_work_dir
from asen_search.service.catalogue.item_images import IMAGE_KEY, stored_path
from asen_search.service.catalogue.scan_report import WORK_DIR, csv_text, overlay, report_html, thumbnail
from asen_search.service.catalogue.sources import CatalogueEntry, check_entries, read_catalogue


@dataclass(frozen=True)
class ScanConfig:
    checkpoint: Path
    index: str | Path                  # an index directory or a Milvus location
    designs: Path                      # a folder of images, a .txt of image paths, or a .jsonl/.csv catalogue
    attribute: str
    out: Path
    min_score: float | None = None
    min_precision: float | None = None
    max_results: int = 1000            # matches per design at most (`truncated` in the report beyond)
    images_dir: Path | None = None     # where uploaded item images are (default: the index directory)
    restart: bool = False
    progress: bool = True
    device: str = "auto"
    runtime: str = "auto"
    limits: ImageLimits = field(default_factory=ImageLimits)


@dataclass(frozen=True)
class ScanReport:
    out: Path
    designs: int
    matches: int
    unreadable: list[tuple[str, str]]   # (design, why)
    truncated: list[str]                # designs whose matches max_results cut
    min_score: float
    scanned_now: int
    seconds: float


def read_designs(source: Path) -> list[CatalogueEntry]:
    """A folder of images (ids from the file names), a .txt file of image paths (one a line, relative
    to the file; ids from the file names), or a .jsonl / .csv catalogue file."""
    if source.suffix.lower() == ".txt" and source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        paths = [(source.parent / line) if not Path(line).is_absolute() else Path(line)
                 for line in lines if line and not line.startswith("#")]
        entries, seen = [], set()
        for path in paths:
            name, n = path.stem, 1
            while name in seen:
                n += 1
                name = f"{path.stem}-{n}"
            seen.add(name)
            entries.append(CatalogueEntry(name, path))
        check_entries(entries, str(source))
        return entries
    return read_catalogue(source)


def resolve_min_score(encoder: Encoder, attribute: str, min_score: float | None, min_precision: float | None) -> float:
    """The threshold to use; ValueError for a missing, doubled or unreachable one."""
    if (min_score is None) == (min_precision is None):
        raise ValueError("give exactly one of --min-score or --min-precision")
    if min_score is not None:
        if not -1.0 <= min_score <= 1.0:
            raise ValueError(f"--min-score must be in [-1, 1], got {min_score}")
        return float(min_score)
    assert min_precision is not None
    if not 0.0 < min_precision <= 1.0:
        raise ValueError(f"--min-precision must be in (0, 1], got {min_precision}")
    if encoder.thresholds is None:
        raise ValueError("this checkpoint has no precision curves: run `asen eval --checkpoint CKPT --data DATASET` "
                         "(writes them beside it) or give --min-score")
    try:
        return encoder.thresholds.curve(attribute).score_for(min_precision)
    except NoThreshold as exc:
        raise ValueError(f"{attribute}: {exc}") from None


def _save_jpeg(path: Path, image: Image.Image) -> None:
    atomic_write(path, lambda fh: image.save(fh, "JPEG", quality=85))


def _plan(cfg: ScanConfig, encoder: Encoder, designs: list[CatalogueEntry], min_score: float) -> dict[str, Any]:
    digest = hashlib.sha256()
    for d in designs:
        digest.update(json.dumps([d.id, str(d.path)]).encode() + b"\n")
    return {"fingerprint": encoder.fingerprint, "index": str(cfg.index), "attribute": cfg.attribute,
            "min_score": min_score, "max_results": cfg.max_results, "designs": digest.hexdigest()}


def _open_work(cfg: ScanConfig, plan: dict[str, Any]) -> Path:
    work = open_work_dir(cfg.out / WORK_DIR, plan, cfg.restart, "a scan")
    (work / "img").mkdir(exist_ok=True)
    return work


def _scan_design(n: int, design: CatalogueEntry, cfg: ScanConfig, encoder: Encoder, catalogue: Catalogue,
                 attr: int, min_score: float, curve: Curve | None, work: Path) -> dict[str, Any]:
    """One design's matches and pictures (in `work/img`), as the record kept in `work`."""
    record: dict[str, Any] = {"design": design.id, "path": str(design.path)}
    image = load_or_reason(design.path, cfg.limits)
    if isinstance(image, str):
        return {**record, "error": image}
    vector = encoder.encode([image], [attr])[0, 0]
    hits, truncated = catalogue.search_range(vector, cfg.attribute, min_score, cfg.max_results)
    _save_jpeg(work / "img" / f"d{n:06d}.jpg", thumbnail(image))
    _save_jpeg(work / "img" / f"d{n:06d}-why.jpg", overlay(image, encoder.explain(image, attr)))
    record.update(thumb=f"d{n:06d}.jpg", why=f"d{n:06d}-why.jpg", truncated=truncated,
                  matches=[_match(n, m, hit, cfg, encoder, attr, curve, work) for m, hit in enumerate(hits)])
    return record


def _match(n: int, m: int, hit: SearchResult, cfg: ScanConfig, encoder: Encoder, attr: int, curve: Curve | None,
           work: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": hit.id, "score": hit.score,
                             "precision": None if curve is None else curve.precision_at(hit.score)}
    images_root = cfg.images_dir if cfg.images_dir is not None else (
        None if is_milvus(str(cfg.index)) else Path(cfg.index))
    ref = stored_path(images_root, hit.metadata.get(IMAGE_KEY))
    picture = load_or_reason(ref, cfg.limits) if ref is not None else "the item has no stored image"
    if isinstance(picture, str):
        entry["image_error"] = picture
        return entry
    name = f"d{n:06d}-m{m:05d}"
    _save_jpeg(work / "img" / f"{name}.jpg", thumbnail(picture))
    _save_jpeg(work / "img" / f"{name}-why.jpg", overlay(picture, encoder.explain(picture, attr)))
    entry.update(thumb=f"{name}.jpg", why=f"{name}-why.jpg")
    return entry


def scan(cfg: ScanConfig, encoder: Encoder | None = None) -> ScanReport:
    """Scan every design of `cfg.designs` against the catalogue (resuming an interrupted scan)."""
    start = time.monotonic()
    if cfg.max_results < 1:
        raise ValueError(f"--max-results must be at least 1, got {cfg.max_results}")
    encoder = encoder or Encoder.from_checkpoint(cfg.checkpoint, cfg.device, cfg.runtime)
    attr = encoder.attribute_id(cfg.attribute)     # UnknownAttribute names the known ones
    min_score = resolve_min_score(encoder, cfg.attribute, cfg.min_score, cfg.min_precision)
    curve = encoder.thresholds.curves.get(cfg.attribute) if encoder.thresholds is not None else None
    designs = read_designs(cfg.designs)
    catalogue = open_catalogue(cfg.index, expected_fingerprint=encoder.fingerprint)
    try:
        work = _open_work(cfg, _plan(cfg, encoder, designs, min_score))
        scanned_now = 0
        with tqdm(total=len(designs), unit="design", desc=f"scanning for {cfg.attribute} >= {min_score:.4f}",
                  disable=not cfg.progress) as bar:
            for n, design in enumerate(designs):
                path = work / f"design-{n:06d}.json"
                if not path.is_file():
                    record = _scan_design(n, design, cfg, encoder, catalogue, attr, min_score, curve, work)
                    atomic_write(path, _json_writer(record))
                    scanned_now += 1
                    if "error" in record:
                        bar.write(f"skipped design {design.id} ({design.path}): {record['error']}")
                bar.update(1)
    finally:
        catalogue.close()
    records = [json.loads((work / f"design-{n:06d}.json").read_text()) for n in range(len(designs))]
    return _write_outputs(cfg, work, records, min_score, scanned_now, time.monotonic() - start)


def _json_writer(record: dict[str, Any]) -> Callable[[BinaryIO], object]:
    text = json.dumps(record).encode()
    return lambda fh: fh.write(text)


def _write_outputs(cfg: ScanConfig, work: Path, records: list[dict[str, Any]], min_score: float, scanned_now: int,
                   seconds: float) -> ScanReport:
    rows = [(r["design"], m["id"], m["score"], m["precision"]) for r in records for m in r.get("matches", [])]

    def write_csv(fh: Any) -> None:
        text = csv_text(rows)
        fh.write(text.encode())

    atomic_write(cfg.out / "matches.csv", write_csv)
    unreadable = [(r["design"], r["error"]) for r in records if "error" in r]
    truncated = [r["design"] for r in records if r.get("truncated")]
    summary = {"attribute": cfg.attribute, "min_score": min_score, "min_precision": cfg.min_precision,
               "max_results": cfg.max_results, "designs": len(records), "matches": len(rows),
               "unreadable": [{"design": d, "reason": why} for d, why in unreadable], "truncated": truncated}
    atomic_write(cfg.out / "summary.json", lambda fh: fh.write(json.dumps(summary, indent=2).encode()))
    page = report_html(cfg.attribute, cfg.min_precision, cfg.max_results, records, min_score).encode()
    atomic_write(cfg.out / "report.html", lambda fh: fh.write(page))
    for unreadable_design, why in unreadable:
        print(f"unreadable design {unreadable_design}: {why}", file=sys.stderr)
    return ScanReport(cfg.out, len(records), len(rows), unreadable, truncated, min_score, scanned_now, seconds)

"""`asen scan`: design protection. For each protected design, every catalogue item at least this
similar under one attribute, written as `matches.csv` and a static `report.html` that a person opens
from disk: per design, the design and its matches side by side, each with the attention map and RoI
box of that attribute drawn over it (why the model thinks they match).

Each finished design is kept in `OUT/.scan/` (service/jobs/scan_work.py) (its matches; its pictures go straight to
`OUT/report_files/`, the folder report.html names by relative paths), so an interrupted scan of a
large catalogue resumes where it stopped (same checkpoint, catalogue, attribute and threshold). The
plan names the catalogue by its location only, so the scan also records the catalogue's contents
when it starts (`catalogue_state`: an order-independent digest of every item's id, vectors and
metadata, and the item count, in `OUT/.scan/catalogue.json`); a resume that finds them changed (an
item added, replaced or deleted since) scans every design again instead of keeping results that
no longer hold, and says so on stderr.
Unreadable design images are listed (in the report, `summary.json` and on stderr), never fatal. The
catalogue is read through the `Catalogue` interface: an index directory or a Milvus location.

`copies=True` (`asen scan --copies`, service/jobs/scan_copies.py) scans for copies instead: every
attribute at once (index/copies.py), through the same work folder, resume and outputs; its plan says
`"kind": "copies"`, so a copies scan never resumes an attribute scan's work, nor the other way round.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from asen_search.fileio import atomic_write
from asen_search.index import Catalogue, SearchResult
from asen_search.model.encoder import Encoder
from asen_search.model.thresholds import Curve, NoThreshold
from asen_search.service.jobs.build import load_or_reason
from asen_search.service.jobs.scan_report import PICTURES_DIR, csv_text, overlay, report_html, thumbnail
from asen_search.service.jobs.scan_work import (
    ScanConfig,
    ScanReport,
    catalogue_state,
    design_digest,
    item_picture,
    prune_pictures,
    read_designs,
    run_designs,
    save_jpeg,
)
from asen_search.service.jobs.sources import CatalogueEntry

__all__ = [
    "ScanConfig",
    "ScanReport",
    "catalogue_state",
    "check_flags",
    "read_designs",
    "resolve_min_score",
    "scan",
]


def check_flags(cfg: ScanConfig) -> None:
    """Refuse a combination of options that does not make one scan (ValueError naming the flags),
    before anything is loaded."""
    if cfg.copies:
        if cfg.attribute is not None:
            raise ValueError("--copies scores every attribute at once: drop --attribute")
        if cfg.min_precision is not None:
            raise ValueError(
                "--min-precision is a per-attribute threshold: with --copies give --min-score (a copy "
                "score) or --max-false-match-rate (from `asen calibrate-copies`)"
            )
        if (cfg.min_score is None) == (cfg.max_false_match_rate is None):
            raise ValueError("with --copies give exactly one of --min-score or --max-false-match-rate")
        return
    if cfg.max_false_match_rate is not None or cfg.modified is not None or cfg.verify:
        flag = (
            "--max-false-match-rate"
            if cfg.max_false_match_rate is not None
            else "--modified"
            if cfg.modified is not None
            else "--verify"
        )
        raise ValueError(
            f"{flag} is for copy scans: add --copies (or give --attribute with --min-score or "
            "--min-precision)"
        )
    if cfg.attribute is None:
        raise ValueError(
            "give --attribute (the attribute the designs are protected in), or --copies to scan for "
            "copies over every attribute"
        )
    if (cfg.min_score is None) == (cfg.min_precision is None):
        raise ValueError("give exactly one of --min-score or --min-precision")


def resolve_min_score(
    encoder: Encoder, attribute: str, min_score: float | None, min_precision: float | None
) -> float:
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
        raise ValueError(
            "this checkpoint has no precision curves: run `asen eval --checkpoint CKPT --data DATASET` "
            "(writes them beside it) or give --min-score"
        )
    try:
        return encoder.thresholds.curve(attribute).score_for(min_precision)
    except NoThreshold as exc:
        raise ValueError(f"{attribute}: {exc}") from None


def _plan(
    cfg: ScanConfig, encoder: Encoder, designs: list[CatalogueEntry], min_score: float
) -> dict[str, Any]:
    return {
        "fingerprint": encoder.fingerprint,
        "index": str(cfg.index),
        "attribute": cfg.attribute,
        "min_score": min_score,
        "max_results": cfg.max_results,
        "designs": design_digest(designs),
    }


def _scan_design(
    n: int,
    design: CatalogueEntry,
    cfg: ScanConfig,
    encoder: Encoder,
    catalogue: Catalogue,
    attr: int,
    min_score: float,
    curve: Curve | None,
    pictures: Path,
) -> dict[str, Any]:
    """One design's matches and pictures (in `pictures`), as the record kept in the work folder."""
    record: dict[str, Any] = {"design": design.id, "path": str(design.path)}
    image = load_or_reason(design.path, cfg.limits)
    if isinstance(image, str):
        return {**record, "error": image}
    vector = encoder.encode([image], [attr])[0, 0]
    hits, truncated = catalogue.search_range(
        vector, encoder.attribute_names[attr], min_score, cfg.max_results
    )
    save_jpeg(pictures / f"d{n:06d}.jpg", thumbnail(image))
    save_jpeg(pictures / f"d{n:06d}-why.jpg", overlay(image, encoder.explain(image, attr)))
    record.update(
        thumb=f"d{n:06d}.jpg",
        why=f"d{n:06d}-why.jpg",
        truncated=truncated,
        matches=[_match(n, m, hit, cfg, encoder, attr, curve, pictures) for m, hit in enumerate(hits)],
    )
    return record


def _match(
    n: int,
    m: int,
    hit: SearchResult,
    cfg: ScanConfig,
    encoder: Encoder,
    attr: int,
    curve: Curve | None,
    pictures: Path,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": hit.id,
        "score": hit.score,
        "precision": None if curve is None else curve.precision_at(hit.score),
    }
    picture = item_picture(cfg, hit.metadata)
    if isinstance(picture, str):
        entry["image_error"] = picture
        return entry
    name = f"d{n:06d}-m{m:05d}"
    save_jpeg(pictures / f"{name}.jpg", thumbnail(picture))
    save_jpeg(pictures / f"{name}-why.jpg", overlay(picture, encoder.explain(picture, attr)))
    entry.update(thumb=f"{name}.jpg", why=f"{name}-why.jpg")
    return entry


def scan(cfg: ScanConfig, encoder: Encoder | None = None) -> ScanReport:
    """Scan every design of `cfg.designs` against the catalogue (resuming an interrupted scan)."""
    start = time.monotonic()
    check_flags(cfg)
    if cfg.max_results < 1:
        raise ValueError(f"--max-results must be at least 1, got {cfg.max_results}")
    encoder = encoder or Encoder.from_checkpoint(cfg.checkpoint, cfg.device, cfg.runtime)
    if cfg.copies:
        from asen_search.service.jobs.scan_copies import scan_copies

        return scan_copies(cfg, encoder, start)
    attribute = cfg.attribute
    assert attribute is not None  # check_flags
    attr = encoder.attribute_id(attribute)  # UnknownAttribute names the known ones
    min_score = resolve_min_score(encoder, attribute, cfg.min_score, cfg.min_precision)
    curve = encoder.thresholds.curves.get(attribute) if encoder.thresholds is not None else None
    designs = read_designs(cfg.designs, cfg.allow_any_url)

    def scan_one(n: int, design: CatalogueEntry, catalogue: Catalogue, pictures: Path) -> dict[str, Any]:
        return _scan_design(n, design, cfg, encoder, catalogue, attr, min_score, curve, pictures)

    run = run_designs(
        cfg,
        encoder,
        designs,
        _plan(cfg, encoder, designs, min_score),
        scan_one,
        f"scanning for {attribute} >= {min_score:.4f}",
    )
    return _write_outputs(
        cfg,
        run.records,
        run.state,
        min_score,
        run.scanned_now,
        time.monotonic() - start,
        run.rescanned_because,
    )


def _write_outputs(
    cfg: ScanConfig,
    records: list[dict[str, Any]],
    state: dict[str, Any],
    min_score: float,
    scanned_now: int,
    seconds: float,
    rescanned_because: str | None,
) -> ScanReport:
    rows = [(r["design"], m["id"], m["score"], m["precision"]) for r in records for m in r.get("matches", [])]

    def write_csv(fh: Any) -> None:
        text = csv_text(rows)
        fh.write(text.encode())

    atomic_write(cfg.out / "matches.csv", write_csv)
    unreadable = [(r["design"], r["error"]) for r in records if "error" in r]
    truncated = [r["design"] for r in records if r.get("truncated")]
    summary = {
        "attribute": cfg.attribute,
        "min_score": min_score,
        "min_precision": cfg.min_precision,
        "max_results": cfg.max_results,
        "designs": len(records),
        "matches": len(rows),
        "unreadable": [{"design": d, "reason": why} for d, why in unreadable],
        "truncated": truncated,
        "catalogue": {"index": str(cfg.index), **state},
        "pictures": PICTURES_DIR,
    }
    atomic_write(cfg.out / "summary.json", lambda fh: fh.write(json.dumps(summary, indent=2).encode()))
    assert cfg.attribute is not None
    page = report_html(cfg.attribute, cfg.min_precision, cfg.max_results, records, min_score).encode()
    atomic_write(cfg.out / "report.html", lambda fh: fh.write(page))
    prune_pictures(cfg.out / PICTURES_DIR, records)
    for unreadable_design, why in unreadable:
        print(f"unreadable design {unreadable_design}: {why}", file=sys.stderr)
    return ScanReport(
        cfg.out,
        len(records),
        len(rows),
        unreadable,
        truncated,
        min_score,
        scanned_now,
        seconds,
        rescanned_because,
    )

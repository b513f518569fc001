"""`asen scan`: design protection. For each protected design, every catalogue item at least this
similar under one attribute, written as `matches.csv` and a static `report.html` that a person opens
from disk: per design, the design and its matches side by side, each with the attention map and RoI
box of that attribute drawn over it (why the model thinks they match).

Each finished design is kept in `OUT/.scan/` (its matches; its pictures go straight to
`OUT/report_files/`, the folder report.html names by relative paths), so an interrupted scan of a
large catalogue resumes where it stopped (same checkpoint, catalogue, attribute and threshold). The
plan names the catalogue by its location only, so the scan also records the catalogue's contents
when it starts (`catalogue_state`: an order-independent digest of every item's id, vectors and
metadata, and the item count, in `OUT/.scan/catalogue.json`); a resume that finds them changed (an
item added, replaced or deleted since) scans every design again instead of keeping results that
no longer hold, and says so on stderr.
Unreadable design images are listed (in the report, `summary.json` and on stderr), never fatal. The
catalogue is read through the `Catalogue` interface: an index directory or a Milvus location.

`copies=True` (`asen scan --copies`, service/catalogue/scan_copies.py) scans for copies instead: every
attribute at once (index/copies.py), through the same work folder, resume and outputs; its plan says
`"kind": "copies"`, so a copies scan never resumes an attribute scan's work, nor the other way round.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image
from tqdm import tqdm

from asen_search.index import Catalogue, SearchResult
from asen_search.index.digest import content_state
from asen_search.index.fileio import atomic_write
from asen_search.index.milvus import is_milvus
from asen_search.index.transfer import open_catalogue
from asen_search.model.encoder import Encoder
from asen_search.model.image_input import ImageLimits
from asen_search.model.thresholds import Curve, NoThreshold
from asen_search.service.catalogue.build import load_or_reason, open_work_dir
from asen_search.service.catalogue.item_images import IMAGE_KEY, stored_path
from asen_search.service.catalogue.scan_report import PICTURES_DIR, WORK_DIR, csv_text, overlay, report_html, thumbnail
from asen_search.service.catalogue.sources import CatalogueEntry, check_entries, check_listing, read_catalogue


@dataclass(frozen=True)
class ScanConfig:
    checkpoint: Path
    index: str | Path                  # an index directory or a Milvus location
    designs: Path                      # a folder of images, a .txt of image paths, or a .jsonl/.csv catalogue
    attribute: str | None              # None with `copies`
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
    allow_any_url: bool = False        # a listing of designs may name images anywhere (sources.check_listing)
    copies: bool = False               # `asen scan --copies`: copies of each design over every attribute
    max_false_match_rate: float | None = None   # copies: the threshold from the copy calibration
    modified: int | None = None        # copies: attributes a copy may modify (default: the calibration's, else 2)


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
    rescanned_because: str | None = None   # why the designs an earlier run had finished were scanned again


def read_designs(source: Path, allow_any_url: bool = False) -> list[CatalogueEntry]:
    """A folder of images (ids from the file names), a .txt file of image paths (one a line, relative
    to the file; ids from the file names), or a .jsonl / .csv catalogue file. A listing's images must be
    under its folder unless `allow_any_url` (sources.check_listing)."""
    if source.suffix.lower() == ".txt" and source.is_file():
        lines = [(n, line.strip()) for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1)]
        paths = [(lineno, (source.parent / line) if not Path(line).is_absolute() else Path(line))
                 for lineno, line in lines if line and not line.startswith("#")]
        entries, seen = [], set()
        for lineno, path in paths:
            name, n = path.stem, 1
            while name in seen:
                n += 1
                name = f"{path.stem}-{n}"
            seen.add(name)
            entries.append(CatalogueEntry(name, path, line=lineno))
        check_entries(entries, str(source))
        check_listing(entries, source, allow_any_url)
        return entries
    return read_catalogue(source, allow_any_url=allow_any_url)


def check_flags(cfg: ScanConfig) -> None:
    """Refuse a combination of options that does not make one scan (ValueError naming the flags),
    before anything is loaded."""
    if cfg.copies:
        if cfg.attribute is not None:
            raise ValueError("--copies scores every attribute at once: drop --attribute")
        if cfg.min_precision is not None:
            raise ValueError("--min-precision is a per-attribute threshold: with --copies give --min-score (a copy "
                             "score) or --max-false-match-rate (from `asen calibrate-copies`)")
        if (cfg.min_score is None) == (cfg.max_false_match_rate is None):
            raise ValueError("with --copies give exactly one of --min-score or --max-false-match-rate")
        return
    if cfg.max_false_match_rate is not None or cfg.modified is not None:
        flag = "--max-false-match-rate" if cfg.max_false_match_rate is not None else "--modified"
        raise ValueError(f"{flag} is for copy scans: add --copies (or give --attribute with --min-score or "
                         "--min-precision)")
    if cfg.attribute is None:
        raise ValueError("give --attribute (the attribute the designs are protected in), or --copies to scan for "
                         "copies over every attribute")
    if (cfg.min_score is None) == (cfg.min_precision is None):
        raise ValueError("give exactly one of --min-score or --min-precision")


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


def save_jpeg(path: Path, image: Image.Image) -> None:
    atomic_write(path, lambda fh: image.save(fh, "JPEG", quality=85))


def _plan(cfg: ScanConfig, encoder: Encoder, designs: list[CatalogueEntry], min_score: float) -> dict[str, Any]:
    return {"fingerprint": encoder.fingerprint, "index": str(cfg.index), "attribute": cfg.attribute,
            "min_score": min_score, "max_results": cfg.max_results, "designs": design_digest(designs)}


CATALOGUE_STATE = "catalogue.json"


def catalogue_state(catalogue: Catalogue, batch_size: int = 1000, progress: bool = False) -> dict[str, Any]:
    """What the catalogue holds (`content_state`: item count and an order-independent digest of every
    item's id, metadata and vectors), with a progress bar."""
    with tqdm(total=len(catalogue), unit="item", desc="reading the catalogue's state", disable=not progress,
              leave=False) as bar:
        return content_state(catalogue, batch_size, bar.update)


def scan_kind(plan: dict[str, Any]) -> str:
    """The kind of scan a plan is for: "copies", or "attribute" (attribute scans' plans name no kind)."""
    return str(plan.get("kind", "attribute"))


def _refuse_other_kind(cfg: ScanConfig, plan: dict[str, Any]) -> None:
    """A work folder of the other kind of scan is refused by name (not resumed, not mixed)."""
    try:
        found = json.loads((cfg.out / WORK_DIR / "plan.json").read_text())
    except (OSError, ValueError):
        return
    if not isinstance(found, dict) or scan_kind(found) == scan_kind(plan):
        return
    held = f"an attribute scan (--attribute {found.get('attribute')})" if scan_kind(found) == "attribute" else \
        "a copies scan (--copies)"
    wanted = "a copies scan" if scan_kind(plan) == "copies" else "an attribute scan"
    raise ValueError(f"{cfg.out / WORK_DIR} holds the work of {held}, which {wanted} cannot resume; pass --restart "
                     "to discard it, or give another --out")


def _open_work(cfg: ScanConfig, plan: dict[str, Any]) -> Path:
    if not cfg.restart:
        _refuse_other_kind(cfg, plan)
    fresh = cfg.restart or not (cfg.out / WORK_DIR / "plan.json").is_file()
    work = open_work_dir(cfg.out / WORK_DIR, plan, cfg.restart, "a scan")
    if fresh:
        _clear_pictures(cfg, work)
    (cfg.out / PICTURES_DIR).mkdir(parents=True, exist_ok=True)
    return work


def _clear_pictures(cfg: ScanConfig, work: Path) -> None:
    """The pictures of an earlier run (and, from scans before `report_files/`, `.scan/img/`)."""
    shutil.rmtree(cfg.out / PICTURES_DIR, ignore_errors=True)
    shutil.rmtree(work / "img", ignore_errors=True)


def _recorded_state(work: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((work / CATALOGUE_STATE).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _check_catalogue(cfg: ScanConfig, work: Path, state: dict[str, Any], n_designs: int) -> str | None:
    """Keep the finished designs of an earlier run only if the catalogue still holds what it held
    when that run started; else discard them (records and pictures) and say why. Records `state`."""
    recorded = _recorded_state(work)
    if recorded == state:
        return None
    done = sorted(work.glob("design-*.json"))
    reason = None
    if done:
        run = "the interrupted scan" if len(done) < n_designs else "the earlier scan"
        if recorded is None:
            reason = f"{run} in {work} did not record the catalogue's state"
        else:
            reason = (f"the catalogue changed since {run} started ({recorded.get('items')} items then, "
                      f"{state['items']} now)")
        # The old state goes first: a crash from here on leaves no state, and the next run starts over.
        (work / CATALOGUE_STATE).unlink(missing_ok=True)
        for path in done:
            path.unlink()
        _clear_pictures(cfg, work)
        (cfg.out / PICTURES_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write(work / CATALOGUE_STATE, lambda fh: fh.write(json.dumps(state, indent=2).encode()))
    if reason is None:
        return None
    message = f"{reason}: scanning all {n_designs} designs again"
    print(message, file=sys.stderr)
    return message


def _scan_design(n: int, design: CatalogueEntry, cfg: ScanConfig, encoder: Encoder, catalogue: Catalogue,
                 attr: int, min_score: float, curve: Curve | None, pictures: Path) -> dict[str, Any]:
    """One design's matches and pictures (in `pictures`), as the record kept in the work folder."""
    record: dict[str, Any] = {"design": design.id, "path": str(design.path)}
    image = load_or_reason(design.path, cfg.limits)
    if isinstance(image, str):
        return {**record, "error": image}
    vector = encoder.encode([image], [attr])[0, 0]
    hits, truncated = catalogue.search_range(vector, encoder.attribute_names[attr], min_score, cfg.max_results)
    save_jpeg(pictures / f"d{n:06d}.jpg", thumbnail(image))
    save_jpeg(pictures / f"d{n:06d}-why.jpg", overlay(image, encoder.explain(image, attr)))
    record.update(thumb=f"d{n:06d}.jpg", why=f"d{n:06d}-why.jpg", truncated=truncated,
                  matches=[_match(n, m, hit, cfg, encoder, attr, curve, pictures) for m, hit in enumerate(hits)])
    return record


def item_picture(cfg: ScanConfig, metadata: dict[str, Any]) -> Image.Image | str:
    """A catalogue item's stored image, or why there is none to show."""
    images_root = cfg.images_dir if cfg.images_dir is not None else (
        None if is_milvus(str(cfg.index)) else Path(cfg.index))
    ref = stored_path(images_root, metadata.get(IMAGE_KEY))
    return load_or_reason(ref, cfg.limits) if ref is not None else "the item has no stored image"


def _match(n: int, m: int, hit: SearchResult, cfg: ScanConfig, encoder: Encoder, attr: int, curve: Curve | None,
           pictures: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": hit.id, "score": hit.score,
                             "precision": None if curve is None else curve.precision_at(hit.score)}
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
        from asen_search.service.catalogue.scan_copies import scan_copies

        return scan_copies(cfg, encoder, start)
    attribute = cfg.attribute
    assert attribute is not None     # check_flags
    attr = encoder.attribute_id(attribute)     # UnknownAttribute names the known ones
    min_score = resolve_min_score(encoder, attribute, cfg.min_score, cfg.min_precision)
    curve = encoder.thresholds.curves.get(attribute) if encoder.thresholds is not None else None
    designs = read_designs(cfg.designs, cfg.allow_any_url)

    def scan_one(n: int, design: CatalogueEntry, catalogue: Catalogue, pictures: Path) -> dict[str, Any]:
        return _scan_design(n, design, cfg, encoder, catalogue, attr, min_score, curve, pictures)

    run = run_designs(cfg, encoder, designs, _plan(cfg, encoder, designs, min_score), scan_one,
                      f"scanning for {attribute} >= {min_score:.4f}")
    return _write_outputs(cfg, run.records, run.state, min_score, run.scanned_now, time.monotonic() - start,
                          run.rescanned_because)


@dataclass(frozen=True)
class DesignRun:
    records: list[dict[str, Any]]       # one per design, in order
    state: dict[str, Any]               # the catalogue's state (catalogue_state)
    scanned_now: int
    rescanned_because: str | None


def run_designs(cfg: ScanConfig, encoder: Encoder, designs: list[CatalogueEntry], plan: dict[str, Any],
                scan_one: Callable[[int, CatalogueEntry, Catalogue, Path], dict[str, Any]], desc: str) -> DesignRun:
    """Every design through `scan_one` (its record; its pictures written in the folder given), each
    finished record kept in the work folder: the designs an earlier run of the same plan finished on
    the same catalogue are not scanned again (either kind of scan)."""
    catalogue = open_catalogue(cfg.index, expected_fingerprint=encoder.fingerprint)
    try:
        work = _open_work(cfg, plan)
        state = catalogue_state(catalogue, progress=cfg.progress)
        rescanned_because = _check_catalogue(cfg, work, state, len(designs))
        pictures = cfg.out / PICTURES_DIR
        scanned_now = 0
        with tqdm(total=len(designs), unit="design", desc=desc, disable=not cfg.progress) as bar:
            for n, design in enumerate(designs):
                path = work / f"design-{n:06d}.json"
                if not path.is_file():
                    record = scan_one(n, design, catalogue, pictures)
                    atomic_write(path, json_writer(record))
                    scanned_now += 1
                    if "error" in record:
                        bar.write(f"skipped design {design.id} ({design.path}): {record['error']}")
                bar.update(1)
    finally:
        catalogue.close()
    records = [json.loads((work / f"design-{n:06d}.json").read_text()) for n in range(len(designs))]
    return DesignRun(records, state, scanned_now, rescanned_because)


def json_writer(record: dict[str, Any]) -> Callable[[BinaryIO], object]:
    text = json.dumps(record).encode()
    return lambda fh: fh.write(text)


def design_digest(designs: list[CatalogueEntry]) -> str:
    digest = hashlib.sha256()
    for d in designs:
        digest.update(json.dumps([d.id, str(d.path)]).encode() + b"\n")
    return digest.hexdigest()


def _write_outputs(cfg: ScanConfig, records: list[dict[str, Any]], state: dict[str, Any], min_score: float,
                   scanned_now: int, seconds: float, rescanned_because: str | None) -> ScanReport:
    rows = [(r["design"], m["id"], m["score"], m["precision"]) for r in records for m in r.get("matches", [])]

    def write_csv(fh: Any) -> None:
        text = csv_text(rows)
        fh.write(text.encode())

    atomic_write(cfg.out / "matches.csv", write_csv)
    unreadable = [(r["design"], r["error"]) for r in records if "error" in r]
    truncated = [r["design"] for r in records if r.get("truncated")]
    summary = {"attribute": cfg.attribute, "min_score": min_score, "min_precision": cfg.min_precision,
               "max_results": cfg.max_results, "designs": len(records), "matches": len(rows),
               "unreadable": [{"design": d, "reason": why} for d, why in unreadable], "truncated": truncated,
               "catalogue": {"index": str(cfg.index), **state}, "pictures": PICTURES_DIR}
    atomic_write(cfg.out / "summary.json", lambda fh: fh.write(json.dumps(summary, indent=2).encode()))
    assert cfg.attribute is not None
    page = report_html(cfg.attribute, cfg.min_precision, cfg.max_results, records, min_score).encode()
    atomic_write(cfg.out / "report.html", lambda fh: fh.write(page))
    prune_pictures(cfg.out / PICTURES_DIR, records)
    for unreadable_design, why in unreadable:
        print(f"unreadable design {unreadable_design}: {why}", file=sys.stderr)
    return ScanReport(cfg.out, len(records), len(rows), unreadable, truncated, min_score, scanned_now, seconds,
                      rescanned_because)


def _names(entry: dict[str, Any]) -> set[str]:
    """The pictures a design's or match's record names: `thumb`, and `why` (one picture, or one per
    attribute in a copies scan)."""
    why = entry.get("why")
    names = set(why.values()) if isinstance(why, dict) else {why}
    return {n for n in (*names, entry.get("thumb")) if isinstance(n, str)}


def prune_pictures(pictures: Path, records: list[dict[str, Any]]) -> None:
    """Leave in `pictures` exactly what the report shows (no picture of an earlier, interrupted
    attempt at a design, no temporary file of a write cut short)."""
    shown = {name for r in records for name in _names(r)}
    shown |= {name for r in records for m in r.get("matches", []) for name in _names(m)}
    for path in pictures.iterdir():
        if path.name not in shown and path.is_file():
            path.unlink()

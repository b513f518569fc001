"""A scan's work folder, shared by both kinds of scan (service/jobs/scan.py, an attribute;
service/jobs/scan_copies.py, copies over every attribute): its options (`ScanConfig`) and
outcome (`ScanReport`), the plan that a resume must match, each finished design's record kept in
`OUT/.scan/`, the catalogue's recorded state (a resume on a changed catalogue scans every design
again, and says why), the designs read from a folder or a listing, a catalogue item's stored picture,
and the pictures folder pruned to what the report shows.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image
from tqdm import tqdm

from asen_search.fileio import atomic_write
from asen_search.index import Catalogue
from asen_search.index.digest import content_state
from asen_search.index.milvus import is_milvus
from asen_search.index.transfer import open_catalogue
from asen_search.model.encoder import Encoder
from asen_search.model.image_input import ImageLimits
from asen_search.service.jobs.build import load_or_reason, open_work_dir
from asen_search.service.jobs.item_images import IMAGE_KEY, stored_path
from asen_search.service.jobs.scan_report import PICTURES_DIR, WORK_DIR
from asen_search.service.jobs.sources import CatalogueEntry, check_entries, check_listing, read_catalogue


@dataclass(frozen=True)
class ScanConfig:
    checkpoint: Path
    index: str | Path  # an index directory or a Milvus location
    designs: Path  # a folder of images, a .txt of image paths, or a .jsonl/.csv catalogue
    attribute: str | None  # None with `copies`
    out: Path
    min_score: float | None = None
    min_precision: float | None = None
    max_results: int = 1000  # matches per design at most (`truncated` in the report beyond)
    images_dir: Path | None = None  # where uploaded item images are (default: the index directory)
    restart: bool = False
    progress: bool = True
    device: str = "auto"
    runtime: str = "auto"
    limits: ImageLimits = field(default_factory=ImageLimits)
    allow_any_url: bool = False  # a listing of designs may name images anywhere (sources.check_listing)
    copies: bool = False  # `asen scan --copies`: copies of each design over every attribute
    max_false_match_rate: float | None = None  # copies: the threshold from the copy calibration
    modified: int | None = None  # copies: attributes a copy may modify (default: the calibration's, else 2)
    verify: bool = False  # copies: each design's best matches re-ranked by geometric verification


@dataclass(frozen=True)
class ScanReport:
    out: Path
    designs: int
    matches: int
    unreadable: list[tuple[str, str]]  # (design, why)
    truncated: list[str]  # designs whose matches max_results cut
    min_score: float
    scanned_now: int
    seconds: float
    rescanned_because: str | None = None  # why the designs an earlier run had finished were scanned again


def save_jpeg(path: Path, image: Image.Image) -> None:
    atomic_write(path, lambda fh: image.save(fh, "JPEG", quality=85))


CATALOGUE_STATE = "catalogue.json"


def catalogue_state(catalogue: Catalogue, batch_size: int = 1000, progress: bool = False) -> dict[str, Any]:
    """What the catalogue holds (`content_state`: item count and an order-independent digest of every
    item's id, metadata and vectors), with a progress bar."""
    with tqdm(
        total=len(catalogue),
        unit="item",
        desc="reading the catalogue's state",
        disable=not progress,
        leave=False,
    ) as bar:
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
    held = (
        f"an attribute scan (--attribute {found.get('attribute')})"
        if scan_kind(found) == "attribute"
        else "a copies scan (--copies)"
    )
    wanted = "a copies scan" if scan_kind(plan) == "copies" else "an attribute scan"
    raise ValueError(
        f"{cfg.out / WORK_DIR} holds the work of {held}, which {wanted} cannot resume; pass --restart "
        "to discard it, or give another --out"
    )


def open_work(cfg: ScanConfig, plan: dict[str, Any]) -> Path:
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
            reason = (
                f"the catalogue changed since {run} started ({recorded.get('items')} items then, "
                f"{state['items']} now)"
            )
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


@dataclass(frozen=True)
class DesignRun:
    records: list[dict[str, Any]]  # one per design, in order
    state: dict[str, Any]  # the catalogue's state (catalogue_state)
    scanned_now: int
    rescanned_because: str | None


def run_designs(
    cfg: ScanConfig,
    encoder: Encoder,
    designs: list[CatalogueEntry],
    plan: dict[str, Any],
    scan_one: Callable[[int, CatalogueEntry, Catalogue, Path], dict[str, Any]],
    desc: str,
) -> DesignRun:
    """Every design through `scan_one` (its record; its pictures written in the folder given), each
    finished record kept in the work folder: the designs an earlier run of the same plan finished on
    the same catalogue are not scanned again (either kind of scan)."""
    catalogue = open_catalogue(cfg.index, expected_fingerprint=encoder.fingerprint)
    try:
        work = open_work(cfg, plan)
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


def read_designs(source: Path, allow_any_url: bool = False) -> list[CatalogueEntry]:
    """A folder of images (ids from the file names), a .txt file of image paths (one a line, relative
    to the file; ids from the file names), or a .jsonl / .csv catalogue file. A listing's images must be
    under its folder unless `allow_any_url` (sources.check_listing)."""
    if source.suffix.lower() == ".txt" and source.is_file():
        lines = [
            (n, line.strip()) for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1)
        ]
        paths = [
            (lineno, (source.parent / line) if not Path(line).is_absolute() else Path(line))
            for lineno, line in lines
            if line and not line.startswith("#")
        ]
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


def item_picture(cfg: ScanConfig, metadata: dict[str, Any]) -> Image.Image | str:
    """A catalogue item's stored image, or why there is none to show."""
    images_root = (
        cfg.images_dir
        if cfg.images_dir is not None
        else (None if is_milvus(str(cfg.index)) else Path(cfg.index))
    )
    ref = stored_path(images_root, metadata.get(IMAGE_KEY))
    return load_or_reason(ref, cfg.limits) if ref is not None else "the item has no stored image"

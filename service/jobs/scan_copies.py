"""`asen scan --copies`: for each protected design, the catalogue items that copy it, over every
attribute at once, tolerating up to `m` modified attributes (index/copies.py: the copy score is the
mean of an item's best `A - m` attribute scores).

The threshold is a copy score (`min_score`) or a false-match rate read off the checkpoint's copy
calibration (`max_false_match_rate`; model/copy_calibration.py, written by `asen calibrate-copies`),
whose per-attribute lines also say which attributes of a match are copied (at or above the line) and
which changed (below: judged modified). Without a calibration nothing is judged, and the report says so.

Same work folder, resume, catalogue-state check and outputs as an attribute scan
(service/jobs/scan.py `run_designs`); the plan says `"kind": "copies"`, so neither kind of
scan resumes the other's work. Per design: `matches.csv` rows (design, item_id, score, one column per
attribute, modified), and in `report_files/` the design's and each match's thumbnail plus an attention
overlay per copied attribute (per counted attribute without a calibration).

`--verify` (`cfg.verify`): the threshold still chooses on the copy score; each design's best
`VERIFY_POOL` matches are then re-ranked by geometric verification of their stored pictures against
the design's (model/copy_verify.py `verify_ranking`, as `POST /copies` with `verify`), the score
becoming the copy score plus the verification's share, and `matches.csv` gains `copy_score` and
`inliers` columns.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asen_search.copy_score import DEFAULT_MODIFIED
from asen_search.fileio import atomic_write
from asen_search.index import Catalogue, UnknownItem
from asen_search.index.copies import CopyHit, CopyRule, search_copies
from asen_search.model.copy_verify import LocalFeatures, local_features, verify_ranking
from asen_search.model.encoder import Encoder
from asen_search.service.jobs.build import load_or_reason
from asen_search.service.jobs.scan_report import (
    PICTURES_DIR,
    copies_csv_text,
    copies_report_html,
    overlay,
    overlay_attributes,
    thumbnail,
)
from asen_search.service.jobs.scan_work import (
    ScanConfig,
    ScanReport,
    design_digest,
    item_picture,
    prune_pictures,
    read_designs,
    run_designs,
    save_jpeg,
)
from asen_search.service.jobs.sources import CatalogueEntry


@dataclass(frozen=True)
class CopyThreshold:
    rule: CopyRule  # the attributes, m and the calibration's "modified" lines (none: not judged)
    min_score: float  # the copy score a match reaches at least
    max_false_match_rate: float | None  # what min_score was read from, if from the calibration
    calibrated: bool


def resolve_copy_threshold(
    encoder: Encoder, min_score: float | None, max_false_match_rate: float | None, modified: int | None
) -> CopyThreshold:
    """The rule and threshold of a copies scan; ValueError for a missing, doubled, out-of-range or
    unmeasurable one, naming what to do."""
    if (min_score is None) == (max_false_match_rate is None):
        raise ValueError("with --copies give exactly one of --min-score or --max-false-match-rate")
    names = encoder.attribute_names
    calibration = encoder.copy_calibration
    m = (
        modified
        if modified is not None
        else (calibration.modified if calibration is not None else DEFAULT_MODIFIED)
    )
    if not 0 <= m < len(names):
        raise ValueError(
            f"--modified must be in 0..{len(names) - 1} (attributes a copy may modify, of the model's "
            f"{len(names)}), got {m}"
        )
    if min_score is not None:
        if not -1.0 <= min_score <= 1.0:
            raise ValueError(f"--min-score must be in [-1, 1], got {min_score}")
        threshold = float(min_score)
    else:
        assert max_false_match_rate is not None
        if calibration is None:
            raise ValueError(
                "this checkpoint has no copy calibration: run `asen calibrate-copies --checkpoint CKPT "
                "--data DATASET` (writes it beside the checkpoint) or give --min-score"
            )
        if m != calibration.modified:
            raise ValueError(
                f"the copy calibration was made for --modified {calibration.modified}, its false-match "
                f"rates do not hold for --modified {m}: run `asen calibrate-copies --modified {m}` or give "
                "--min-score"
            )
        try:
            threshold = calibration.score_for_rate(max_false_match_rate)
        except ValueError as exc:  # out of [0, 1], or NoCopyThreshold: below what the calibration measures
            raise ValueError(f"--max-false-match-rate: {exc}") from None
    lines = dict(calibration.changed_below) if calibration is not None else {}
    return CopyThreshold(
        CopyRule(tuple(names), m, lines), threshold, max_false_match_rate, calibration is not None
    )


def _plan(
    cfg: ScanConfig, encoder: Encoder, designs: list[CatalogueEntry], t: CopyThreshold
) -> dict[str, Any]:
    return {
        "kind": "copies",
        "fingerprint": encoder.fingerprint,
        "index": str(cfg.index),
        "attributes": list(t.rule.attributes),
        "modified": t.rule.modified,
        "changed_below": dict(t.rule.changed_below) if t.calibrated else None,
        "min_score": t.min_score,
        "max_results": cfg.max_results,
        # only when verifying: the plan of a scan that does not verify is the one written before
        # --verify existed, so such an interrupted scan still resumes
        **({"verify": True} if cfg.verify else {}),
        "designs": design_digest(designs),
    }


def _scan_design(
    n: int,
    design: CatalogueEntry,
    cfg: ScanConfig,
    encoder: Encoder,
    catalogue: Catalogue,
    t: CopyThreshold,
    pictures: Path,
) -> dict[str, Any]:
    """One design's copies and pictures (in `pictures`), as the record kept in the work folder."""
    record: dict[str, Any] = {"design": design.id, "path": str(design.path)}
    image = load_or_reason(design.path, cfg.limits)
    if isinstance(image, str):
        return {**record, "error": image}
    vectors = encoder.encode([image])[0]  # [A, D]
    queries = {a: vectors[k] for k, a in enumerate(t.rule.attributes)}
    answer = search_copies(catalogue, queries, t.rule, min_score=t.min_score, max_results=cfg.max_results)
    ranked: list[tuple[CopyHit, float, int | None]] = [(hit, hit.score, None) for hit in answer.hits]
    if cfg.verify:
        ranked = [
            (answer.hits[c.position], c.score, c.inliers)
            for c in verify_ranking(
                [h.score for h in answer.hits],
                local_features(image),
                lambda p: _item_features(cfg, catalogue, answer.hits[p].id),
            )
        ]
    save_jpeg(pictures / f"d{n:06d}.jpg", thumbnail(image))
    matches, drawn = [], set()
    for m, (hit, score, inliers) in enumerate(ranked):
        entry: dict[str, Any] = {
            "id": hit.id,
            "score": score,
            "scores": hit.scores,
            "modified": hit.modified,
        }
        if cfg.verify:
            entry.update(copy_score=hit.score, inliers=inliers)
        try:
            picture = item_picture(cfg, catalogue.get(hit.id).metadata)
        except UnknownItem:
            picture = "the item left the catalogue during the scan"
        if isinstance(picture, str):
            entry["image_error"] = picture
        else:
            name = f"d{n:06d}-m{m:05d}"
            save_jpeg(pictures / f"{name}.jpg", thumbnail(picture))
            why = {}
            for a in overlay_attributes(hit.scores, t.rule.changed_below, t.rule.kept):
                k = t.rule.attributes.index(a)
                why[a] = f"{name}-a{k:02d}.jpg"
                save_jpeg(pictures / why[a], overlay(picture, encoder.explain(picture, k)))
            drawn |= set(why)
            entry.update(thumb=f"{name}.jpg", why=why)
        matches.append(entry)
    design_why = {}
    for k, a in enumerate(t.rule.attributes):  # the design's attention for every attribute a match shows
        if a in drawn:
            design_why[a] = f"d{n:06d}-a{k:02d}.jpg"
            save_jpeg(pictures / design_why[a], overlay(image, encoder.explain(image, k)))
    record.update(
        thumb=f"d{n:06d}.jpg",
        why=design_why,
        truncated=answer.truncated,
        scored=answer.scored,
        matches=matches,
    )
    return record


def _item_features(cfg: ScanConfig, catalogue: Catalogue, item_id: str) -> LocalFeatures | None:
    """The local features of a catalogue item's stored picture; None without a readable one."""
    try:
        picture = item_picture(cfg, catalogue.get(item_id).metadata)
    except UnknownItem:
        return None
    return None if isinstance(picture, str) else local_features(picture)


def scan_copies(cfg: ScanConfig, encoder: Encoder, start: float | None = None) -> ScanReport:
    """Scan every design of `cfg.designs` for copies in the catalogue (resuming an interrupted scan);
    `scan(cfg)` with `cfg.copies` comes here after checking the flags and loading the encoder."""
    start = time.monotonic() if start is None else start
    t = resolve_copy_threshold(encoder, cfg.min_score, cfg.max_false_match_rate, cfg.modified)
    designs = read_designs(cfg.designs, cfg.allow_any_url)

    def scan_one(n: int, design: CatalogueEntry, catalogue: Catalogue, pictures: Path) -> dict[str, Any]:
        return _scan_design(n, design, cfg, encoder, catalogue, t, pictures)

    run = run_designs(
        cfg,
        encoder,
        designs,
        _plan(cfg, encoder, designs, t),
        scan_one,
        f"scanning for copies >= {t.min_score:.4f} (m={t.rule.modified})",
    )
    records = run.records
    rows = [
        (r["design"], m["id"], m["score"], m["scores"], m["modified"])
        for r in records
        for m in r.get("matches", [])
    ]
    verified = (
        [(m["copy_score"], m["inliers"]) for r in records for m in r.get("matches", [])]
        if cfg.verify
        else None
    )
    csv_bytes = copies_csv_text(list(t.rule.attributes), rows, verified).encode()
    atomic_write(cfg.out / "matches.csv", lambda fh: fh.write(csv_bytes))
    unreadable = [(r["design"], r["error"]) for r in records if "error" in r]
    truncated = [r["design"] for r in records if r.get("truncated")]
    summary = {
        "kind": "copies",
        "attributes": list(t.rule.attributes),
        "designs": len(records),
        "matches": len(rows),
        "threshold": {"min_score": t.min_score, "max_false_match_rate": t.max_false_match_rate},
        "modified": t.rule.modified,
        "kept": t.rule.kept,
        "calibrated": t.calibrated,
        "changed_below": dict(t.rule.changed_below) if t.calibrated else None,
        "max_results": cfg.max_results,
        "verified": cfg.verify,
        "unreadable": [{"design": d, "reason": why} for d, why in unreadable],
        "truncated": truncated,
        "catalogue": {"index": str(cfg.index), **run.state},
        "pictures": PICTURES_DIR,
    }
    atomic_write(cfg.out / "summary.json", lambda fh: fh.write(json.dumps(summary, indent=2).encode()))
    page = copies_report_html(
        records,
        list(t.rule.attributes),
        t.rule.modified,
        t.rule.changed_below if t.calibrated else None,
        t.min_score,
        t.max_false_match_rate,
        cfg.max_results,
    ).encode()
    atomic_write(cfg.out / "report.html", lambda fh: fh.write(page))
    prune_pictures(cfg.out / PICTURES_DIR, records)
    for design, why in unreadable:
        print(f"unreadable design {design}: {why}", file=sys.stderr)
    return ScanReport(
        cfg.out,
        len(records),
        len(rows),
        unreadable,
        truncated,
        t.min_score,
        run.scanned_now,
        time.monotonic() - start,
        run.rescanned_because,
    )

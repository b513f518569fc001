"""`asen scan`: design protection (service/catalogue/scan.py; docs/protection.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

from asen_search.model.device import DEVICE_CHOICES
from asen_search.model.runtime import RUNTIME_CHOICES, RUNTIME_HELP
from asen_search.service.cli.service_commands import ALLOW_ANY_URL_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="design protection: every catalogue item at least this similar to each "
                       "protected design under one attribute; matches.csv and report.html",
                       description="For each protected design, every catalogue item at or above the threshold under "
                       "--attribute, best first. Writes OUT/matches.csv (design, item_id, score, estimated_precision), "
                       "OUT/report.html (open it from disk: each design and its matches with the attention map and "
                       "RoI box over them), its pictures in OUT/report_files/ (copy it with report.html) and "
                       "OUT/summary.json. Resumes an interrupted scan (every design again if the catalogue changed "
                       "since it started); unreadable designs are listed, never fatal.")
    p.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (.pt)")
    p.add_argument("--index", required=True, help="index directory, or a Milvus location (milvus://HOST:PORT/COLLECTION "
                   "or milvus-lite:PATH.db[#COLLECTION])")
    p.add_argument("--designs", type=Path, required=True, help="the protected designs: a folder of images, a .txt file "
                   "of image paths (one a line), or a .jsonl / .csv catalogue file (id, path)")
    p.add_argument("--attribute", required=True, help="the attribute the designs are protected in (e.g. neckline)")
    threshold = p.add_mutually_exclusive_group(required=True)
    threshold.add_argument("--min-score", type=float, help="every item scoring at least this (cosine, -1..1)")
    threshold.add_argument("--min-precision", type=float, help="the lowest score whose estimated precision is at "
                           "least this (the attribute's curve from `asen eval`)")
    p.add_argument("--max-results", type=int, default=1000, help="matches per design at most (default 1000; the "
                   "report says when it cut the list)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--images-dir", type=Path, help="where uploaded item images are (default: the index directory)")
    p.add_argument("--restart", action="store_true", help="discard an interrupted scan in OUT instead of resuming it")
    p.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_CHOICES}; default auto")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help=RUNTIME_HELP)
    p.add_argument("--allow-any-url", action="store_true", help=ALLOW_ANY_URL_HELP.replace(
        "a .jsonl/.csv listing", "a .txt/.jsonl/.csv listing of designs"))
    p.set_defaults(func=_scan)


def _scan(args: argparse.Namespace) -> None:
    from asen_search.index.milvus import is_milvus
    from asen_search.service.catalogue.scan import ScanConfig, scan

    index = args.index if is_milvus(args.index) else Path(args.index)
    report = scan(ScanConfig(args.checkpoint, index, args.designs, args.attribute, args.out, args.min_score,
                             args.min_precision, args.max_results, args.images_dir, args.restart, device=args.device,
                             runtime=args.runtime, allow_any_url=args.allow_any_url))
    print(f"scanned {report.designs} designs ({report.scanned_now} now) in {report.seconds:.1f} s: {report.matches} "
          f"matches at score >= {report.min_score:.4f}; {len(report.unreadable)} unreadable designs; "
          f"{len(report.truncated)} cut at --max-results")
    print(f"report: {report.out / 'report.html'}  csv: {report.out / 'matches.csv'}")

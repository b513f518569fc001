"""Design protection (docs/protection.md): `asen scan` (service/jobs/scan.py), `asen calibrate-copies`
(model/copy_calibration.py) and `asen eval-copies` (model/copy_eval.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from asen_search.model.device import DEVICE_CHOICES
from asen_search.model.runtime import RUNTIME_CHOICES, RUNTIME_HELP
from asen_search.service.cli.service_commands import ALLOW_ANY_URL_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan",
        help="design protection: every catalogue item at least this similar to each "
        "protected design under one attribute (or, with --copies, every item that copies it over all "
        "attributes); matches.csv and report.html",
        description="For each protected design, every catalogue item at or above the threshold under "
        "--attribute, best first. Writes OUT/matches.csv (design, item_id, score, estimated_precision), "
        "OUT/report.html (open it from disk: each design and its matches with the attention map and "
        "RoI box over them), its pictures in OUT/report_files/ (copy it with report.html) and "
        "OUT/summary.json. With --copies instead of --attribute: every item that copies the design "
        "over every attribute at once, up to --modified attributes changed (copy score: the mean of the "
        "best A-m attribute scores); matches.csv then has design, item_id, score, one score column per "
        "attribute and modified (the attributes judged changed, ';'-joined), and the report shows per "
        "match which details are copied and which changed, with the attention of the copied ones. "
        "Resumes an interrupted scan (every design again if the catalogue changed since it started; "
        "never a scan of the other kind); unreadable designs are listed, never fatal.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (.pt)")
    p.add_argument(
        "--index",
        required=True,
        help="index directory, or a Milvus location (milvus://HOST:PORT/COLLECTION "
        "or milvus-lite:PATH.db[#COLLECTION])",
    )
    p.add_argument(
        "--designs",
        type=Path,
        required=True,
        help="the protected designs: a folder of images, a .txt file "
        "of image paths (one a line), or a .jsonl / .csv catalogue file (id, path)",
    )
    p.add_argument(
        "--attribute",
        help="the attribute the designs are protected in (e.g. neckline); required "
        "without --copies, refused with it",
    )
    p.add_argument(
        "--copies",
        action="store_true",
        help="scan for copies over every attribute at once instead of "
        "one attribute (threshold: --min-score as a copy score, or --max-false-match-rate)",
    )
    threshold = p.add_mutually_exclusive_group()
    threshold.add_argument(
        "--min-score",
        type=float,
        help="every item scoring at least this (cosine, -1..1; with --copies, the copy score)",
    )
    threshold.add_argument(
        "--min-precision",
        type=float,
        help="the lowest score whose estimated precision is at "
        "least this (the attribute's curve from `asen eval`); not with --copies",
    )
    threshold.add_argument(
        "--max-false-match-rate",
        type=float,
        help="with --copies: the lowest copy score whose "
        "estimated false-match rate is at most this (needs `asen calibrate-copies`)",
    )
    p.add_argument(
        "--modified",
        type=int,
        help="with --copies: attributes a copy may modify (m; default: the copy calibration's, else 2)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="with --copies: re-rank each design's best 50 matches by geometric verification of their "
        "stored pictures (the threshold still chooses on the copy score; matches.csv gains copy_score "
        "and inliers; about 90 ms a verified match on 2 cores)",
    )
    p.add_argument(
        "--max-results",
        type=int,
        default=1000,
        help="matches per design at most (default 1000; the report says when it cut the list)",
    )
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument(
        "--images-dir", type=Path, help="where uploaded item images are (default: the index directory)"
    )
    p.add_argument(
        "--restart", action="store_true", help="discard an interrupted scan in OUT instead of resuming it"
    )
    p.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_CHOICES}; default auto")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help=RUNTIME_HELP)
    p.add_argument(
        "--allow-any-url",
        action="store_true",
        help=ALLOW_ANY_URL_HELP.replace("a .jsonl/.csv listing", "a .txt/.jsonl/.csv listing of designs"),
    )
    p.set_defaults(func=_scan)
    _register_copies(sub)


def _register_copies(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate-copies",
        help="calibrate copy scores on a labelled validation split (no copy labels)",
        description="Pairs every validation image with a new photograph of itself (same design) and "
        "with the other images that share its labelled values (look-alikes), and writes "
        "CHECKPOINT-stem.copies.json beside the checkpoint: the copy score's false-match rate curve and "
        "each attribute's 'modified' line. POST /copies and asen scan --copies read it.",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument(
        "--data", type=Path, required=True, help="the dataset the model was trained on (its valid split)"
    )
    p.add_argument("--split", default="valid", choices=("valid", "test"))
    p.add_argument("--modified", type=int, default=2, help="attributes a copy may modify (m; default 2)")
    p.add_argument(
        "--max-images", type=int, default=2000, help="images of the split used at most (default 2000)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_CHOICES}; default auto")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help=RUNTIME_HELP)
    p.set_defaults(func=_calibrate)

    p = sub.add_parser(
        "eval-copies",
        help="copy detection on a copy benchmark (asen synth --copies): mAP, Recall@K, "
        "false matches, against whole-image and single-attribute baselines",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="a copy benchmark (asen synth --copies OUT)")
    p.add_argument("--split", default="test", choices=("valid", "test"))
    p.add_argument(
        "--false-match-rate",
        type=float,
        default=0.01,
        help="the calibrated threshold the false matches "
        "per design are counted at (default 0.01; needs asen calibrate-copies)",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="leave out the geometrically verified copy score (model/copy_verify.py; about 4 minutes "
        "of the run on 2 cores)",
    )
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument(
        "--plot", type=Path, help="write a bar chart of mAP and Recall@10 per method and changes here (.png)"
    )
    p.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_CHOICES}; default auto")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help=RUNTIME_HELP)
    p.set_defaults(func=_eval_copies)


def _calibrate(args: argparse.Namespace) -> None:
    from asen_search.model.copy_calibration import calibrate_copies, describe, save_copy_calibration
    from asen_search.model.data.dataset import load_dataset
    from asen_search.model.encoder import Encoder

    encoder = Encoder.from_checkpoint(args.checkpoint, args.device, args.runtime, extras=False)
    dataset = load_dataset(args.data)
    if [a.name for a in dataset.attributes] != encoder.attribute_names:
        raise ValueError(
            f"{args.data}: its attributes differ from the checkpoint's {encoder.attribute_names}"
        )
    calibration = calibrate_copies(
        encoder, dataset, args.split, args.modified, args.max_images, seed=args.seed
    )
    path = save_copy_calibration(args.checkpoint, calibration)
    print(
        f"copy calibration written to {path}: {calibration.same_pairs} same-design pairs, "
        f"{calibration.lookalike_pairs} look-alike pairs"
    )
    for line in describe(calibration):
        print("  " + line)
    print("  modified below: " + ", ".join(f"{a} {t:.3f}" for a, t in calibration.changed_below.items()))


def _eval_copies(args: argparse.Namespace) -> None:
    import json

    from asen_search.model.copy_calibration import load_copy_calibration
    from asen_search.model.copy_eval import evaluate_copies, plot_copies, report_lines
    from asen_search.model.encoder import Encoder

    encoder = Encoder.from_checkpoint(args.checkpoint, args.device, args.runtime, extras=False)
    calibration = load_copy_calibration(args.checkpoint, encoder.fingerprint)
    if calibration is None:
        print(
            "no copy calibration beside the checkpoint (asen calibrate-copies): false matches are not counted"
        )
    report = evaluate_copies(
        encoder, args.data, args.split, calibration, args.false_match_rate, verify=args.verify
    )
    for line in report_lines(report):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.json}")
    if args.plot:
        plot_copies(report, args.plot)
        print(f"plot: {args.plot}")


def _scan(args: argparse.Namespace) -> None:
    from asen_search.index.milvus import is_milvus
    from asen_search.service.jobs.scan import ScanConfig, scan

    index = args.index if is_milvus(args.index) else Path(args.index)
    report = scan(
        ScanConfig(
            args.checkpoint,
            index,
            args.designs,
            args.attribute,
            args.out,
            args.min_score,
            args.min_precision,
            args.max_results,
            args.images_dir,
            args.restart,
            device=args.device,
            runtime=args.runtime,
            allow_any_url=args.allow_any_url,
            copies=args.copies,
            max_false_match_rate=args.max_false_match_rate,
            modified=args.modified,
            verify=args.verify,
        )
    )
    what = "copies at copy score" if args.copies else "matches at score"
    print(
        f"scanned {report.designs} designs ({report.scanned_now} now) in {report.seconds:.1f} s: {report.matches} "
        f"{what} >= {report.min_score:.4f}; {len(report.unreadable)} unreadable designs; "
        f"{len(report.truncated)} cut at --max-results"
    )
    print(f"report: {report.out / 'report.html'}  csv: {report.out / 'matches.csv'}")

"""`asen` subcommands of the service package: `index build`, `index compact`, `serve` and `demo`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from asen_search.model.device import DEVICE_CHOICES
from asen_search.model.runtime import RUNTIME_CHOICES, RUNTIME_HELP
from asen_search.service.cli import copy_command
from asen_search.service.cli.config_flags import add_settings_options, settings_from_args
from asen_search.service.jobs.locations import as_ref

ALLOW_ANY_URL_HELP = (
    "let a .jsonl/.csv listing name images outside its own folder (a local listing) or its own "
    "scheme and bucket/host (a listing at a URL); still refused: a file:// URL named by a listing "
    "at a URL, and link-local or cloud metadata addresses (169.254.0.0/16, fe80::/10, "
    "metadata.google.internal)"
)

if TYPE_CHECKING:
    from asen_search.service.api.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    _add_index(sub)
    _add_encode(sub)
    _add_serve(sub)
    _add_check(sub)
    _add_demo(sub)


def _add_index(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser("index", help="catalogue indexes")
    index_sub = index.add_subparsers(dest="index_command", required=True)
    p = index_sub.add_parser(
        "build",
        help="encode a catalogue for every attribute and write its indexes",
        description="Encode every catalogue image for every attribute and write the "
        "indexes. Interrupted builds resume when the same command is run again.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (.pt)")
    p.add_argument(
        "--catalogue",
        type=as_ref,
        required=True,
        help="a directory of images (ids from file names), a .jsonl/.csv file of id, path[, "
        "metadata...], or a dataset directory (see --split); a folder or listing may be a URL "
        "(s3://bucket/shop/listing.jsonl; needs the store's fsspec driver, e.g. pip install s3fs)",
    )
    p.add_argument("--out", type=Path, required=True, help="index directory to write")
    p.add_argument(
        "--split",
        choices=("train", "valid", "test"),
        default="test",
        help="split of a dataset directory (default test)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--chunk-size", type=int, default=512, help="images per resumable unit of work")
    p.add_argument("--factory", default="Flat", help="FAISS index factory string (default Flat: exact)")
    p.add_argument("--restart", action="store_true", help="discard an interrupted build instead of resuming")
    p.add_argument(
        "--replace",
        action="store_true",
        help="--out may hold a catalogue (with the items added and "
        "deleted through the API since it was built): replace it, keeping it beside as "
        "OUT.replaced-<time>. Without it, a build into an existing catalogue is refused",
    )
    p.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_CHOICES}; default auto")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help=RUNTIME_HELP)
    p.add_argument("--allow-any-url", action="store_true", help=ALLOW_ANY_URL_HELP)
    p.set_defaults(func=_index_build)
    p = index_sub.add_parser(
        "compact",
        help="fold an index's write-ahead log into a new snapshot (offline)",
        description="Replay the write-ahead log of an index directory into a new snapshot "
        "and start an empty log, as the server does in the background and at shutdown. Refused "
        "while a server writes the directory.",
    )
    p.add_argument("--index", type=Path, required=True, help="index directory")
    p.set_defaults(func=_index_compact)
    p = index_sub.add_parser(
        "repair",
        help="make a corrupt write-ahead log loadable (offline; keeps a copy)",
        description="A write-ahead log with a damaged record followed by valid ones is "
        "refused at load (cutting it would lose acknowledged writes). This reports exactly "
        "which logged writes a repair keeps and loses, copies the log beside itself "
        "(wal-*.log.corrupt-TIME) and then rewrites it. Default: keep every write before the "
        "first damaged record. Refused while a server writes the directory.",
    )
    p.add_argument("--index", type=Path, required=True, help="index directory")
    p.add_argument("--dry-run", action="store_true", help="only report what a repair would keep and lose")
    p.add_argument(
        "--salvage",
        action="store_true",
        help="also keep the intact writes after the damage (only the damaged ones are lost; later "
        "writes then apply without them)",
    )
    p.set_defaults(func=_index_repair)

    copy_command.register(index_sub, _new_catalogue_options)

    p = index_sub.add_parser(
        "load-shards",
        help="a catalogue (index directory or Milvus collection) from the Parquet shards of `asen encode`",
    )
    p.add_argument("--shards", type=Path, required=True, help="the shards folder of `asen encode`")
    p.add_argument(
        "--out",
        required=True,
        help="index directory to write, or milvus://HOST:PORT/COLLECTION or "
        "milvus-lite:PATH.db[#COLLECTION] (must not exist)",
    )
    _new_catalogue_options(p)
    p.set_defaults(func=_load_shards)


def _add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="encode a catalogue on a Ray cluster into Parquet shards (resumable)",
        description="Encode every catalogue image for every attribute with an actor pool on Ray "
        "(one model per actor) into Parquet shards under --out; then `asen index load-shards` makes "
        "an index directory or a Milvus collection of them. Finished shards are kept: run the same "
        "command again to resume. Needs pip install 'asen-search[ray]'.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (.pt)")
    p.add_argument(
        "--catalogue",
        type=as_ref,
        required=True,
        help="as for `asen index build`: a folder of images, "
        "a .jsonl/.csv listing, or a dataset directory (see --split); a local path or a URL (s3://...)",
    )
    p.add_argument("--split", choices=("train", "valid", "test"), default="test")
    p.add_argument("--out", type=Path, required=True, help="shards folder (shared by all nodes of a cluster)")
    p.add_argument(
        "--ray",
        default="local",
        help="local (a Ray instance here, default), auto (the running "
        "cluster), or a cluster address (ray://HOST:10001 or HOST:6379)",
    )
    p.add_argument("--ray-actors", type=int, default=2, help="encoder actors, one model each (default 2)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs (and torch threads) per actor")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard: the unit of resuming")
    p.add_argument("--restart", action="store_true", help="discard the shards of an earlier run")
    p.add_argument("--allow-any-url", action="store_true", help=ALLOW_ANY_URL_HELP)
    p.set_defaults(func=_encode)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from asen_search.service.api.settings import Settings

    p = sub.add_parser(
        "serve",
        help="serve the HTTP API (settings also from ASEN_* environment variables)",
        description="Serve the HTTP API. Every setting is a flag and an ASEN_* environment variable "
        "(docs/service.md); flags win. The API key is read from ASEN_API_KEY only: on the command line "
        "it would show in the process list.",
    )
    add_settings_options(p, Settings, skip=("api_key",))
    p.set_defaults(func=_serve)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check that a model and an index exist and belong together (read-only)",
        description="Load the checkpoint and read the index's manifest and write-ahead log, as "
        "`asen serve` would, and check that the index was built by this model; exit non-zero "
        "with the reason otherwise. Writes nothing. Settings as for serve (ASEN_CHECKPOINT, "
        "ASEN_INDEX).",
    )
    p.add_argument("--checkpoint", type=Path, help="model checkpoint (ASEN_CHECKPOINT)")
    p.add_argument("--index", help="index directory or Milvus collection (ASEN_INDEX)")
    p.set_defaults(func=_check)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="make the demo dataset, model and index if missing, then serve them")
    p.add_argument(
        "--workdir", type=Path, default=Path("var/demo"), help="where everything goes (default var/demo)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-serve", action="store_true", help="prepare everything, then exit")
    p.add_argument(
        "--synth-args",
        default=os.environ.get("ASEN_DEMO_SYNTH_ARGS", ""),
        metavar="FLAGS",
        help="`asen synth` flags for the demo dataset, one string (ASEN_DEMO_SYNTH_ARGS; default: "
        "the full demo dataset)",
    )
    p.add_argument(
        "--train-args",
        default=os.environ.get("ASEN_DEMO_TRAIN_ARGS", ""),
        metavar="FLAGS",
        help='`asen train` flags for the demo model, one string, e.g. "--time-budget 5" '
        "(ASEN_DEMO_TRAIN_ARGS; default: those of --recipe)",
    )
    p.add_argument(
        "--recipe",
        choices=("quick", "full"),
        default=os.environ.get("ASEN_DEMO_RECIPE", "quick"),
        help="without --train-args: quick (the default recipe with 5 + 2 epochs instead of 9 + 6 and the "
        "global input at 224 instead of 288: the first run answers within minutes of the install) or "
        "full (the default recipe) "
        "(ASEN_DEMO_RECIPE; docs/performance.md)",
    )
    p.set_defaults(func=_demo)


def _new_catalogue_options(p: argparse.ArgumentParser) -> None:
    """How a new catalogue is made, for the commands that write one to either backend."""
    p.add_argument(
        "--index-type",
        help="Milvus: FLAT (default), HNSW, IVF_FLAT, IVF_SQ8, DISKANN; a directory: a "
        "FAISS factory string (default Flat)",
    )
    p.add_argument(
        "--layout",
        choices=("fields", "rows"),
        default="fields",
        help="Milvus: one row per item with a vector field per attribute (fields, Milvus 2.4+), or one "
        "row per item and attribute (rows: any Milvus from 2.3, any number of attributes); docs/scale.md",
    )


def _index_build(args: argparse.Namespace) -> None:
    from asen_search.service.jobs.build import BuildConfig, build_index

    for name in ("batch_size", "chunk_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    report = build_index(
        BuildConfig(
            args.checkpoint,
            args.catalogue,
            args.out,
            args.split,
            args.batch_size,
            args.chunk_size,
            args.factory,
            args.restart,
            device=args.device,
            runtime=args.runtime,
            allow_any_url=args.allow_any_url,
            replace=args.replace,
        )
    )
    print(
        f"built {report.out}: {report.items} items; {report.encoded_now} images read in "
        f"{report.seconds:.1f} s ({report.images_per_second:.1f} img/s)"
    )
    if report.backup is not None:
        print(f"the catalogue it replaced is kept in {report.backup}")
    if report.skipped:
        print(
            f"{len(report.skipped)} unreadable images skipped (listed in {report.out / 'build_report.json'}):",
            file=sys.stderr,
        )
        for item_id, why in report.skipped:
            print(f"  {item_id}: {why}", file=sys.stderr)


def _index_compact(args: argparse.Namespace) -> None:
    from asen_search.index import FaissCatalogue, LogUnavailable

    catalogue = FaissCatalogue.load(args.index, writer=True)  # DirectoryLocked while a server writes it
    try:
        catalogue.open_log()
        before = catalogue.log_size
        version = catalogue.checkpoint()
    except LogUnavailable as exc:
        raise RuntimeError(str(exc)) from None
    finally:
        catalogue.close()
    print(f"compacted {before} log bytes of {args.index}: {len(catalogue)} items in {version.name}")


def _index_repair(args: argparse.Namespace) -> None:
    from asen_search.index import repair_log

    report = repair_log(args.index, "salvage" if args.salvage else "cut", dry_run=args.dry_run)
    print("\n".join(report.lines()))


def _check(args: argparse.Namespace) -> None:
    from asen_search.index import IndexFormatError, read_manifest
    from asen_search.model.encoder import Encoder
    from asen_search.service.resources import check_compatible_manifest

    settings = serve_settings(args)
    encoder = Encoder.from_checkpoint(settings.checkpoint, runtime="torch")  # only read, never run
    if isinstance(settings.index, str):  # a Milvus collection: opened as the server opens it (its properties)
        from asen_search.index import open_catalogue
        from asen_search.service.resources import check_compatible

        catalogue = open_catalogue(settings.index, expected_fingerprint=encoder.fingerprint)
        try:
            check_compatible(encoder, catalogue)
            print(
                f"ok: {settings.checkpoint} and {settings.index} ({len(catalogue)} items, attributes "
                f"{', '.join(catalogue.attributes)}) belong together"
            )
        finally:
            catalogue.close()
        return
    try:  # an index directory: its manifest alone (opening it would read every vector)
        manifest = read_manifest(settings.index)
    except IndexFormatError as exc:
        raise ValueError(str(exc)) from None
    check_compatible_manifest(encoder, manifest)
    print(
        f"ok: {settings.checkpoint} and {settings.index} ({manifest['count']} items, version "
        f"{manifest['version']}, attributes {', '.join(manifest['attributes'])}) belong together"
    )


def _encode(args: argparse.Namespace) -> None:
    from asen_search.service.jobs.ray_encode import EncodeConfig, encode_with_ray
    from asen_search.service.jobs.sources import read_catalogue

    if args.ray_actors < 1 or args.shard_size < 1 or args.batch_size < 1:
        raise ValueError("--ray-actors, --shard-size and --batch-size must be at least 1")
    entries = read_catalogue(args.catalogue, args.split, allow_any_url=args.allow_any_url)
    report = encode_with_ray(
        EncodeConfig(
            args.checkpoint,
            args.out,
            args.ray,
            args.ray_actors,
            args.cpus_per_actor,
            args.gpus_per_actor,
            args.batch_size,
            args.shard_size,
            args.restart,
        ),
        entries,
    )
    print(report.summary())
    print(f"next: asen index load-shards --shards {args.out} --out INDEX_DIR_OR_MILVUS")


def _load_shards(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from asen_search.service.jobs.shards import load_shards

    with tqdm(unit="item", desc="loading shards") as bar:
        catalogue = load_shards(args.shards, args.out, args.index_type, args.layout, bar.update)
    print(f"{args.out}: {len(catalogue)} items from {args.shards}")
    catalogue.close()


def serve_settings(args: argparse.Namespace) -> Settings:
    """Flags given on the command line win over ASEN_* variables."""
    from pydantic import ValidationError

    from asen_search.service.api.settings import Settings

    try:
        settings: Settings = settings_from_args(Settings, args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(
            f"serve settings: {problems} (give --checkpoint/--index or set ASEN_CHECKPOINT/ASEN_INDEX)"
        ) from None
    return settings


def _serve(args: argparse.Namespace) -> None:
    from asen_search.service.api.server import prefer_passive_openmp, serve

    prefer_passive_openmp()  # before torch and faiss load
    serve(serve_settings(args))


def _demo(args: argparse.Namespace) -> None:
    from asen_search.service.api.server import prefer_passive_openmp

    prefer_passive_openmp()
    from asen_search.service.api.server import serve
    from asen_search.service.api.settings import Settings
    from asen_search.service.jobs.demo import run_demo

    def serve_demo(checkpoint: Path, index: Path) -> None:
        serve(Settings(checkpoint=checkpoint, index=index, host=args.host, port=args.port))

    run_demo(
        args.workdir,
        args.host,
        args.port,
        serve_after=not args.no_serve,
        synth_args=args.synth_args,
        train_args=args.train_args,
        recipe=args.recipe,
        serve=serve_demo,
    )

"""`asen index copy`: every item of a catalogue into a new one on either engine, carrying the images
uploaded through the API (service/jobs/carry_images.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def register(
    index_sub: argparse._SubParsersAction, new_catalogue_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    p = index_sub.add_parser(
        "copy",
        help="copy a catalogue into a new one on either backend (FAISS directory or Milvus)",
        description="Copy every item (vectors and metadata) of a catalogue into a "
        "new one: an index directory into a Milvus collection for service replicas, or back. "
        "Images uploaded through POST /items (images/<sha256>.<ext> under the images folder) "
        "are carried from the source's images folder to the destination's; paths and URLs "
        "recorded by `asen index build` are kept as they are. The source is only read. "
        "Locations: an index directory, milvus://HOST:PORT/COLLECTION or "
        "milvus-lite:PATH.db[#COLLECTION].",
    )
    p.add_argument("--from", dest="source", required=True, help="the catalogue to copy")
    p.add_argument(
        "--to", dest="destination", required=True, help="where the new catalogue goes (must not exist)"
    )
    p.add_argument("--batch-size", type=int, default=1000, help="items per write (default 1000)")
    p.add_argument(
        "--images-dir",
        type=Path,
        help="where the destination's uploaded images go: the folder its "
        "servers will use as ASEN_IMAGES_DIR (needed for a Milvus destination when the source has uploaded "
        "images; default for an index directory: the directory itself)",
    )
    p.add_argument(
        "--source-images-dir",
        type=Path,
        help="where the source's uploaded images are: the folder its "
        "servers use as ASEN_IMAGES_DIR (needed for a Milvus source with uploaded images; default for an "
        "index directory: the directory itself)",
    )
    p.add_argument(
        "--skip-missing-images",
        action="store_true",
        help="copy the items whose uploaded image cannot be "
        "carried (its file is missing, or no images folder was given) without an image, and list them, "
        "instead of refusing the copy",
    )
    new_catalogue_options(p)
    p.set_defaults(func=_index_copy)


def _index_copy(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from asen_search.index.transfer import copy_catalogue, open_catalogue
    from asen_search.service.jobs.carry_images import cleaned_up_on_failure, images_root, plan_carry

    source = open_catalogue(args.source)
    try:
        # every uploaded image checked before anything is made at the destination
        carrier = plan_carry(
            source,
            images_root(args.source, args.source_images_dir),
            images_root(args.destination, args.images_dir),
            skip_missing=args.skip_missing_images,
            batch_size=args.batch_size,
        )
        with (
            tqdm(total=len(source), unit="item", desc="copying") as bar,
            tqdm(
                total=len(carrier.uploads) - len(carrier.missing),
                unit="image",
                desc="carrying images",
                disable=not carrier.uploads,
            ) as images_bar,
            cleaned_up_on_failure(carrier),
        ):
            carrier.progress = images_bar.update
            copied = copy_catalogue(
                source,
                args.destination,
                args.index_type,
                args.batch_size,
                bar.update,
                layout=args.layout,
                carry=carrier,
            )
        where = f" into {carrier.dest_root}" if carrier.dest_root is not None else ""
        print(
            f"copied {len(copied)} items of {args.source} into {args.destination}; carried "
            f"{len(carrier.carried)} uploaded images{where}"
        )
        copied.close()
        if carrier.skipped:
            print(
                f"{len(carrier.skipped)} items copied without their uploaded image (--skip-missing-images):",
                file=sys.stderr,
            )
            for item_id, why in carrier.skipped:
                print(f"  {item_id}: {why}", file=sys.stderr)
    finally:
        source.close()

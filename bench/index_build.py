"""Index build throughput: catalogue images per second, every attribute encoded.

    .venv/bin/python bench/index_build.py --checkpoint var/demo/model/best.pt --catalogue var/demo/data --limit 1000

Builds into a temporary directory from scratch (no resume), so the number covers decoding,
encoding every attribute and writing the index. Uses the allocator settings of docs/tuning.md
when they are set in the environment (run it through `make`'s exports or set them yourself).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--catalogue", type=Path, required=True, help="anything `asen index build` reads")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from asen_search.model.encoder import Encoder
    from asen_search.model.tuning import PROCESS_ENV
    from asen_search.service.jobs.build import BuildConfig, build_index
    from asen_search.service.jobs.sources import read_catalogue

    missing = [k for k in PROCESS_ENV if k not in os.environ]
    if missing:
        print(
            f"note: {', '.join(missing)} not set; torch may be much slower (docs/tuning.md)", file=sys.stderr
        )
    encoder = Encoder.from_checkpoint(args.checkpoint)
    entries = read_catalogue(args.catalogue, args.split)[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        config = BuildConfig(
            args.checkpoint, args.catalogue, Path(tmp) / "index", args.split, args.batch_size
        )
        start = time.perf_counter()
        report = build_index(config, entries=entries, encoder=encoder)
        seconds = time.perf_counter() - start
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{len(entries)} images, {len(encoder.attributes)} attributes, dim {encoder.dim}, batch {args.batch_size}, "
        f"torch threads {__import__('torch').get_num_threads()}: {seconds:.1f} s = "
        f"{len(entries) / seconds:.1f} images/s ({report.items} indexed, {len(report.skipped)} unreadable)"
    )


if __name__ == "__main__":
    main()

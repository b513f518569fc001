"""Training memory and time against the number of training images: for each size, draw a dataset
(`asen synth --scale`), then run `asen train` twice in a child process (a cold and a warm map cache),
recording the child's peak RSS, the caching pass ("prepared ... in S s") and each epoch's seconds.

    .venv/bin/python bench/train_memory.py --work /tmp/train-memory --sizes 10000,50000 --max-memory 2 \\
        --scale 1.6 --plot docs/train_memory.png

`--max-memory` is `asen train --max-memory` (GB); a small one shows the bound on sizes this machine can
draw in minutes. One stage-1 and one stage-2 epoch of `--triplets` triplets each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _train(data: Path, out: Path, cache: Path, args: argparse.Namespace) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "asen_search.service.cli",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--max-memory",
        str(args.max_memory),
        "--stage1-epochs",
        "1",
        "--stage2-epochs",
        "1",
        "--triplets",
        str(args.triplets),
        "--device",
        "cpu",
    ]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
        seconds = time.perf_counter() - start
        output.seek(0)
        text = output.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(text[-3000:])
    peak = usage.ru_maxrss * 1024  # KiB on Linux
    prepared = re.search(r"prepared .* in (\d+) s \((.*)\)", text)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {
        "seconds": seconds,
        "peak_rss_gib": peak / 2**30,
        "prepare_s": float(prepared.group(1)) if prepared else -1,
        "plan": prepared.group(2) if prepared else "",
        "stage1_epoch_s": log[0]["seconds"],
        "stage2_epoch_s": log[1]["seconds"] if len(log) > 1 else -1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--sizes", default="10000,50000", help="training images, comma-separated")
    parser.add_argument("--max-memory", type=float, default=2.0)
    parser.add_argument("--scale", type=float, default=1.6)
    parser.add_argument("--triplets", type=int, default=3200)
    parser.add_argument("--plot", type=Path, help="write a PNG of peak RSS and times against the size")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one size in a fresh process
    args = parser.parse_args()
    if args.one is not None:
        n = args.one
        data, cache = args.work / f"data-{n}", args.work / f"cache-{n}"
        start = time.perf_counter()
        if not (data / "meta.json").is_file():
            from asen_search.model.data.synth import generate_dataset

            generate_dataset(
                data, n_train=n, n_valid=500, n_test=200, seed=0, progress=False, scale=args.scale
            )
        synth_s = time.perf_counter() - start
        shutil.rmtree(cache, ignore_errors=True)
        cold = _train(data, args.work / f"run-{n}", cache, args)
        warm = _train(data, args.work / f"run-{n}", cache, args)
        print(json.dumps({"train_images": n, "synth_s": synth_s, "cold": cold, "warm": warm}))
        return
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        saved = (
            args.work / f"result-{n}.json"
        )  # a size already measured is kept (delete the file to measure again)
        if saved.is_file():
            rows.append(json.loads(saved.read_text()))
            continue
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--work",
                str(args.work),
                "--max-memory",
                str(args.max_memory),
                "--scale",
                str(args.scale),
                "--triplets",
                str(args.triplets),
                "--one",
                str(n),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(done.stdout[-2000:] + done.stderr[-3000:])
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        saved.write_text(json.dumps(rows[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n--max-memory {args.max_memory} GB, pictures at scale {args.scale}, {args.triplets} triplets an epoch\n"
    )
    print(
        "| train images | draw s | peak RSS GiB (cold / warm) | caching pass s (cold / warm) | stage-1 epoch s | "
        "stage-2 epoch s | whole run s (cold / warm) | plan |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        c, w = r["cold"], r["warm"]
        print(
            f"| {r['train_images']:,} | {r['synth_s']:.0f} | {c['peak_rss_gib']:.2f} / {w['peak_rss_gib']:.2f} | "
            f"{c['prepare_s']:.0f} / {w['prepare_s']:.0f} | {c['stage1_epoch_s']:.0f} | {c['stage2_epoch_s']:.0f} | "
            f"{c['seconds']:.0f} / {w['seconds']:.0f} | {c['plan']} |"
        )
    if args.plot:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sizes = [r["train_images"] for r in rows]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.plot(sizes, [r["cold"]["peak_rss_gib"] for r in rows], "o-", label="peak RSS, cold cache")
        left.plot(sizes, [r["warm"]["peak_rss_gib"] for r in rows], "s--", label="peak RSS, warm cache")
        left.axhline(args.max_memory, color="grey", lw=0.8, label=f"--max-memory {args.max_memory:g}")
        top = max([args.max_memory] + [r[k]["peak_rss_gib"] for r in rows for k in ("cold", "warm")])
        left.set(xlabel="training images", ylabel="GiB", title="memory", ylim=(0, 1.15 * top))
        left.legend()
        right.plot(sizes, [r["cold"]["prepare_s"] for r in rows], "o-", label="caching pass, cold")
        right.plot(sizes, [r["warm"]["prepare_s"] for r in rows], "s--", label="caching pass, warm")
        right.plot(sizes, [r["cold"]["stage2_epoch_s"] for r in rows], "^-", label="stage-2 epoch")
        right.set(xlabel="training images", ylabel="seconds", title="time")
        right.legend()
        for axis in (left, right):
            axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()

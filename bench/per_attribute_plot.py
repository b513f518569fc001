"""Bar chart of test MAP per attribute, several models side by side (mean over seeds, the sample
standard deviation as an error bar), for docs/results.md's before/after plots.

    .venv/bin/python bench/per_attribute_plot.py --out docs/per-attribute.png --line 85 \\
        "1 glimpse=runs/quick-s0/test.json,runs/quick-s1/test.json" \\
        "2 glimpses + positions=runs/quick-g2-s0/test.json,runs/quick-g2-s1/test.json"

Each file is an `asen eval --json` report (`per_attribute`) or a `bench/copy_protection.py` run
report (`class_map_per_attribute`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def per_attribute(path: Path) -> dict[str, float]:
    report = json.loads(path.read_text())
    values = report.get("per_attribute") or report.get("class_map_per_attribute")
    if not isinstance(values, dict):
        raise SystemExit(f"{path}: neither per_attribute nor class_map_per_attribute in it")
    return {k: 100 * float(v) for k, v in values.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="+", metavar="NAME=FILE[,FILE...]")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--line", type=float, default=None, help="a goal drawn across the chart")
    parser.add_argument("--title", default="Test MAP per attribute")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = []
    for spec in args.groups:
        name, _, files = spec.partition("=")
        if not files:
            parser.error(f"{spec!r}: expected NAME=FILE[,FILE...]")
        groups.append((name, [per_attribute(Path(f)) for f in files.split(",")]))
    attrs = list(groups[0][1][0])
    x = np.arange(len(attrs))
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(1.3 * len(attrs) + 2, 4.2))
    for i, (name, runs) in enumerate(groups):
        means = [statistics.fmean(r[a] for r in runs) for a in attrs]
        sds = [statistics.stdev(r[a] for r in runs) if len(runs) > 1 else 0.0 for a in attrs]
        label = f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, means, width, yerr=sds, capsize=2, label=label)
    if args.line is not None:
        ax.axhline(args.line, color="black", linestyle="--", linewidth=1)
    ax.set_xticks(x, attrs, rotation=20)
    ax.set_ylim(50, 101)
    ax.set_ylabel("test MAP x100")
    ax.set_title(args.title)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()

"""Markdown table of test MAP per attribute from `asen eval --json` files; several files for one
model (comma-separated: one per seed) give the mean and, after it, the sample standard deviation.

    .venv/bin/python bench/ablation_table.py asen++=runs/default/test.json asen-global=runs/ablation/asen-global/test.json ...
    .venv/bin/python bench/ablation_table.py default=runs/q/default-s0/test.json,runs/q/default-s1/test.json,...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _cell(values: list[float], bold: bool = False) -> str:
    mean = f"{100 * statistics.fmean(values):.2f}"
    mean = f"**{mean}**" if bold else mean
    return mean if len(values) == 1 else f"{mean} ± {100 * statistics.stdev(values):.2f}"


def main(pairs: list[str]) -> None:
    rows = []
    for pair in pairs:
        name, paths = pair.split("=", 1)
        rows.append((name, [json.loads(Path(p).read_text()) for p in paths.split(",")]))
    attrs = list(rows[0][1][0]["per_attribute"])
    ranking = all("metrics_overall" in rep for _, reps in rows for rep in reps)
    extra = ["R@1", "R@10", "nDCG@10"] if ranking else []
    print("| model | runs | " + " | ".join(attrs) + " | MAP | " + " | ".join(extra) + (" |" if extra else ""))
    print("|---" * (len(attrs) + 3 + len(extra)) + "|")
    for name, reps in rows:
        cells = [_cell([r["per_attribute"][a] for r in reps]) for a in attrs]
        cells.append(_cell([r["overall_map"] for r in reps], bold=True))
        cells += [
            _cell([r["metrics_overall"][m] for r in reps])
            for m in ("recall@1", "recall@10", "ndcg@10")
            if ranking
        ]
        print(f"| {name} | {len(reps)} | " + " | ".join(cells) + " |")
    print(
        "\nqueries: "
        + ", ".join(f"{a} {rows[0][1][0]['queries'][a]}" for a in attrs)
        + ("; several runs: mean ± sample standard deviation" if any(len(r) > 1 for _, r in rows) else "")
    )


if __name__ == "__main__":
    main(sys.argv[1:])

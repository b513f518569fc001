"""Markdown table of test MAP per attribute from `asen eval --json` files.

    .venv/bin/python bench/ablation_table.py asen++=runs/default/test.json asen-global=runs/ablation/asen-global/test.json ...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(pairs: list[str]) -> None:
    rows = []
    for pair in pairs:
        name, path = pair.split("=", 1)
        rows.append((name, json.loads(Path(path).read_text())))
    attrs = list(rows[0][1]["per_attribute"])
    print("| model | " + " | ".join(attrs) + " | overall |")
    print("|---" * (len(attrs) + 2) + "|")
    for name, rep in rows:
        cells = [f"{100 * rep['per_attribute'][a]:.2f}" for a in attrs]
        print(f"| {name} | " + " | ".join(cells) + f" | **{100 * rep['overall_map']:.2f}** |")
    print("\nqueries: " + ", ".join(f"{a} {rows[0][1]['queries'][a]}" for a in attrs))


if __name__ == "__main__":
    main(sys.argv[1:])

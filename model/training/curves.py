"""The training curve: validation MAP and training loss per epoch of both stages, drawn from
`log.jsonl` into `curve.png` beside it after every epoch (`asen train`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CURVE_FILE = "curve.png"


def read_log(path: Path) -> list[dict[str, Any]]:
    """The epoch records of a run's `log.jsonl`, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_training_curve(log: Path, out: Path | None = None, title: str | None = None) -> Path:
    """Validation MAP (top) and mean training loss (bottom) against the epoch number, one line per
    stage; the epoch whose model is `best.pt` is ringed. Returns the PNG's path (default: `curve.png`
    beside the log)."""
    from asen_search.model.training.tagging import pyplot

    records = read_log(log)
    out = Path(out) if out is not None else Path(log).parent / CURVE_FILE
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True, height_ratios=[3, 2])
    xs = list(range(1, len(records) + 1))
    for stage, colour in ((1, "tab:blue"), (2, "tab:orange")):
        at = [i for i, r in enumerate(records) if r["stage"] == stage]
        if not at:
            continue
        label = "stage 1 (global branch)" if stage == 1 else "stage 2 (global + local, betas chosen on valid)"
        top.plot(
            [xs[i] for i in at], [100 * records[i]["valid_map"] for i in at], "o-", color=colour, label=label
        )
        losses = [(xs[i], records[i]["loss"]) for i in at if records[i].get("loss") is not None]
        bottom.plot([x for x, _ in losses], [v for _, v in losses], "o-", color=colour)
    if records:
        best = max(range(len(records)), key=lambda i: records[i]["valid_map"])
        top.plot(
            [xs[best]],
            [100 * records[best]["valid_map"]],
            "o",
            markersize=14,
            markerfacecolor="none",
            markeredgecolor="black",
            label=f"best.pt ({100 * records[best]['valid_map']:.2f})",
        )
    top.set_ylabel("validation MAP")
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="lower right")
    top.set_title(title or f"training curve: {Path(log).parent.name}")
    bottom.set_ylabel("training loss (epoch mean)")
    bottom.set_xlabel("epoch (both stages)")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

"""`asen eval --compare`: several checkpoints side by side on one split, the same numbers as one by one."""

import json
from pathlib import Path

import pytest

from asen_search.service.cli.main import main
from tests.helpers.models import write_checkpoint


def test_compare_puts_checkpoints_side_by_side(
    tmp_path: Path, tiny_checkpoint: Path, demo_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_checkpoint(tmp_path / "other.pt", demo_dataset, seed=1)
    single = tmp_path / "single.json"
    assert (
        main(
            [
                "eval",
                "--data",
                str(demo_dataset),
                "--checkpoint",
                str(other),
                "--json",
                str(single),
                "--plots",
                str(tmp_path / "plots"),
                "--runtime",
                "torch",
            ]
        )
        == 0
    )
    capsys.readouterr()
    both = tmp_path / "both.json"
    assert (
        main(
            [
                "eval",
                "--data",
                str(demo_dataset),
                "--compare",
                str(tiny_checkpoint),
                str(other),
                "--json",
                str(both),
                "--runtime",
                "torch",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"[1] {tiny_checkpoint}" in out and f"[2] {other}" in out
    for label in ("overall MAP", "overall Recall@1", "overall Recall@10", "overall nDCG@10"):
        assert label in out
    reports = json.loads(both.read_text())
    assert list(reports) == [str(tiny_checkpoint), str(other)]
    alone = json.loads(single.read_text())
    assert reports[str(other)]["overall_map"] == pytest.approx(alone["overall_map"])
    assert reports[str(other)]["metrics_overall"] == pytest.approx(alone["metrics_overall"])
    row = next(line for line in out.splitlines() if line.startswith("overall MAP"))
    assert row.split()[-1] == f"{100 * alone['overall_map']:.2f}"


def test_compare_refuses_a_missing_checkpoint(
    tmp_path: Path, tiny_checkpoint: Path, demo_dataset: Path
) -> None:
    with pytest.raises(SystemExit, match="no such checkpoint"):
        main(
            [
                "eval",
                "--data",
                str(demo_dataset),
                "--compare",
                str(tiny_checkpoint),
                str(tmp_path / "nope.pt"),
            ]
        )
    with pytest.raises(SystemExit):  # --checkpoint and --compare together: argparse refuses
        main(
            [
                "eval",
                "--data",
                str(demo_dataset),
                "--checkpoint",
                str(tiny_checkpoint),
                "--compare",
                str(tiny_checkpoint),
            ]
        )

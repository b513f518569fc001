"""`asen demo`: each step is skipped when its output exists and is complete."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from asen_search.model.data.synth import ATTRIBUTES, generate_dataset
from asen_search.service.jobs.demo import demo_entries, run_demo
from tests.helpers.models import write_checkpoint


@pytest.fixture(scope="module")
def seed0_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seed0")
    generate_dataset(root, n_train=8, n_valid=8, n_test=24, seed=0, progress=False)
    return root


def test_demo_entries_carry_every_label(seed0_dataset: Path, demo_dataset: Path) -> None:
    entries = demo_entries(seed0_dataset)
    assert [e.id for e in entries[:2]] == ["test-00000", "test-00001"]
    assert all(set(e.metadata) == {"split"} | {name for name, _ in ATTRIBUTES} for e in entries)
    other_seed = demo_entries(demo_dataset)  # labels cannot be recovered: only the recorded ones
    assert all(len(e.metadata) == 2 for e in other_seed)


def test_second_run_uses_the_cache(
    seed0_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "demo"
    shutil.copytree(seed0_dataset, work / "data")
    (work / "data" / ".complete").write_text("")
    (work / "model").mkdir()
    write_checkpoint(work / "model" / "best.pt", seed0_dataset)
    run_demo(work, serve_after=False)
    first = capsys.readouterr().out
    assert "demo model" in first and "(cached)" in first.split("[2/4]")[1].splitlines()[0]
    assert "encoding the test split" in first
    run_demo(work, serve_after=False)
    second = capsys.readouterr().out
    assert second.count("cached") == 3 and "24 items" in second
    write_checkpoint(work / "model" / "best.pt", seed0_dataset, seed=5)  # a new model: the index is rebuilt
    run_demo(work, serve_after=False)
    assert "encoding the test split" in capsys.readouterr().out


def test_bad_demo_flags_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="asen train options: .*--no-such-flag"):
        run_demo(tmp_path / "demo", serve_after=False, train_args="--no-such-flag 3")
    with pytest.raises(ValueError, match="asen synth options"):
        run_demo(tmp_path / "demo", serve_after=False, synth_args="--train many")
    assert not (tmp_path / "demo").exists()


def test_check_command_accepts_a_matching_pair_and_names_a_mismatch(
    tiny_checkpoint: Path,
    built_index: Path,
    demo_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from asen_search.service.cli.main import main

    assert main(["check", "--checkpoint", str(tiny_checkpoint), "--index", str(built_index)]) == 0
    assert "belong together" in capsys.readouterr().out
    assert main(["check", "--checkpoint", str(tiny_checkpoint), "--index", str(tmp_path / "none")]) == 2
    assert "no saved index" in capsys.readouterr().err
    other = write_checkpoint(tmp_path / "other.pt", demo_dataset, seed=9)
    assert main(["check", "--checkpoint", str(other), "--index", str(built_index)]) == 2
    assert "built by another model" in capsys.readouterr().err


def test_demo_recipes_choose_the_training_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --train-args: the quick recipe (or the full one on request); given flags always win."""
    import asen_search.service.jobs.demo as demo

    seen: list[str] = []

    def stop(data: Path, run_dir: Path, train_args: str = "") -> Path:
        seen.append(train_args)
        raise SystemExit(0)

    monkeypatch.setattr(demo, "ensure_dataset", lambda data, synth_args="": data)
    monkeypatch.setattr(demo, "ensure_model", stop)
    for kwargs in ({}, {"recipe": "full"}, {"recipe": "full", "train_args": "--stage1-epochs 1"}):
        with pytest.raises(SystemExit):
            run_demo(tmp_path / "demo", serve_after=False, **kwargs)  # type: ignore[arg-type]
    assert seen == [
        "--stage1-epochs 5 --stage2-epochs 2 --global-size 224 --mirror-average off",
        "",
        "--stage1-epochs 1",
    ]
    with pytest.raises(ValueError, match="unknown demo recipe 'fast'"):
        run_demo(tmp_path / "demo", serve_after=False, recipe="fast")

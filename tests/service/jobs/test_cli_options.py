"""`asen train` and `asen serve` options come from one source each: TrainConfig's fields and the
service Settings' fields. A new field is a new flag; the flags users know keep their names."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from asen_search.model.config import Preprocess
from asen_search.model.training.train_config import TrainConfig, lever
from asen_search.service.api.settings import Settings
from asen_search.service.cli.config_flags import add_config_options, config_from_args
from asen_search.service.cli.main import build_parser
from asen_search.service.cli.model_commands import parse_train_config
from asen_search.service.cli.service_commands import serve_settings

# the flags `asen train` has always had: renaming one breaks users' scripts
TRAIN_FLAGS = [
    "--variant",
    "--backbone",
    "--local-backbone",
    "--global-weights",
    "--local-weights",
    "--stride",
    "--global-size",
    "--local-size",
    "--embed-dim",
    "--positions",
    "--no-positions",
    "--trainable-stages",
    "--stage1-epochs",
    "--stage2-epochs",
    "--triplets",
    "--batch-size",
    "--lr",
    "--lr-global",
    "--lr-local",
    "--roi-threshold",
    "--beta",
    "--no-asa",
    "--no-aca",
    "--seed",
    "--time-budget",
    "--resume",
    "--device",
    "--runtime",
    "--prototype-samples",
    "--no-prototypes",
    "--cache-dir",
    "--instance-weight",
    "--instance-margin",
    "--instance-share",
    "--instance-views",
    "--max-memory",
]
SERVE_FLAGS = [
    "--checkpoint",
    "--index",
    "--images-dir",
    "--host",
    "--port",
    "--device",
    "--runtime",
    "--allow-open-writes",
]


def _options(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag for action in sub.choices[command]._actions for flag in action.option_strings}


def test_no_flag_gives_the_config_defaults() -> None:
    assert parse_train_config("", Path("d"), Path("o")) == TrainConfig(data=Path("d"), out=Path("o"))


def test_every_field_is_a_flag_and_the_known_flags_stay() -> None:
    flags = _options("train")
    assert set(TRAIN_FLAGS) <= flags
    for f in dataclasses.fields(TrainConfig):
        if f.metadata.get("cli", True) and "follows" not in f.metadata:
            dest = f.metadata.get("negate") or f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            assert dest in flags, f.name
    assert set(SERVE_FLAGS) <= _options("serve")
    assert {"--" + n.replace("_", "-") for n in Settings.model_fields} - _options("serve") == {"--api-key"}


def test_flags_reach_the_config() -> None:
    cfg = parse_train_config(
        "--no-asa --triplets 100 --max-memory 0 --embed-dim 64 --margin 0.3 --no-amp", Path("d"), Path("o")
    )
    assert (cfg.use_asa, cfg.triplets_per_epoch, cfg.max_memory_gb, cfg.embed_dim, cfg.margin, cfg.amp) == (
        False,
        100,
        None,
        64,
        0.3,
        False,
    )
    assert cfg.common_dim == 64  # follows the embedding size
    with pytest.raises(ValueError, match="expected a size in GB"):
        parse_train_config("--max-memory -1", Path("d"), Path("o"))


def test_mirror_average_reaches_the_checkpoints_preprocessing() -> None:
    """`--mirror-average` travels in the Preprocess that the checkpoint stores (and the encoder reads);
    a setting that is not one of the three is refused by the parser."""
    default = parse_train_config("", Path("d"), Path("o"))
    assert default.preprocess().mirror_average == default.mirror_average == TrainConfig.mirror_average
    for kind in ("off", "crops", "images"):
        cfg = parse_train_config(f"--mirror-average {kind}", Path("d"), Path("o"))
        assert cfg.preprocess().mirror_average == kind
    with pytest.raises(ValueError, match="invalid choice: 'both'"):
        parse_train_config("--mirror-average both", Path("d"), Path("o"))
    with pytest.raises(ValueError, match="mirror_average must be one of"):
        Preprocess(mirror_average="both")


def test_a_new_field_is_a_new_flag() -> None:
    @dataclasses.dataclass(frozen=True)
    class Config:
        out: Path = dataclasses.field(metadata={"cli": False})
        crop_jitter: float = lever(0.1, "how far the RoI box moves")
        rungs: int = lever(3, "ordinal rungs", choices=(2, 3, 4))
        ordinal: bool = lever(False, "ordinal-aware objective")

    parser = argparse.ArgumentParser()
    add_config_options(parser, Config)
    args = parser.parse_args(["--crop-jitter", "0.25", "--rungs", "4", "--ordinal"])
    assert config_from_args(Config, args, out=Path("o")) == Config(Path("o"), 0.25, 4, True)
    assert "how far the RoI box moves (default 0.1)" in parser.format_help()


def test_serve_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASEN_CHECKPOINT", "env.pt")
    monkeypatch.setenv("ASEN_INDEX", "env-index")
    monkeypatch.setenv("ASEN_MAX_TOP_K", "50")
    args = build_parser().parse_args(["serve", "--index", "flag-index", "--rate-limit", "2.5", "--mmap"])
    settings = serve_settings(args)
    assert (settings.checkpoint, settings.index, settings.max_top_k, settings.rate_limit, settings.mmap) == (
        Path("env.pt"),
        Path("flag-index"),
        50,
        2.5,
        True,
    )

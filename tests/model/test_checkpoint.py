from pathlib import Path

import pytest
import torch

from asen_search.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from asen_search.model.config import Preprocess
from asen_search.model.data.dataset import Attribute
from asen_search.model.nn.asen import ASENModel
from tests.helpers.models import tiny_config

ATTRS = (
    Attribute("collar", ("round", "v")),
    Attribute("sleeve", ("short", "long", "none")),
    Attribute("colour", ("red", "blue")),
)


def _model() -> ASENModel:
    torch.manual_seed(0)
    return ASENModel(tiny_config(), pretrained=False).eval()


def test_round_trip(tmp_path: Path) -> None:
    model = _model()
    pre = Preprocess(
        global_size=64,
        local_size=32,
        roi_threshold=0.2,
        roi_thresholds=(0.2, 0.0, 0.35),
        beta=0.5,
        mirror_average="crops",
    )
    save_checkpoint(tmp_path / "m.pt", model, pre, ATTRS, {"note": "x"})
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.preprocess == pre and ckpt.attributes == ATTRS and ckpt.extra == {"note": "x"}
    assert ckpt.model.cfg == model.cfg
    for key, value in model.state_dict().items():
        torch.testing.assert_close(ckpt.model.state_dict()[key], value)
    assert len(ckpt.fingerprint) == 64
    assert not (tmp_path / "m.pt.tmp").exists()


def test_corrupt_file_fails_clearly(tmp_path: Path) -> None:
    model = _model()
    save_checkpoint(tmp_path / "m.pt", model, Preprocess(), ATTRS)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_foreign_file_fails_clearly(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an asen-search checkpoint.*import-reference"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")

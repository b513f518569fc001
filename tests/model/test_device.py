"""`--device`: what the CPU can check of the CUDA path. Device names resolve or fail clearly (CUDA asked
for where torch sees none is an error, never a silent CPU run); the bfloat16 autocast used on CUDA runs
here on the CPU too (`amp=True`) and gives float32 unit vectors close to the float32 ones, a training
run under it converges and saves a float32 CPU checkpoint. The CUDA run itself is the device script
(bench/cuda_check.py) on a GPU machine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from asen_search.model.checkpoint import load_checkpoint
from asen_search.model.data.dataset import load_dataset
from asen_search.model.device import DeviceUnavailable, resolve_device, to_device
from asen_search.model.encoder import Encoder
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.preprocess import load_image
from asen_search.model.training.trainer import TrainConfig, train
from asen_search.service.cli.main import main
from tests.helpers.models import tiny_config


def test_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    for bad in ("tpu", "gpu0", "mps:7x"):
        with pytest.raises(ValueError, match="expected auto"):
            resolve_device(bad)
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        with pytest.raises(DeviceUnavailable, match="visible"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(DeviceUnavailable, match="no CUDA GPU.*--device cpu"):
            resolve_device("cuda")
    assert to_device(torch.ones(2), torch.device("cpu")).device.type == "cpu"


def test_commands_refuse_cuda_where_there_is_none(
    demo_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # cuda:99 is missing on any machine: "no CUDA GPU" without one, "only N ... visible" with one
    assert (
        main(["train", "--data", str(demo_dataset), "--out", str(tmp_path / "run"), "--device", "cuda:99"])
        == 2
    )
    err = capsys.readouterr().err
    assert ("no CUDA GPU" if not torch.cuda.is_available() else "visible") in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bfloat16_autocast_gives_float32_unit_vectors_close_to_float32(demo_dataset: Path) -> None:
    ds = load_dataset(demo_dataset)
    torch.manual_seed(0)
    model = ASENModel(tiny_config(n_attributes=len(ds.attributes)))
    from asen_search.model.config import Preprocess

    pre = Preprocess(64, 32, (0.5,) * 3, (0.5,) * 3)
    images = [load_image(p) for p in ds.split("test").paths[:6]]
    exact = Encoder(model, pre, ds.attributes, device="cpu", amp=False).encode(images)
    mixed = Encoder(model, pre, ds.attributes, device="cpu", amp=True).encode(images)
    assert mixed.dtype == np.float32 and exact.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mixed, axis=-1), 1.0, atol=1e-5)
    cosine = (mixed * exact).sum(-1)
    assert cosine.min() > 0.98, cosine.min()
    explained = Encoder(model, pre, ds.attributes, device="cpu", amp=True).explain(images[0], 1)
    assert explained.attention.dtype == np.float32 and explained.roi_box is not None


@pytest.mark.slow  # two real trainings (about 40 s): CI runs it with the slow tests
def test_training_under_autocast_converges_and_saves_a_float32_cpu_checkpoint(
    demo_dataset: Path, tmp_path: Path
) -> None:
    base = TrainConfig(
        data=demo_dataset,
        out=tmp_path / "run",
        global_size=64,
        local_size=48,
        embed_dim=16,
        common_dim=16,
        stage1_epochs=1,
        stage2_epochs=1,
        triplets_per_epoch=320,
        seed=3,
        device="cpu",
        amp=True,
        prototypes=False,
    )
    summary = train(base, progress=False)
    assert 0.0 < summary["best_valid_map"] <= 1.0
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert all(
        t.dtype == torch.float32 and t.device.type == "cpu"
        for t in ckpt.model.state_dict().values()
        if t.is_floating_point()
    )
    exact = train(replace(base, out=tmp_path / "exact", amp=False), progress=False)
    assert abs(summary["best_valid_map"] - exact["best_valid_map"]) < 0.1  # bf16 steps, not another recipe

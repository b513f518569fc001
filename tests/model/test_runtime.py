"""The CPU inference runtimes give torch's embeddings: cosine >= 0.999 for every vector and the same
top-10 for every query of the demo catalogue, with the real pretrained backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asen_search.model.config import BranchConfig, ModelConfig, Preprocess
from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.preprocess import load_image
from asen_search.model.runtime import RuntimeUnavailable, resolve_runtime


@pytest.fixture(scope="module")
def catalogue(demo_dataset: Path) -> tuple[ASENModel, Preprocess, list, list]:
    ds = load_dataset(demo_dataset)
    cfg = ModelConfig(
        variant="asen++",
        n_attributes=len(ds.attributes),
        attr_dim=32,
        global_branch=BranchConfig(input_size=128, common_dim=64, out_dim=64),
        local_branch=BranchConfig(input_size=64, common_dim=64, out_dim=64),
    )
    torch.manual_seed(0)
    model = ASENModel(cfg, pretrained=True).eval()  # the ImageNet backbone: real feature maps
    images = [load_image(path) for path in ds.split("test").paths[:120]]
    return model, Preprocess(global_size=128, local_size=64), list(ds.attributes), images


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_runtime_gives_torch_embeddings_and_rankings(catalogue: tuple, runtime: str) -> None:
    model, pre, attributes, images = catalogue
    reference = Encoder(model, pre, attributes, runtime="torch").encode(images, batch_size=32)
    encoder = Encoder(model, pre, attributes, runtime=runtime)
    assert encoder.runtime == runtime
    vectors = encoder.encode(images, batch_size=32)
    cosine = (vectors * reference).sum(-1)
    assert cosine.min() >= 0.999, f"{runtime}: lowest cosine to torch {cosine.min():.6f}"
    for a in range(len(attributes)):
        ours, theirs = vectors[:, a] @ vectors[:, a].T, reference[:, a] @ reference[:, a].T
        np.fill_diagonal(ours, -np.inf)
        np.fill_diagonal(theirs, -np.inf)
        top_ours, top_theirs = np.argsort(-ours, axis=1)[:, :10], np.argsort(-theirs, axis=1)[:, :10]
        # the same top-10 in the same order, except where torch itself scores two items within 1e-5
        # (float32 ties: torch run at another batch size swaps those too)
        rows, ranks = np.nonzero(top_ours != top_theirs)
        tie = np.abs(theirs[rows, top_ours[rows, ranks]] - theirs[rows, top_theirs[rows, ranks]]) < 1e-5
        assert tie.all(), (
            f"{runtime}: attribute {a} ranks differently from torch at {len(rows) - tie.sum()} places"
        )
        assert (top_ours == top_theirs).mean() > 0.95


def test_one_batch_of_requests_equals_each_request_alone(catalogue: tuple) -> None:
    model, pre, attributes, images = catalogue
    encoder = Encoder(model, pre, attributes, runtime="openvino")
    requests = [
        (images[0], [2]),
        (images[1], list(range(len(attributes)))),
        (images[2], [0, 5]),
        (images[3], []),
    ]
    batched = encoder.encode_requests(requests)
    assert [b.shape for b in batched] == [
        (1, encoder.dim),
        (len(attributes), encoder.dim),
        (2, encoder.dim),
        (0, encoder.dim),
    ]
    for (image, attrs), got in zip(requests, batched):
        alone = encoder.encode([image], attrs)[0] if attrs else np.zeros((0, encoder.dim))
        np.testing.assert_allclose(got, alone, atol=1e-5)


def test_unavailable_runtimes_are_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_runtime("auto", torch.device("cpu")) == "openvino"
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    with pytest.raises(RuntimeUnavailable, match="CPU only"):
        resolve_runtime("openvino", torch.device("cuda"))
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'tensorrt'"):
        resolve_runtime("tensorrt", torch.device("cpu"))
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    assert resolve_runtime("auto", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeUnavailable, match="pip install openvino"):
        resolve_runtime("openvino", torch.device("cpu"))

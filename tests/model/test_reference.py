"""import-reference: a state dict with the reference names and shapes converts to a model that
computes the same function as a hand-wired forward pass over the reference tensors."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from asen_search.model.checkpoint import CheckpointError
from asen_search.model.encoder import Encoder
from asen_search.model.reference_import import import_reference

N_ATTR = 2


def _resnet_part(name: str, prefix: str) -> dict[str, torch.Tensor]:
    net = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    keep = ("conv1", "bn1", "layer1", "layer2", "layer3")
    return {f"{prefix}.basenet.{k}": v for k, v in net.state_dict().items() if k.split(".")[0] in keep}


def _head(prefix: str, c: int, cp: int) -> dict[str, torch.Tensor]:
    shapes = {
        "attr_transform1": ((cp, 512), cp),
        "conv": ((cp, c, 1, 1), cp),
        "attr_transform2": ((512, 512), 512),
        "fc1": ((c // 2, c + 512), c // 2),
        "fc2": ((c, c // 2), c),
        "feature_fc": ((1024, c), 1024),
    }
    out = {}
    for name, (w, b) in shapes.items():
        fan_in = math.prod(w[1:])
        out[f"{prefix}.attnnet.{name}.weight"] = torch.randn(w) / math.sqrt(fan_in)
        out[f"{prefix}.attnnet.{name}.bias"] = torch.randn(b) * 0.1
    return out


@pytest.fixture(scope="module")
def reference_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    emb = torch.randn(N_ATTR, 512)
    state = {
        "choices.global.attrnet.attr_embedding.weight": emb,
        "choices.local.attrnet.attr_embedding.weight": emb,
    }
    state |= _resnet_part("resnet50", "choices.global") | _head("choices.global", 1024, 512)
    state |= _resnet_part("resnet34", "choices.local") | _head("choices.local", 256, 256)
    return state


def _hand_branch(state, prefix, resnet, x, attr, cp):
    net = getattr(torchvision.models, resnet)(weights=None)
    part = {
        k.removeprefix(f"{prefix}.basenet."): v
        for k, v in state.items()
        if k.startswith(f"{prefix}.basenet.")
    }
    net.load_state_dict(part, strict=False)
    net.eval()
    with torch.no_grad():
        f = net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))

        def w(n: str) -> tuple[torch.Tensor, torch.Tensor]:
            return state[f"{prefix}.attnnet.{n}.weight"], state[f"{prefix}.attnnet.{n}.bias"]

        e = state["choices.global.attrnet.attr_embedding.weight"][attr]
        p = torch.tanh(F.linear(e, *w("attr_transform1")))
        fp = torch.tanh(F.conv2d(f, *w("conv"))).flatten(2)[0]  # [c', hw]
        s = torch.softmax(p @ fp / math.sqrt(cp), dim=-1)  # [hw]
        pooled = f.flatten(2)[0] @ s  # [C]
        q = F.relu(F.linear(e, *w("attr_transform2")))
        alpha = torch.sigmoid(F.linear(F.relu(F.linear(torch.cat([pooled, q]), *w("fc1"))), *w("fc2")))
        return F.linear(pooled * alpha, *w("feature_fc")), s


def test_converted_model_matches_hand_wired_forward(tmp_path: Path, reference_state) -> None:
    from PIL import Image

    from asen_search.model.nn.preprocess import global_inputs, local_inputs
    from asen_search.model.nn.roi import attention_boxes

    assert len(reference_state) == 458  # as the released checkpoints (spec)
    torch.save({"state_dict": reference_state, "epoch": 50}, tmp_path / "ref.pth.tar")
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps(
            {
                "attributes": [
                    {"name": "collar", "values": ["a", "b"]},
                    {"name": "sleeve", "values": ["c", "d", "e"]},
                ]
            }
        )
    )
    import_reference(tmp_path / "ref.pth.tar", tmp_path / "ours.pt", meta)
    enc = Encoder.from_checkpoint(tmp_path / "ours.pt")
    assert enc.attribute_names == ["collar", "sleeve"] and enc.dim == 2048

    img = Image.fromarray(torch.randint(0, 255, (180, 240, 3), dtype=torch.uint8).numpy())
    ours = enc.encode([img], [1])[0, 0]
    pre = enc.preprocess
    x, views = global_inputs([img], pre)
    g, s = _hand_branch(reference_state, "choices.global", "resnet50", x, 1, 512)
    box = attention_boxes(s.view(1, 14, 14), 224, 0.1)
    crop = local_inputs([img], views, box, pre)
    loc, _ = _hand_branch(reference_state, "choices.local", "resnet34", crop, 1, 256)
    v = torch.cat([F.normalize(g, dim=0) * 0.6**0.5, F.normalize(loc, dim=0) * 0.4**0.5])
    torch.testing.assert_close(torch.from_numpy(ours), v, atol=2e-4, rtol=1e-3)


def test_not_a_reference_checkpoint(tmp_path: Path) -> None:
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a reference ASEN\\+\\+ checkpoint"):
        import_reference(tmp_path / "x.pt", tmp_path / "out.pt")


def test_wrong_shape_is_reported(tmp_path: Path, reference_state) -> None:
    bad = dict(reference_state)
    bad["choices.global.attnnet.fc1.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": bad}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="fc1.weight has shape"):
        import_reference(tmp_path / "bad.pt", tmp_path / "out.pt")

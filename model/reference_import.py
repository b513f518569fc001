"""Convert a released reference ASEN++ checkpoint (ResNet-50 global + ResNet-34 local, the layout in
asen-spec.md) into this project's checkpoint format."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from asen_search.model.checkpoint import CheckpointError, save_checkpoint
from asen_search.model.config import BranchConfig, ModelConfig, Preprocess
from asen_search.model.data.dataset import Attribute, DatasetError
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.backbones import backbone_spec

HEAD_NAMES = {
    "attr_transform1": "asa.attr_proj",
    "conv": "asa.conv",
    "attr_transform2": "aca.attr_proj",
    "fc1": "aca.fc1",
    "fc2": "aca.fc2",
    "feature_fc": "proj",
}
BACKBONE_NAMES = {
    "conv1": "stages.0.0",
    "bn1": "stages.0.1",
    "layer1": "stages.1",
    "layer2": "stages.2",
    "layer3": "stages.3",
}


def reference_config(n_attributes: int) -> ModelConfig:
    return ModelConfig(
        variant="asen++",
        n_attributes=n_attributes,
        attr_dim=512,
        global_branch=BranchConfig("resnet50", 16, 224, 512, 2, 1024),
        local_branch=BranchConfig("resnet34", 16, 112, 256, 2, 1024),
    )


def reference_preprocess() -> Preprocess:
    """The released models' preprocessing: ResNet-50's own normalisation (its spec), 224 / 112."""
    spec = backbone_spec("resnet50")
    return Preprocess(224, 112, spec.mean, spec.std, "center", 0.1, 0.6)


def convert_state_dict(ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename reference tensors (`choices.{global,local}.{attrnet,basenet,attnnet}.*`) to ours."""
    out: dict[str, torch.Tensor] = {}
    for key, value in ref.items():
        parts = key.split(".")
        if len(parts) < 4 or parts[0] != "choices" or parts[1] not in ("global", "local"):
            raise CheckpointError(f"unexpected tensor {key!r}: not a reference ASEN++ state dict")
        branch, net, name, rest = parts[1], parts[2], parts[3], parts[4:]
        if net == "attrnet":
            if branch == "global":
                out["attr_embedding.weight"] = value
            continue
        table = BACKBONE_NAMES if net == "basenet" else HEAD_NAMES if net == "attnnet" else None
        if table is None or name not in table:
            raise CheckpointError(f"unexpected tensor {key!r} in a reference ASEN++ state dict")
        prefix = f"{branch}_backbone" if net == "basenet" else f"{branch}_head"
        out[".".join([prefix, table[name], *rest])] = value
    return out


def _attributes(meta: Path | None, n: int) -> tuple[Attribute, ...]:
    if meta is None:
        return tuple(Attribute(f"attribute_{i}", ()) for i in range(n))
    try:
        data = json.loads(Path(meta).read_text())
        attrs = tuple(Attribute(a["name"], tuple(a["values"])) for a in data["attributes"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{meta}: cannot read attribute names: {exc}") from exc
    if len(attrs) != n:
        raise DatasetError(f"{meta} names {len(attrs)} attributes, the checkpoint has {n}")
    return attrs


def import_reference(src: Path, out: Path, meta: Path | None = None) -> ASENModel:
    """Read `src` (`{"state_dict": ...}` or a bare state dict), write our checkpoint at `out`."""
    try:
        raw = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{src} is not a readable PyTorch file: {exc}") from exc
    ref = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(ref, dict) or "choices.global.attrnet.attr_embedding.weight" not in ref:
        raise CheckpointError(
            f"{src} is not a reference ASEN++ checkpoint (no choices.global.attrnet.attr_embedding)"
        )
    ref = {k.removeprefix("module."): v for k, v in ref.items()}
    emb = ref["choices.global.attrnet.attr_embedding.weight"]
    local_emb = ref.get("choices.local.attrnet.attr_embedding.weight")
    if local_emb is not None and not torch.equal(local_emb, emb):
        raise CheckpointError(f"{src}: global and local attribute embeddings differ (they must be shared)")
    model = ASENModel(reference_config(emb.shape[0]), pretrained=False)
    state = model.state_dict()
    converted = convert_state_dict(ref)
    unknown = set(converted) - set(state)
    if unknown:
        raise CheckpointError(f"{src}: tensors with no place in the model: {sorted(unknown)[:5]}")
    for key, value in converted.items():
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"{src}: {key} has shape {tuple(value.shape)}, expected {tuple(state[key].shape)}"
            )
    missing = [
        k
        for k in state
        if k not in converted and not k.endswith(("num_batches_tracked", "feat_mean", "feat_std"))
    ]
    if missing:
        raise CheckpointError(f"{src}: missing reference tensors for {missing[:5]}")
    state.update(converted)
    model.load_state_dict(state)
    save_checkpoint(
        out,
        model.eval(),
        reference_preprocess(),
        _attributes(meta, emb.shape[0]),
        {"imported_from": str(src)},
    )
    return model

"""The checkpoint file: weights, model configuration, preprocessing and attribute names in one file."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from asen_search.fileio import atomic_write
from asen_search.model.config import ModelConfig, Preprocess, preprocess_from_dict
from asen_search.model.data.dataset import Attribute
from asen_search.model.nn.asen import ASENModel

FORMAT = "asen-search-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this project."""


@dataclass
class Checkpoint:
    model: ASENModel
    preprocess: Preprocess
    attributes: tuple[Attribute, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""


def save_checkpoint(
    path: str | Path,
    model: ASENModel,
    preprocess: Preprocess,
    attributes: tuple[Attribute, ...],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write atomically and durably (`asen_search/fileio.py` atomic_write)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "preprocess": asdict(preprocess),
        "attributes": [{"name": a.name, "values": list(a.values)} for a in attributes],
        "state_dict": {
            k: v.detach().cpu() for k, v in model.state_dict().items()
        },  # the same file from any device
        "extra": extra or {},
    }
    atomic_write(path, lambda fh: torch.save(payload, fh))


def update_extra(path: str | Path, **entries: Any) -> None:
    """Set entries of a checkpoint's `extra` in place (atomically), keeping everything else. The
    file's fingerprint changes: indexes built with the old file must be rebuilt."""
    payload = read_payload(path)
    payload["extra"] = {**payload.get("extra", {}), **entries}
    atomic_write(Path(path), lambda fh: torch.save(payload, fh))


def read_payload(path: str | Path) -> dict[str, Any]:
    """Load and validate the raw dictionary of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or not a PyTorch file): {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        keys = sorted(payload)[:6] if isinstance(payload, dict) else type(payload).__name__
        hint = (
            " (a reference ASEN++ checkpoint? convert it with `asen import-reference`)"
            if isinstance(payload, dict) and "state_dict" in payload
            else ""
        )
        raise CheckpointError(f"{path} is not an asen-search checkpoint (found {keys}){hint}")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}, this code reads {VERSION}"
        )
    return payload


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the model from the file alone (no pretrained weights or dataset needed)."""
    payload = read_payload(path)
    try:
        cfg = ModelConfig.from_dict(payload["config"])
        model = ASENModel(cfg, pretrained=False)
        model.load_state_dict(payload["state_dict"], strict=True)
        preprocess = preprocess_from_dict(payload["preprocess"])
        attributes = tuple(Attribute(a["name"], tuple(a["values"])) for a in payload["attributes"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: inconsistent checkpoint contents: {exc}") from exc
    model.eval()
    return Checkpoint(model, preprocess, attributes, payload.get("extra", {}), file_fingerprint(path))


def file_fingerprint(path: str | Path) -> str:
    """sha256 of the checkpoint file: identifies the model that built an index."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

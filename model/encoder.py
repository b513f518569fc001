"""Encoder API: PIL images -> L2-normalised per-attribute embeddings (numpy float32).

The global backbone runs once per image for all requested attributes; the attention heads and the
local branch run per (image, attribute), batched.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from asen_search.model.checkpoint import load_checkpoint
from asen_search.model.config import Preprocess
from asen_search.model.data.dataset import Attribute
from asen_search.model.device import mixed_precision, resolve_device, to_device
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.preprocess import global_inputs, local_inputs
from asen_search.model.nn.roi import SquareView, attention_boxes


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    """float32 unit vectors on the CPU (a half-precision norm is only good to about 1e-2)."""
    return torch.nn.functional.normalize(vectors.float().cpu(), dim=-1)


class UnknownAttribute(KeyError):
    """The model has no attribute of this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name, self.known = name, known

    def __str__(self) -> str:
        return f"unknown attribute {self.name!r}; known attributes: {', '.join(self.known)}"


@dataclass(frozen=True)
class Explanation:
    """Why an image looks the way it does under one attribute."""

    attention: np.ndarray                                 # [h, w] float32, min-max scaled to [0, 1]
    roi_box: tuple[float, float, float, float] | None     # (x0, y0, x1, y1) in original pixels; None without a local branch
    image_box: tuple[float, float, float, float]          # the part of the original image the global input shows


@dataclass(frozen=True)
class _Batch:
    vectors: torch.Tensor            # [B, K, D]
    attention: torch.Tensor          # [B, K, h, w]
    boxes: list[list[tuple[float, float, float, float]]] | None
    views: list[SquareView]


class Encoder:
    """Turns images into one unit vector per attribute with a trained model."""

    def __init__(self, model: ASENModel, preprocess: Preprocess, attributes: Sequence[Attribute],
                 fingerprint: str = "", device: str | torch.device = "cpu", amp: bool | None = None) -> None:
        self.device = resolve_device(device)
        self.amp = amp                     # bfloat16 autocast; default: on CUDA only (model/device.py)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.attributes = tuple(attributes)
        self.fingerprint = fingerprint
        if len(self.attributes) != model.cfg.n_attributes:
            raise ValueError(f"{len(self.attributes)} attribute names for a model of {model.cfg.n_attributes}")

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Encoder:
        ckpt = load_checkpoint(path)
        return cls(ckpt.model, ckpt.preprocess, ckpt.attributes, ckpt.fingerprint, device)

    @property
    def dim(self) -> int:
        return self.model.cfg.embedding_dim

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def attribute_id(self, name: str) -> int:
        for i, attr in enumerate(self.attributes):
            if attr.name == name:
                return i
        raise UnknownAttribute(name, self.attribute_names)

    def encode(self, images: Sequence[Image.Image], attributes: Sequence[int] | None = None,
               batch_size: int = 16) -> np.ndarray:
        """RGB images -> float32 `[n_images, n_attributes, dim]`, each vector of unit length."""
        attrs = list(range(len(self.attributes))) if attributes is None else list(attributes)
        out = np.zeros((len(images), len(attrs), self.dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            out[start:start + len(chunk)] = self._run(chunk, attrs, want_boxes=False).vectors.numpy()
        return out

    def encode_attribute(self, images: Sequence[Image.Image], attribute: int, batch_size: int = 16) -> np.ndarray:
        """One attribute: `[n_images, dim]`."""
        return self.encode(images, [attribute], batch_size)[:, 0]

    def explain(self, image: Image.Image, attribute: int) -> Explanation:
        """The attribute's global attention map and the RoI box the local branch zooms into."""
        batch = self._run([image], [attribute], want_boxes=True)
        att = batch.attention[0, 0].numpy().astype(np.float32)
        span = float(att.max() - att.min())
        att = (att - att.min()) / span if span > 0 else np.ones_like(att)
        box = batch.boxes[0][0] if batch.boxes else None
        return Explanation(att, box, batch.views[0].box())

    @torch.inference_mode()
    def _run(self, images: Sequence[Image.Image], attrs: list[int], want_boxes: bool) -> _Batch:
        pre, model, device = self.preprocess, self.model, self.device
        x, views = global_inputs(images, pre)
        attr_ids = torch.tensor(attrs, dtype=torch.long, device=device).expand(len(images), -1)      # [B, K]
        with mixed_precision(device, self.amp):
            g, att = model.global_embed(model.global_backbone.stem(to_device(x, device)), attr_ids)
        att = att.float().cpu()
        if model.local_backbone is None:
            return _Batch(_unit(model.fuse(g, None, pre.beta)), att, None, views)
        k = len(attrs)
        boxes = attention_boxes(att.flatten(0, 1), pre.global_size, pre.roi_threshold)   # [B*K, 4]
        flat_images = [img for img in images for _ in range(k)]
        flat_views = [v for v in views for _ in range(k)]
        crops = to_device(local_inputs(flat_images, flat_views, boxes, pre), device)
        with mixed_precision(device, self.amp):
            loc = model.local_embed(model.local_backbone.stem(crops), attr_ids.reshape(-1, 1))
            fused = model.fuse(g, loc.view(len(images), k, -1), pre.beta)
        fused = _unit(fused)
        orig = None
        if want_boxes:
            flat = [v.to_original(tuple(b.tolist()), pre.global_size) for v, b in zip(flat_views, boxes)]
            orig = [flat[i * k:(i + 1) * k] for i in range(len(images))]
        return _Batch(fused, att, orig, views)

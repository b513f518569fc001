"""Encoder API: PIL images -> L2-normalised per-attribute embeddings (numpy float32).

The global backbone runs once per image for all requested attributes; the attention heads and the
local branch run per (image, attribute) pair, all pairs of a batch in one pass (also pairs of different
requests: `encode_requests`, the service's dynamic batching).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from asen_search.model.checkpoint import CheckpointError, load_checkpoint
from asen_search.model.config import Preprocess
from asen_search.model.copy_calibration import CopyCalibration, load_copy_calibration
from asen_search.model.copy_calibration import sidecar_path as copy_sidecar
from asen_search.model.data.dataset import Attribute
from asen_search.model.device import mixed_precision, resolve_device, to_device
from asen_search.model.nn.asen import ASENModel, fusion_beta
from asen_search.model.nn.preprocess import global_inputs, local_inputs
from asen_search.model.nn.roi import SquareView, attention_boxes, roi_threshold
from asen_search.model.prototypes import Prototypes
from asen_search.model.runtime import backbone_runner, resolve_runtime
from asen_search.model.thresholds import Thresholds, load_thresholds


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

    attention: np.ndarray  # [h, w] float32, min-max scaled to [0, 1]
    roi_box: (
        tuple[float, float, float, float] | None
    )  # (x0, y0, x1, y1) in original pixels; None without a local branch
    image_box: tuple[float, float, float, float]  # the part of the original image the global input shows


@dataclass(frozen=True)
class _Batch:
    vectors: torch.Tensor  # [P, D], one per (image, attribute) pair
    attention: torch.Tensor  # [P, h, w]
    boxes: list[tuple[float, float, float, float]] | None  # [P], in original pixels
    views: list[SquareView]  # one per image


@dataclass(frozen=True)
class _State:
    """A batch between the global pass and the local one."""

    images: Sequence[Image.Image]
    pairs: Sequence[tuple[int, int]]
    views: list[SquareView]
    attr_ids: torch.Tensor  # [P, 1]
    g: torch.Tensor  # [P, D_g], global embeddings
    attention: torch.Tensor  # [P, h, w]
    boxes: torch.Tensor | None  # [P, 4] in global-input pixels; None without a local branch


class Encoder:
    """Turns images into one unit vector per attribute with a trained model.

    The backbones run on `runtime` (model/runtime.py: torch, OpenVINO or ONNX Runtime; "auto" picks
    the fastest installed one for the device); the heads always run in torch."""

    def __init__(
        self,
        model: ASENModel,
        preprocess: Preprocess,
        attributes: Sequence[Attribute],
        fingerprint: str = "",
        device: str | torch.device = "cpu",
        amp: bool | None = None,
        runtime: str = "torch",
    ) -> None:
        self.device = resolve_device(device)
        self.amp = amp  # bfloat16 autocast; default: on CUDA only (model/device.py)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.attributes = tuple(attributes)
        self.fingerprint = fingerprint
        if len(self.attributes) != model.cfg.n_attributes:
            raise ValueError(
                f"{len(self.attributes)} attribute names for a model of {model.cfg.n_attributes}"
            )
        self.prototypes: Prototypes | None = (
            None  # value prototypes (model/prototypes.py), from the checkpoint
        )
        self.thresholds: Thresholds | None = None  # score -> precision curves (model/thresholds.py)
        self.copy_calibration: CopyCalibration | None = (
            None  # copy scores' meaning (model/copy_calibration.py)
        )
        self.runtime = resolve_runtime(runtime, self.device)
        self._global = backbone_runner(model.global_backbone, preprocess.global_size, self.runtime)
        self._local = (
            None
            if model.local_backbone is None
            else backbone_runner(model.local_backbone, preprocess.local_size, self.runtime)
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", runtime: str = "auto", extras: bool = True
    ) -> Encoder:
        """The checkpoint's model; with `extras`, also its value prototypes and score thresholds."""
        ckpt = load_checkpoint(path)
        encoder = cls(ckpt.model, ckpt.preprocess, ckpt.attributes, ckpt.fingerprint, device, runtime=runtime)
        if not extras:
            return encoder
        try:
            encoder.prototypes = Prototypes.from_extra(ckpt.attributes, ckpt.extra.get("prototypes"))
            encoder.thresholds = load_thresholds(path, ckpt.fingerprint, ckpt.extra.get("thresholds"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: unreadable prototypes or thresholds ({exc}): recompute them with `asen prototypes`"
            ) from None
        try:
            encoder.copy_calibration = load_copy_calibration(path, ckpt.fingerprint)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{copy_sidecar(path)}: unreadable copy calibration ({exc}): recompute it with "
                "`asen calibrate-copies`"
            ) from None
        return encoder

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

    def encode(
        self, images: Sequence[Image.Image], attributes: Sequence[int] | None = None, batch_size: int = 16
    ) -> np.ndarray:
        """RGB images -> float32 `[n_images, n_attributes, dim]`, each vector of unit length."""
        attrs = list(range(len(self.attributes))) if attributes is None else list(attributes)
        out = np.zeros((len(images), len(attrs), self.dim), dtype=np.float32)
        if not attrs:
            return out
        starts = range(0, len(images), batch_size)
        parts = [images[s : s + batch_size] for s in starts]
        chunks = [
            self._with_mirrors(part, [(i, a) for i in range(len(part)) for a in attrs]) for part in parts
        ]
        for start, part, batch in zip(starts, parts, self._pipelined(chunks)):
            vectors = self._averaged(batch.vectors)
            out[start : start + len(part)] = vectors.view(len(part), len(attrs), -1).numpy()
        return out

    def encode_attribute(
        self, images: Sequence[Image.Image], attribute: int, batch_size: int = 16
    ) -> np.ndarray:
        """One attribute: `[n_images, dim]`."""
        return self.encode(images, [attribute], batch_size)[:, 0]

    def encode_requests(self, requests: Sequence[tuple[Image.Image, Sequence[int]]]) -> list[np.ndarray]:
        """Several requests, each an image and its attributes, in one forward pass (the service's
        dynamic batching): one `[len(attributes), dim]` array per request, in order."""
        images = [image for image, _ in requests]
        pairs = [(i, a) for i, (_, attrs) in enumerate(requests) for a in attrs]
        vectors = (
            self._averaged(self._run(*self._with_mirrors(images, pairs), want_boxes=False).vectors).numpy()
            if pairs
            else np.zeros((0, self.dim), np.float32)
        )
        out, at = [], 0
        for _, attrs in requests:
            out.append(vectors[at : at + len(attrs)])
            at += len(attrs)
        return out

    @torch.inference_mode()
    def whole_image(self, images: Sequence[Image.Image], batch_size: int = 16) -> np.ndarray:
        """The global backbone's pooled map, no attention and no attribute: `[n, C]` unit vectors.
        Whole-image similarity, what instance-level retrieval compares (the copy benchmark's baseline)."""
        out = []
        for start in range(0, len(images), batch_size):
            x, _ = global_inputs(images[start : start + batch_size], self.preprocess)
            with mixed_precision(self.device, self.amp):
                feats = self._global(to_device(x, self.device))
            out.append(_unit(feats.float().mean(dim=(2, 3))))
        return (
            torch.cat(out).numpy()
            if out
            else np.zeros((0, self.model.global_backbone.out_channels), np.float32)
        )

    def _with_mirrors(
        self, images: Sequence[Image.Image], pairs: Sequence[tuple[int, int]]
    ) -> tuple[Sequence[Image.Image], Sequence[tuple[int, int]]]:
        """With `mirror_average` "images", the images followed by their left-right mirrors and the pairs
        followed by the same pairs of the mirrors (one forward pass for both); else as given."""
        if self.preprocess.mirror_average != "images":
            return images, pairs
        n = len(images)
        return [*images, *(ImageOps.mirror(im) for im in images)], [*pairs, *((i + n, a) for i, a in pairs)]

    def _averaged(self, vectors: torch.Tensor) -> torch.Tensor:
        """The vectors of `_with_mirrors`' pairs -> one per original pair: with `mirror_average`
        "images", the unit mean of a pair's vector and its mirror's (an image and its mirror embed alike)."""
        if self.preprocess.mirror_average != "images":
            return vectors
        half = len(vectors) // 2
        return _unit(vectors[:half] + vectors[half:])

    def explain(self, image: Image.Image, attribute: int) -> Explanation:
        """The attribute's global attention map and the RoI box the local branch zooms into."""
        batch = self._run([image], [(0, attribute)], want_boxes=True)
        att = batch.attention[0].numpy().astype(np.float32)
        span = float(att.max() - att.min())
        att = (att - att.min()) / span if span > 0 else np.ones_like(att)
        box = batch.boxes[0] if batch.boxes else None
        return Explanation(att, box, batch.views[0].box())

    def _run(
        self, images: Sequence[Image.Image], pairs: Sequence[tuple[int, int]], want_boxes: bool
    ) -> _Batch:
        """Embeddings of (image index, attribute) pairs: the global backbone once per image, the
        heads and the local branch once per pair, each in one batch."""
        state = self._global_pass(images, pairs, global_inputs(images, self.preprocess))
        if state.boxes is None:
            return self._finish(state, None, want_boxes)
        return self._finish(state, self._crops(state), want_boxes)

    def _pipelined(
        self, chunks: Sequence[tuple[Sequence[Image.Image], Sequence[tuple[int, int]]]]
    ) -> Iterator[_Batch]:
        """`_run` over several batches, the image work (resizing, RoI crops) of one batch done in a
        helper thread while the backbones run on another: the inference runtimes leave enough of the
        CPU idle that this hides nearly all of it (docs/performance.md)."""
        if len(chunks) < 2:
            yield from (self._run(images, pairs, want_boxes=False) for images, pairs in chunks)
            return
        pre = self.preprocess
        with ThreadPoolExecutor(1, thread_name_prefix="asen-prep") as helper:
            inputs = helper.submit(global_inputs, chunks[0][0], pre)
            pending: tuple[_State, Future[torch.Tensor | None]] | None = None
            for c, (images, pairs) in enumerate(chunks):
                prepared = inputs.result()
                if c + 1 < len(chunks):
                    inputs = helper.submit(global_inputs, chunks[c + 1][0], pre)
                state = self._global_pass(images, pairs, prepared)
                if pending is not None:  # the previous batch's crops were cut meanwhile
                    yield self._finish(pending[0], pending[1].result(), False)
                pending = (state, helper.submit(self._crops, state))
            assert pending is not None
            yield self._finish(pending[0], pending[1].result(), False)

    @torch.inference_mode()
    def _global_pass(
        self,
        images: Sequence[Image.Image],
        pairs: Sequence[tuple[int, int]],
        prepared: tuple[torch.Tensor, list[SquareView]],
    ) -> _State:
        pre, model, device = self.preprocess, self.model, self.device
        x, views = prepared
        image_of = torch.tensor([i for i, _ in pairs], dtype=torch.long)
        attr_ids = torch.tensor([[a] for _, a in pairs], dtype=torch.long, device=device)  # [P, 1]
        attrs = list(dict.fromkeys(a for _, a in pairs))
        uniform = list(pairs) == [(i, a) for i in range(len(images)) for a in attrs]
        with mixed_precision(device, self.amp):
            feats = self._global(to_device(x, device))
            if uniform:  # every image wants the same attributes: the head's map work once per image
                g, att = model.global_head_embed(feats, attr_ids[: len(attrs), 0].expand(len(images), -1))
                g, att = g.flatten(0, 1)[:, None], att.flatten(0, 1)[:, None]
            else:
                g, att = model.global_head_embed(feats[image_of.to(feats.device)], attr_ids)
        att = att[:, 0].float().cpu()
        boxes = (
            None
            if self._local is None
            else attention_boxes(att, pre.global_size, roi_threshold(pre, attr_ids[:, 0]))
        )  # [P, 4]
        return _State(images, pairs, views, attr_ids, g[:, 0], att, boxes)

    def _crops(self, state: _State) -> torch.Tensor | None:
        """The RoI crops `[P, 3, s, s]` of a batch's pairs (None without a local branch)."""
        if state.boxes is None:
            return None
        images = [state.images[i] for i, _ in state.pairs]
        views = [state.views[i] for i, _ in state.pairs]
        return local_inputs(images, views, state.boxes, self.preprocess)

    @torch.inference_mode()
    def _finish(self, state: _State, crops: torch.Tensor | None, want_boxes: bool) -> _Batch:
        pre, model, device = self.preprocess, self.model, self.device
        if crops is None or self._local is None:
            return _Batch(_unit(model.fuse(state.g, None, pre.beta)), state.attention, None, state.views)
        beta = fusion_beta(pre, state.attr_ids[:, 0])
        looks = 2 if pre.mirror_average == "crops" else 1  # each RoI crop, and with "crops" its mirror
        batch = torch.cat([crops, crops.flip(-1)]) if looks == 2 else crops
        with mixed_precision(device, self.amp):
            loc = model.local_head_embed(
                self._local(to_device(batch, device)), state.attr_ids.repeat(looks, 1)
            )
            fused = _unit(
                torch.stack([model.fuse(state.g, part[:, 0], beta) for part in loc.split(len(crops))]).sum(0)
            )
        orig = None
        if want_boxes and state.boxes is not None:
            orig = [
                state.views[i].to_original(tuple(b.tolist()), pre.global_size)
                for (i, _), b in zip(state.pairs, state.boxes)
            ]
        return _Batch(fused, state.attention, orig, state.views)

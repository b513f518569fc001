"""Image decoding and the checkpoint's own preprocessing: PIL images -> normalised input tensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from asen_search.model.config import Preprocess
from asen_search.model.nn.roi import SquareView, crop_resize


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file as RGB with its EXIF orientation applied."""
    with Image.open(path) as img:
        return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF-transpose and convert to 8-bit RGB (alpha composited on white)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "I;16" or img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    return img.convert("RGB")


def normalise(images: Sequence[Image.Image], pre: Preprocess) -> torch.Tensor:
    """Same-size RGB images -> float tensor `[B, 3, S, S]` with the checkpoint's mean/std."""
    arr = np.stack([np.asarray(img, dtype=np.uint8) for img in images])
    std = torch.tensor(pre.std, dtype=torch.float64)
    scale = (1.0 / (255.0 * std)).float().view(1, 3, 1, 1)
    shift = (-torch.tensor(pre.mean, dtype=torch.float64) / std).float().view(1, 3, 1, 1)
    # (x / 255 - mean) / std as one multiply-add in place; NHWC memory is already channels_last
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().mul_(scale).add_(shift)
    return x.contiguous(memory_format=torch.channels_last)


def global_views(images: Sequence[Image.Image], pre: Preprocess) -> list[SquareView]:
    return [SquareView.of(img.width, img.height, pre.crop_rule) for img in images]


def global_inputs(images: Sequence[Image.Image], pre: Preprocess) -> tuple[torch.Tensor, list[SquareView]]:
    """Whole images -> `[B, 3, S, S]` (resize shorter side + centre crop, or letterbox) and their views."""
    views = global_views(images, pre)
    resized = [crop_resize(img, view.box(), pre.global_size) for img, view in zip(images, views)]
    return normalise(resized, pre), views


def local_inputs(
    images: Sequence[Image.Image], views: Sequence[SquareView], boxes: torch.Tensor, pre: Preprocess
) -> torch.Tensor:
    """RoI crops: `boxes` `[B, 4]` in global-input pixels, one per image -> `[B, 3, s, s]`."""
    crops = [
        crop_resize(img, view.to_original(tuple(box.tolist()), pre.global_size), pre.local_size)
        for img, view, box in zip(images, views, boxes)
    ]
    return normalise(crops, pre)

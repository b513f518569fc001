"""Decoded images and cached backbone maps for CPU training.

The frozen part of each backbone (its stem) is run once per image and kept in memory (float16), so
training only runs the attention heads (and any trainable backbone stages) on cached maps. Local
crops depend on the global attention; `local_maps` recomputes them for a list of (image, attribute).
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from asen_search.model.config import Preprocess
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.preprocess import global_inputs, global_views, load_image, local_inputs
from asen_search.model.nn.roi import SquareView, attention_boxes

KEEP_SIDE = 640  # decoded originals are kept with their shorter side at most this long


def _load_kept(path: Path) -> Image.Image:
    img = load_image(path)
    short = min(img.size)
    if short > KEEP_SIDE:
        scale = KEEP_SIDE / short
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    return img


def decode_images(paths: Sequence[Path], desc: str, workers: int = 2, progress: bool = True) -> list[Image.Image]:
    """Decode image files (threads: PIL releases the GIL), with a progress bar."""
    with ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(_load_kept, paths), total=len(paths), desc=desc, unit="img",
                         leave=False, dynamic_ncols=True, disable=not progress))


@dataclass
class ImageSet:
    """Decoded images with their global-input views and cached global stem maps `[N, C, h, w]`."""

    images: list[Image.Image]
    views: list[SquareView]
    global_maps: torch.Tensor


@torch.inference_mode()
def build_image_set(model: ASENModel, pre: Preprocess, paths: Sequence[Path], desc: str,
                    batch_size: int = 32, progress: bool = True) -> ImageSet:
    """Decode `paths` and run the global backbone's frozen stem on each image once."""
    images = decode_images(paths, f"decode {desc}", progress=progress)
    maps: list[torch.Tensor] = []
    model.eval()
    for start in tqdm(range(0, len(images), batch_size), desc=f"cache {desc}", unit="batch",
                      leave=False, dynamic_ncols=True, disable=not progress):
        x, _ = global_inputs(images[start:start + batch_size], pre)
        maps.append(model.global_backbone.stem(x).to(torch.float16))
    return ImageSet(images, global_views(images, pre), torch.cat(maps))


@torch.inference_mode()
def local_maps(model: ASENModel, pre: Preprocess, imageset: ImageSet, fids: torch.Tensor,
               attrs: torch.Tensor, desc: str, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """Local stem maps `[n, C, h', w']` of the RoI crops of (fid, attr) pairs, crops chosen by the
    model's CURRENT global attention."""
    assert model.local_backbone is not None
    out: list[torch.Tensor] = []
    model.eval()
    for start in tqdm(range(0, len(fids), batch_size), desc=f"crops {desc}", unit="batch",
                      leave=False, dynamic_ncols=True, disable=not progress):
        f = fids[start:start + batch_size]
        a = attrs[start:start + batch_size]
        _, att = model.global_embed(imageset.global_maps[f].float(), a[:, None])
        boxes = attention_boxes(att[:, 0], pre.global_size, pre.roi_threshold)
        idx = f.tolist()
        crops = local_inputs([imageset.images[i] for i in idx], [imageset.views[i] for i in idx], boxes, pre)
        out.append(model.local_backbone.stem(crops).to(torch.float16))
    return torch.cat(out)

"""Region of interest for the local branch: from a global attention map to a square crop of the
original image, and the geometry of the global preprocessing that the crop mapping undoes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from PIL import Image

from asen_search.model.config import Preprocess


@dataclass(frozen=True)
class SquareView:
    """The square of the original image that the global input shows: `(left, top)` and `side`, in
    original pixels. `center` crops the shorter side; `pad` letterboxes (the square may overhang)."""

    left: float
    top: float
    side: float

    @classmethod
    def of(cls, width: int, height: int, crop_rule: str) -> SquareView:
        side = float(min(width, height) if crop_rule == "center" else max(width, height))
        return cls((width - side) / 2.0, (height - side) / 2.0, side)

    def to_original(self, box: tuple[int, int, int, int], size: int) -> tuple[float, float, float, float]:
        """Map a box in the `size x size` input to original image coordinates."""
        scale = self.side / size
        x0, y0, x1, y1 = box
        return (self.left + x0 * scale, self.top + y0 * scale, self.left + x1 * scale, self.top + y1 * scale)

    def box(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.left + self.side, self.top + self.side)


def crop_resize(image: Image.Image, box: tuple[float, float, float, float], size: int) -> Image.Image:
    """Crop `box` (original pixels, may overhang: filled black) and resize to `size x size`."""
    x0, y0, x1, y1 = box
    if x0 >= 0 and y0 >= 0 and x1 <= image.width and y1 <= image.height:
        return image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    inner = image.crop((int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))))
    return inner.resize((size, size), Image.Resampling.BILINEAR)


def roi_threshold(pre: Preprocess, attrs: torch.Tensor) -> float | torch.Tensor:
    """The RoI threshold for attribute ids `attrs` `[B]`: the checkpoint's one threshold, or its
    per-attribute thresholds (`asen train --roi-thresholds`) looked up per id, `[B]` on the CPU."""
    if pre.roi_thresholds is None:
        return pre.roi_threshold
    return torch.tensor(pre.roi_thresholds, dtype=torch.float32)[attrs.cpu()]


def attention_boxes(
    att: torch.Tensor, size: int, threshold: float | torch.Tensor, chunk: int = 512
) -> torch.Tensor:
    """Square RoI boxes from attention maps `[B, h, w]` -> int64 `[B, 4]` as (x0, y0, x1, y1),
    half-open, in `size x size` input pixels; `threshold` one for all or one per map `[B]`.

    Upsample bilinearly to the input size, min-max normalise (a constant map gives the whole image),
    keep pixels above `threshold`, take their bounding rectangle, make it square around its centre
    and shift it inside the image.
    """
    return (
        torch.cat(
            [
                _boxes(
                    att[i : i + chunk].float(),
                    size,
                    threshold[i : i + chunk] if isinstance(threshold, torch.Tensor) else threshold,
                )
                for i in range(0, len(att), chunk)
            ]
        )
        if len(att)
        else torch.zeros((0, 4), dtype=torch.long)
    )


def _boxes(att: torch.Tensor, size: int, threshold: float | torch.Tensor) -> torch.Tensor:
    # Bilinear upsampling (align_corners=False) is `up = Wy @ att @ Wx^T`. Along each axis it is
    # piecewise linear between sample centres, so a maximum or minimum over that axis is attained at
    # the pixels with the most extreme weights of each segment: evaluating those few columns (or rows)
    # gives exactly the row and column maxima of the full `size x size` map at a fraction of the cost.
    w_full, w_ext = _interp_matrix(att.shape[1], size), _extreme_rows(att.shape[1], size)
    wx_full, wx_ext = _interp_matrix(att.shape[2], size), _extreme_rows(att.shape[2], size)
    row_max = (w_full @ att @ wx_ext.T).amax(dim=2)  # [B, S]
    col_max = (w_ext @ att @ wx_full.T).amax(dim=1)  # [B, S]
    low = (w_ext @ att @ wx_ext.T).amin(dim=(1, 2))
    high = row_max.amax(dim=1)
    span = high - low
    uniform = span <= 1e-8 * torch.maximum(high.abs(), low.abs()).clamp_min(1e-30)
    cut = (low + threshold * span)[:, None]
    rows = (row_max > cut) | uniform[:, None]
    cols = (col_max > cut) | uniform[:, None]
    boxes = torch.stack([_extent(cols), _extent(rows)], dim=1)  # [B, 2(x,y), 2]
    lo, hi = boxes[..., 0], boxes[..., 1]
    side = (hi - lo).amax(dim=1, keepdim=True)  # [B, 1]
    start = ((lo + hi - side) // 2).clamp(min=0)
    start = torch.minimum(start, size - side)
    return torch.cat([start, start + side], dim=1)


@lru_cache(maxsize=16)
def _extreme_rows(n: int, size: int) -> torch.Tensor:
    """Rows of `_interp_matrix(n, size)` with the smallest and largest weight in each segment."""
    mat = _interp_matrix(n, size)
    seg = (mat > 0).float().argmax(dim=1)  # first source sample with a nonzero weight
    weight = mat[torch.arange(size), seg]
    keep: set[int] = set()
    for s in seg.unique().tolist():
        idx = torch.nonzero(seg == s).flatten()
        keep.update({int(idx[weight[idx].argmin()]), int(idx[weight[idx].argmax()])})
    return mat[sorted(keep)]


@lru_cache(maxsize=16)
def _interp_matrix(n: int, size: int) -> torch.Tensor:
    """`[size, n]` weights of 1-D bilinear upsampling from n to size samples (align_corners=False),
    the same sampling as `torch.nn.functional.interpolate`."""
    src = ((torch.arange(size, dtype=torch.float64) + 0.5) * (n / size) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    w1 = src - i0
    mat = torch.zeros(size, n, dtype=torch.float64)
    mat[torch.arange(size), i0] += 1 - w1
    mat[torch.arange(size), i1] += w1
    return mat.float()


def _extent(occupied: torch.Tensor) -> torch.Tensor:
    """First index and last index + 1 of True along dim 1 of `[B, n]` (whole range if none)."""
    n = occupied.shape[1]
    idx = torch.arange(n, device=occupied.device)
    any_set = occupied.any(dim=1)
    first = torch.where(occupied, idx, n).amin(dim=1)
    last = torch.where(occupied, idx, -1).amax(dim=1) + 1
    first = torch.where(any_set, first, 0)
    last = torch.where(any_set, last, n)
    return torch.stack([first, last], dim=1)

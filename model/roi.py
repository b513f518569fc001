"""Region of interest for the local branch: from a global attention map to a square crop of the
original image, and the geometry of the global preprocessing that the crop mapping undoes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class SquareView:
    """The square of the original image that the global input shows: `(left, top)` and `side`, in
    original pixels. `center` crops the shorter side; `pad` letterboxes (the square may overhang)."""

    left: float
    top: float
    side: float

    @classmethod
    def of(cls, width: int, height: int, crop_rule: str) -> "SquareView":
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
        return image.resize((size, size), Image.BILINEAR, box=box)
    inner = image.crop(tuple(int(round(v)) for v in box))
    return inner.resize((size, size), Image.BILINEAR)


def attention_boxes(att: torch.Tensor, size: int, threshold: float) -> torch.Tensor:
    """Square RoI boxes from attention maps `[B, h, w]` -> int64 `[B, 4]` as (x0, y0, x1, y1),
    half-open, in `size x size` input pixels.

    Upsample bilinearly to the input size, min-max normalise (a constant map gives the whole image),
    keep pixels above `threshold`, take their bounding rectangle, make it square around its centre
    and shift it inside the image.
    """
    up = F.interpolate(att[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    span = up.amax(dim=(1, 2), keepdim=True) - low
    uniform = (span <= 1e-8 * up.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-30)).flatten()
    mask = (up - low) / span.clamp_min(1e-30) > threshold
    mask[uniform] = True
    boxes = torch.stack([_extent(mask.any(dim=1)), _extent(mask.any(dim=2))], dim=1)  # [B, 2(x,y), 2]
    lo, hi = boxes[..., 0], boxes[..., 1]
    side = (hi - lo).amax(dim=1, keepdim=True)                                        # [B, 1]
    start = ((lo + hi - side) // 2).clamp(min=0)
    start = torch.minimum(start, size - side)
    return torch.cat([start, start + side], dim=1)


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

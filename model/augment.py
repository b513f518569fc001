"""A picture of the same garment taken anew, from the picture alone (no labels, no renderer).

`rephotograph` imitates what changes between two photographs of one garment: the framing (a crop
of another size and place, or a wider one: the picture shrunk onto a larger, blurred canvas), a
rotation, the exposure (brightness and contrast, the same for every channel: colours keep their hue,
so colour-like attributes stay what they were), a few small occluders, and another JPEG compression.
Two such views of one image are the "same design" pairs that calibrate copy scores without copy
labels (model/copy_calibration.py) and that the instance-aware training term pulls together
(model/training/instance.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter


@dataclass(frozen=True)
class Rephotograph:
    """How far a new photograph may differ: the crop keeps this share of each side (placed at
    random), the rotation in degrees, exposure factors, occluders, JPEG quality."""

    keep: tuple[float, float] = (0.6, 1.0)
    zoom_out: float = 0.5  # chance of framing wider instead: the picture shrunk onto a larger canvas
    rotation: float = 12.0
    brightness: tuple[float, float] = (0.75, 1.25)
    contrast: tuple[float, float] = (0.75, 1.2)
    occluders: int = 3
    occluder_size: tuple[float, float] = (0.04, 0.12)  # of the shorter side
    jpeg_quality: tuple[int, int] = (60, 95)


DEFAULT_REPHOTOGRAPH = Rephotograph()


def _uniform(rng: np.random.Generator, span: tuple[float, float]) -> float:
    return float(rng.uniform(span[0], span[1]))


def rephotograph(
    image: Image.Image, rng: np.random.Generator, how: Rephotograph = DEFAULT_REPHOTOGRAPH
) -> Image.Image:
    """Another photograph of what `image` shows (RGB in, RGB out, about the same size)."""
    image = image.convert("RGB")
    w, h = image.size
    angle = _uniform(rng, (-how.rotation, how.rotation))
    if angle:
        # rotate about the centre, filling the corners with the picture's own edge colour
        edge = tuple(int(c) for c in np.asarray(image)[[0, -1]].reshape(-1, 3).mean(axis=0))
        image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=edge)
    if rng.random() < how.zoom_out:
        # a wider framing: the picture at 1/f of a canvas f times its size, the rest its edge colour blurred
        f = _uniform(rng, (1.0 / how.keep[0] ** 0.5, 1.0 / how.keep[0]))
        canvas = image.resize((round(w * f), round(h * f)), Image.Resampling.BILINEAR).filter(
            ImageFilter.GaussianBlur(radius=max(w, h) / 20)
        )
        canvas.paste(
            image, (int(rng.integers(0, canvas.width - w + 1)), int(rng.integers(0, canvas.height - h + 1)))
        )
        image = canvas.resize((w, h), Image.Resampling.BILINEAR)
        cw, ch = w, h
    else:
        cw, ch = round(w * _uniform(rng, how.keep)), round(h * _uniform(rng, how.keep))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = image.crop((x0, y0, x0 + cw, y0 + ch))
    image = ImageEnhance.Brightness(image).enhance(_uniform(rng, how.brightness))
    image = ImageEnhance.Contrast(image).enhance(_uniform(rng, how.contrast))
    draw, side = ImageDraw.Draw(image), min(cw, ch)
    for _ in range(int(rng.integers(0, how.occluders + 1))):
        size = side * _uniform(rng, how.occluder_size)
        cx, cy = _uniform(rng, (0, cw)), _uniform(rng, (0, ch))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(how.jpeg_quality[0], how.jpeg_quality[1] + 1)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")

"""Drawing helpers for the synthetic garment dataset (pure PIL + numpy, no torch).

A garment is laid out in *body units*: the shoulder width is 1, x points right, y points down and
the shoulder line is at y = 0. `render_scene` turns attribute value names into one RGB picture:
garment (shape, pattern, details) -> rotation -> cluttered background -> occluders -> lighting.
All randomness comes from the caller's generator, drawn in a fixed order, so a generator seeded
the same way gives the same picture. A `Parts` source may instead give each part of the garment
(body, sleeves, palette, pattern, trim, pockets, neckline, closure) a generator of its own: the copy
benchmark (`copies.py`) redraws one part, or re-photographs the garment, leaving every other draw.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
RGB = tuple[int, int, int]

HUES = {"red": 0.0, "orange": 0.075, "yellow": 0.155, "green": 0.35, "blue": 0.61, "purple": 0.79}
MIN_VALUE = {"yellow": 0.75, "orange": 0.65}
HEM_Y = {"cropped": 0.75, "hip": 1.1, "thigh": 1.45, "knee": 1.85}
SLEEVE_LEN = {"sleeveless": 0.0, "short": 0.3, "elbow": 0.62, "long": 1.0}
NECK_Y = -0.07  # y of the neck corners (the shoulders slope down from there)
TOP_Y = -0.26  # top of the bounding box used for scaling, high collar or not


@dataclass(frozen=True)
class Nuisance:
    """How a picture varies besides the garment's attributes. The defaults draw the demo dataset;
    other settings draw datasets the model has never seen (docs/results.md, "Unseen data")."""

    rotation: float = 12.0  # garment rotation, at most this many degrees
    garment_scale: tuple[float, float] = (0.35, 0.9)  # garment height / the picture's shorter side
    clutter: tuple[int, int] = (5, 16)  # small background shapes (high excluded)
    occluders: int = 2  # at most this many shapes over the garment
    contrast: tuple[float, float] = (0.7, 1.15)
    brightness: tuple[float, float] = (0.75, 1.2)
    shadow: float = 0.4  # the darkest side of the linear shadow
    jpeg_quality: tuple[int, int] = (60, 96)  # high excluded

    def __post_init__(self) -> None:
        checks = {
            "rotation": 0 <= self.rotation <= 45,
            "garment_scale": 0.1 <= self.garment_scale[0] <= self.garment_scale[1] <= 1,
            "clutter": 0 <= self.clutter[0] < self.clutter[1] <= 100,
            "occluders": 0 <= self.occluders <= 20,
            "contrast": 0.2 <= self.contrast[0] <= self.contrast[1] <= 3,
            "brightness": 0.2 <= self.brightness[0] <= self.brightness[1] <= 3,
            "shadow": 0 <= self.shadow < 1,
            "jpeg_quality": 5 <= self.jpeg_quality[0] < self.jpeg_quality[1] <= 101,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"nuisance settings out of range: {', '.join(f'{n}={getattr(self, n)}' for n in bad)}"
            )


DEFAULT_NUISANCE = Nuisance()

GARMENT_PARTS = ("body", "sleeves", "palette", "pattern", "trim", "pocket", "neckline", "closure")


class Parts:
    """Where each garment part's draws come from. The base class: one generator for every part and
    for the photograph, drawn in the fixed order of the demo dataset (its pictures stay byte-identical)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def rng(self, part: str) -> np.random.Generator:
        return self._rng


class SeededParts(Parts):
    """A generator of its own per garment part, `default_rng(seeds[part])`, made afresh each time a
    part is drawn: a part looks the same whatever else changes. The photograph (framing, background,
    occluders, lighting) draws from `photo`."""

    def __init__(self, seeds: dict[str, int], photo: np.random.Generator) -> None:
        super().__init__(photo)
        missing = [p for p in GARMENT_PARTS if p not in seeds]
        if missing:
            raise KeyError(f"SeededParts: no seed for {', '.join(missing)}")
        self.seeds = dict(seeds)

    def rng(self, part: str) -> np.random.Generator:
        return np.random.default_rng(self.seeds[part])


@dataclass(frozen=True)
class Shape:
    """A garment's outline in body units: body polygon, sleeve polygons, neck width, hem."""

    body: list[Point]
    sleeves: list[list[Point]]
    neck_w: float
    hem_y: float
    waist: float  # half width at the armpits (y = 0.4)
    hem: float  # half width at the hem

    def half_width(self, y: float) -> float:
        """Half width of the body (below the armpits) at height y."""
        return self.waist + (self.hem - self.waist) * (y - 0.4) / (self.hem_y - 0.4)


@dataclass(frozen=True)
class Palette:
    """Garment colours: base, pattern colour, detail tone and its opposite, neck inside, outline."""

    base: RGB
    second: RGB
    tone: RGB
    counter: RGB
    inner: RGB
    outline: RGB


class Pen:
    """ImageDraw wrapper that maps body units to layer pixels (origin ox, oy; s pixels per unit)."""

    def __init__(self, image: Image.Image, ox: float, oy: float, s: float) -> None:
        self.draw, self.ox, self.oy, self.s = ImageDraw.Draw(image), ox, oy, s

    def pts(self, points: list[Point]) -> list[Point]:
        return [(self.ox + x * self.s, self.oy + y * self.s) for x, y in points]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        (a, b), (c, d) = self.pts([(x0, y0), (x1, y1)])
        return [min(a, c), min(b, d), max(a, c), max(b, d)]

    def px(self, units: float) -> int:
        return max(1, round(units * self.s))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _rand_rgb(rng: np.random.Generator) -> RGB:
    return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]


def make_palette(colour: str, rng: np.random.Generator) -> Palette:
    """Colours for one garment: a jittered hue of `colour`, details in a contrasting tone."""
    hue = (HUES[colour] + _u(rng, -0.022, 0.022)) % 1.0
    value = _u(rng, MIN_VALUE.get(colour, 0.55), 0.97)
    r, g, b = colorsys.hsv_to_rgb(hue, _u(rng, 0.6, 0.95), value)
    base: RGB = (int(r * 255), int(g * 255), int(b * 255))
    light = 0.299 * base[0] + 0.587 * base[1] + 0.114 * base[2] > 135
    dark: RGB = (int(rng.integers(10, 50)),) * 3
    pale: RGB = (int(rng.integers(220, 252)),) * 3
    second = _mix(base, (0, 0, 0), 0.35) if light else _mix(base, (255, 255, 255), 0.5)
    tone, counter = (dark, pale) if light else (pale, dark)
    strength = _u(rng, 0.45, 0.7)  # details are visible but not stark: a shade of the garment colour
    tone, counter = _mix(base, tone, strength), _mix(base, counter, strength)
    return Palette(base, second, tone, counter, _mix(base, (0, 0, 0), 0.7), _mix(base, (0, 0, 0), 0.4))


def make_shape(sleeve: str, length: str, rng: np.random.Generator | Parts) -> Shape:
    """Body and sleeve polygons for a sleeve length and a garment length, with shape jitter."""
    parts = rng if isinstance(rng, Parts) else Parts(rng)
    rng = parts.rng("body")
    neck_w = _u(rng, 0.32, 0.4)
    hw = _u(rng, 0.46, 0.5)
    hem_y = HEM_Y[length] + _u(rng, -0.05, 0.05)
    hem = hw * _u(rng, 0.92, 1.12)
    shoulder = 0.42 if sleeve == "sleeveless" else 0.5
    right = [(neck_w / 2, NECK_Y), (shoulder, 0.0)]
    if sleeve == "sleeveless":
        right.append((0.39, 0.2))
    right += [(hw, 0.4), (hem, hem_y)]
    body = right + [(-x, y) for x, y in reversed(right)]
    sleeves: list[list[Point]] = []
    if sleeve != "sleeveless":
        rng = parts.rng("sleeves")
        angle = math.radians(_u(rng, 28, 50))
        length_u = SLEEVE_LEN[sleeve] * _u(rng, 0.92, 1.08)
        taper = _u(rng, 0.75, 0.95)
        for side in (1, -1):
            p1, p2 = (side * 0.5, 0.0), (side * hw, 0.4)
            d = (side * math.sin(angle), math.cos(angle))
            v = (p2[0] - p1[0], p2[1] - p1[1])
            along = v[0] * d[0] + v[1] * d[1]
            perp = (v[0] - along * d[0], v[1] - along * d[1])
            e1 = (p1[0] + length_u * d[0], p1[1] + length_u * d[1])
            e2 = (e1[0] + taper * perp[0], e1[1] + taper * perp[1])
            sleeves.append([p1, e1, e2, p2])
    return Shape(body, sleeves, neck_w, hem_y, hw, hem)


def _draw_pattern(layer: Image.Image, kind: str, colour: RGB, s: float, rng: np.random.Generator) -> None:
    """Fill the whole (rectangular) layer with a pattern; the garment mask clips it later."""
    draw, (w, h) = ImageDraw.Draw(layer), layer.size
    if kind == "solid":
        return
    period = s * _u(rng, 0.13, 0.2)
    width = period * _u(rng, 0.35, 0.5)
    phase = _u(rng, 0, period)
    if kind in ("h_stripes", "checks"):
        for y in np.arange(phase - period, h, period):
            draw.rectangle([0, y, w, y + width], fill=colour)
    if kind in ("v_stripes", "checks"):
        for x in np.arange(phase - period, w, period):
            draw.rectangle([x, 0, x + width, h], fill=colour)
    if kind == "dots":
        r = period * _u(rng, 0.2, 0.3)
        for row, y in enumerate(np.arange(phase - period, h + period, period)):
            for x in np.arange(phase - period + (row % 2) * period / 2, w + period, period):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def _draw_neckline(
    pen: Pen, kind: str, shape: Shape, pal: Palette, trim: int, rng: np.random.Generator
) -> float:
    """Draw the neck opening or collar; return the y (body units) where a closure may start."""
    half = shape.neck_w / 2
    if kind == "round":
        depth = _u(rng, 0.13, 0.18)
        pen.draw.chord(
            pen.box(-half, NECK_Y - depth, half, NECK_Y + depth),
            0,
            180,
            fill=pal.inner,
            outline=pal.tone,
            width=trim,
        )
    elif kind == "v_neck":
        depth = _u(rng, 0.28, 0.36)
        pen.draw.polygon(
            pen.pts([(-half, NECK_Y), (half, NECK_Y), (0, NECK_Y + depth)]),
            fill=pal.inner,
            outline=pal.tone,
            width=trim,
        )
    elif kind == "square":
        depth = _u(rng, 0.15, 0.2)
        pen.draw.rectangle(
            pen.box(-half, NECK_Y, half, NECK_Y + depth), fill=pal.inner, outline=pal.tone, width=trim
        )
    else:  # high_collar: a band standing above the shoulders
        depth, top = 0.02, NECK_Y - _u(rng, 0.13, 0.17)
        band = [
            (-half - 0.03, NECK_Y + 0.02),
            (-half * 0.9, top),
            (half * 0.9, top),
            (half + 0.03, NECK_Y + 0.02),
        ]
        pen.draw.polygon(pen.pts(band), fill=pal.base, outline=pal.tone, width=trim)
        pen.draw.ellipse(pen.box(-half * 0.8, top - 0.025, half * 0.8, top + 0.035), fill=pal.inner)
        pen.draw.line(
            pen.pts([(-half * 0.95, (top + NECK_Y) / 2), (half * 0.95, (top + NECK_Y) / 2)]),
            fill=pal.tone,
            width=max(1, trim // 2),
        )
    return NECK_Y + depth + 0.03


def _button(pen: Pen, x: float, y: float, r: float, pal: Palette) -> None:
    pen.draw.ellipse(
        pen.box(x - r, y - r, x + r, y + r), fill=pal.tone, outline=pal.counter, width=max(1, pen.px(r * 0.3))
    )


def _fit(count: int, span: float, spacing: float) -> int:
    """At most `count` items, fewer if they would sit closer than `spacing` over `span` (at least 2)."""
    return max(2, min(count, int(span / spacing) + 1))


def _draw_closure(
    pen: Pen, kind: str, top: float, shape: Shape, pal: Palette, rng: np.random.Generator
) -> None:
    """Buttons, a zip or two button rows down the centre front, from `top` to near the hem."""
    bottom = shape.hem_y - 0.06
    if kind == "buttons":
        r = _u(rng, 0.032, 0.045)
        first, last = top + r + 0.02, bottom - r
        for y in np.linspace(first, last, _fit(int(rng.integers(4, 7)), last - first, 3 * r)):
            _button(pen, 0.0, float(y), r, pal)
    elif kind == "double_breasted":
        r, gap = _u(rng, 0.03, 0.038), _u(rng, 0.09, 0.12)
        first = top + r + 0.04
        last = max(first, top + (bottom - top) * _u(rng, 0.55, 0.8))
        for y in np.linspace(first, last, _fit(int(rng.integers(3, 5)), last - first, 3 * r)):
            _button(pen, -gap, float(y), r, pal)
            _button(pen, gap, float(y), r, pal)
    elif kind == "zip":
        half = _u(rng, 0.016, 0.022)
        pen.draw.rectangle(pen.box(-half, top, half, bottom), fill=pal.tone)
        step = _u(rng, 0.035, 0.045)
        for y in np.arange(top + step / 2, bottom, step):
            pen.draw.line(pen.pts([(-half * 0.7, y), (half * 0.7, y)]), fill=pal.counter, width=pen.px(0.012))
        pen.draw.rectangle(
            pen.box(-0.03, top, 0.03, top + 0.11), fill=pal.tone, outline=pal.counter, width=pen.px(0.012)
        )


def _draw_pockets(
    pen: Pen, kind: str, shape: Shape, pal: Palette, trim: int, rng: np.random.Generator
) -> None:
    """Patch pockets outlined in the detail tone, with a flap line."""
    fill = _mix(pal.base, pal.tone, 0.15)
    boxes: list[tuple[float, float, float, float]] = []
    if kind == "chest_pocket":
        side, x0, y0 = (1 if rng.random() < 0.5 else -1), _u(rng, 0.18, 0.22), _u(rng, 0.1, 0.15)
        w, h = _u(rng, 0.18, 0.22), _u(rng, 0.18, 0.22)
        boxes.append((side * x0, y0, side * (x0 + w), y0 + h))
    elif kind == "hip_pockets":
        x0, w, h = _u(rng, 0.21, 0.25), _u(rng, 0.17, 0.21), _u(rng, 0.18, 0.22)
        y1 = shape.hem_y - _u(rng, 0.1, 0.14)
        x1 = min(x0 + w, shape.half_width(y1) - 0.04)
        boxes += [(x0, y1 - h, x1, y1), (-x0, y1 - h, -x1, y1)]
    elif kind == "kangaroo":
        top, bottom = shape.hem_y - _u(rng, 0.34, 0.4), shape.hem_y - _u(rng, 0.07, 0.1)
        wt, wb = _u(rng, 0.22, 0.28), _u(rng, 0.33, 0.38)
        poly = [(-wt, top), (wt, top), (wb, bottom), (-wb, bottom)]
        pen.draw.polygon(pen.pts(poly), fill=fill, outline=pal.tone, width=trim)
        for sx in (1, -1):  # slanted hand openings
            pen.draw.line(
                pen.pts([(sx * wt, top), (sx * (wb - 0.02), bottom - 0.1)]), fill=pal.tone, width=trim
            )
    for x0, y0, x1, y1 in boxes:
        pen.draw.rectangle(pen.box(x0, y0, x1, y1), fill=fill, outline=pal.tone, width=trim)
        pen.draw.line(
            pen.pts([(x0, y0 + 0.055), (x1, y0 + 0.055)]), fill=pal.tone, width=max(1, trim // 2 + 1)
        )


def extent(shape: Shape) -> tuple[float, float, float]:
    """(min x, width, height) of the garment's bounding box in body units, collar room included."""
    xs = [x for poly in [shape.body, *shape.sleeves] for x, _ in poly]
    return min(xs), max(xs) - min(xs), shape.hem_y - TOP_Y


def render_garment(
    values: dict[str, str], shape: Shape, s: float, rng: np.random.Generator | Parts
) -> Image.Image:
    """The garment alone as an RGBA layer (transparent outside), `s` pixels per body unit."""
    parts = rng if isinstance(rng, Parts) else Parts(rng)
    pal = make_palette(values["colour"], parts.rng("palette"))
    x_min, width_u, height_u = extent(shape)
    margin = 4
    ox, oy = margin - x_min * s, margin - TOP_Y * s
    size = (math.ceil(width_u * s) + 2 * margin, math.ceil(height_u * s) + 2 * margin)
    layer = Image.new("RGB", size, pal.base)
    _draw_pattern(layer, values["pattern"], pal.second, s, parts.rng("pattern"))
    mask = Image.new("L", size, 0)
    mask_pen = Pen(mask, ox, oy, s)
    for poly in [shape.body, *shape.sleeves]:
        mask_pen.draw.polygon(mask_pen.pts(poly), fill=255)
    layer.putalpha(mask)
    pen = Pen(layer, ox, oy, s)
    for poly in [*shape.sleeves, shape.body]:
        pen.draw.polygon(pen.pts(poly), outline=pal.outline, width=pen.px(0.014))
    trim = pen.px(_u(parts.rng("trim"), 0.014, 0.02))
    _draw_pockets(pen, values["pocket"], shape, pal, trim, parts.rng("pocket"))
    top = _draw_neckline(pen, values["neckline"], shape, pal, trim, parts.rng("neckline"))
    _draw_closure(pen, values["closure"], top, shape, pal, parts.rng("closure"))
    return layer


def _random_shape(
    draw: ImageDraw.ImageDraw,
    w: int,
    h: int,
    size: float,
    colour: RGB,
    rng: np.random.Generator,
    x0: float = 0,
    y0: float = 0,
) -> None:
    """One clutter/occluder shape of about `size` pixels centred in the w x h box at (x0, y0)."""
    cx, cy = x0 + _u(rng, 0, w), y0 + _u(rng, 0, h)
    a, b = size * _u(rng, 0.4, 1.0) / 2, size * _u(rng, 0.4, 1.0) / 2
    kind = int(rng.integers(0, 4))
    if kind == 0:
        draw.ellipse([cx - a, cy - b, cx + a, cy + b], fill=colour)
    elif kind == 1:
        draw.rectangle([cx - a, cy - b, cx + a, cy + b], fill=colour)
    elif kind == 2:
        angles = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(3, 7))))
        radii = rng.uniform(0.5, 1.0, len(angles))
        draw.polygon(
            [(cx + a * r * math.cos(t), cy + b * r * math.sin(t)) for t, r in zip(angles, radii)], fill=colour
        )
    else:
        t = _u(rng, 0, math.pi)
        dx, dy = 2 * a * math.cos(t), 2 * a * math.sin(t)
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=colour, width=int(rng.integers(1, 7)))


def make_background(
    w: int, h: int, rng: np.random.Generator, clutter: tuple[int, int] = (5, 16)
) -> Image.Image:
    """A random colour with large areas, random shapes and lines, and sometimes a stripe texture."""
    bg = Image.new("RGB", (w, h), _rand_rgb(rng))
    draw = ImageDraw.Draw(bg)
    for _ in range(int(rng.integers(1, 4))):  # large areas of other colours
        _random_shape(draw, w, h, max(w, h) * _u(rng, 0.5, 1.2), _rand_rgb(rng), rng)
    if rng.random() < 0.25:
        colour, period = _rand_rgb(rng), _u(rng, 6, 20)
        t = _u(rng, 0, math.pi)
        dx, dy, reach = math.cos(t), math.sin(t), w + h
        for k in np.arange(-reach, reach, period):
            x0, y0 = w / 2 + k * -dy, h / 2 + k * dx
            draw.line(
                [(x0 - reach * dx, y0 - reach * dy), (x0 + reach * dx, y0 + reach * dy)], fill=colour, width=2
            )
    for _ in range(int(rng.integers(*clutter))):
        _random_shape(draw, w, h, min(w, h) * _u(rng, 0.05, 0.4), _rand_rgb(rng), rng)
    return bg


def apply_lighting(
    image: Image.Image, rng: np.random.Generator, nuisance: Nuisance = DEFAULT_NUISANCE
) -> Image.Image:
    """Global contrast, brightness and slight colour cast (a lookup table), then a linear shadow."""
    contrast, brightness = _u(rng, *nuisance.contrast), _u(rng, *nuisance.brightness)
    gain = rng.uniform(0.95, 1.05, 3) * brightness
    shade, t = _u(rng, 0.0, nuisance.shadow), _u(rng, 0, 2 * math.pi)
    ramp = (np.arange(256) - 128.0) * contrast + 128.0
    lut = np.clip(ramp[None, :] * gain[:, None], 0, 255)
    lit = image.point(np.round(lut).astype(np.uint8).ravel().tolist())
    dark = image.point(np.round(lut * (1 - shade)).astype(np.uint8).ravel().tolist())
    a, b = math.cos(t), math.sin(t)
    norm = 255.0 / (abs(a) + abs(b))
    w, h = image.size
    xs = np.floor((a * np.linspace(-0.5, 0.5, w) + abs(a) / 2) * norm).astype(np.uint8)
    ys = np.floor((b * np.linspace(-0.5, 0.5, h) + abs(b) / 2) * norm).astype(np.uint8)
    return Image.composite(lit, dark, Image.fromarray(np.add.outer(ys, xs), "L"))


def render_scene(
    values: dict[str, str],
    rng: np.random.Generator,
    scale: float = 1.0,
    nuisance: Nuisance = DEFAULT_NUISANCE,
    record: dict[str, float] | None = None,
    parts: Parts | None = None,
) -> Image.Image:
    """One full picture: image size, garment size/position/rotation, clutter, occluders, lighting.
    `scale` multiplies the picture's size (shorter side 200-360 px at 1; the same draws at any scale).
    `parts`: where the garment's own draws come from (default: `rng`, as the demo dataset draws)."""
    parts = Parts(rng) if parts is None else parts
    short, aspect = round(int(rng.integers(200, 361)) * scale), _u(rng, 0.7, 1.4)
    w, h = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
    shape = make_shape(values["sleeve_length"], values["garment_length"], parts)
    _, width_u, height_u = extent(shape)
    angle = _u(rng, -nuisance.rotation, nuisance.rotation)
    c, sn = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    side = min(w, h)  # keep the garment inside the central square (what a centre crop sees)
    s = _u(rng, *nuisance.garment_scale) * side / height_u
    s = min(s, 0.95 * side / (width_u * c + height_u * sn), 0.95 * side / (width_u * sn + height_u * c))
    garment = render_garment(values, shape, s, parts).rotate(
        angle, resample=Image.Resampling.NEAREST, expand=True
    )
    scene = make_background(w, h, rng, nuisance.clutter)
    gx = (w - side) // 2 + int(rng.integers(0, max(1, side - garment.width + 1)))
    gy = (h - side) // 2 + int(rng.integers(0, max(1, side - garment.height + 1)))
    scene.paste(garment, (gx, gy), garment)
    draw = ImageDraw.Draw(scene)
    occluders = int(rng.integers(0, nuisance.occluders + 1))
    if (
        record is not None
    ):  # the draws, for analyses of what makes a picture hard (bench/attribute_diagnosis.py)
        record.update(
            garment_height=s * height_u / side,
            garment_width=s * width_u / side,
            rotation=angle,
            occluders=occluders,
            aspect=height_u / width_u,
        )
    for _ in range(occluders):  # occluders: small shapes over the garment's box
        _random_shape(
            draw, garment.width, garment.height, s * _u(rng, 0.12, 0.28), _rand_rgb(rng), rng, gx, gy
        )
    return apply_lighting(scene, rng, nuisance)

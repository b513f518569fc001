"""Within-class sensitivity from class labels alone: the instance-aware term of training.

The attribute triplet loss makes every image of a value alike under its attribute; design protection
needs more: *this* design's collar closer than any other collar of that type. Users have attribute
labels, not copy labels, so the term is built from what they have: a new photograph of a training
image (`model/augment.py`: another framing, rotation, exposure, occluders, compression; never a
colour change, so colour-like attributes keep their value) must be closer to the image than another
image of the same value is, by `instance_margin`, under that attribute:

    L_inst = max(0, m_i - cos(e_a(x), e_a(x')) + cos(e_a(x), e_a(y))),   x' a view of x, y != x, a_y = a_x

added to the class loss with weight `instance_weight` (docs/protection.md, "Training"). The views
are drawn once per image (seeded by its content, so runs and seeds share them), written as JPEG into
the map cache's folder, and their stem maps cached like any image's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from asen_search.model.augment import DEFAULT_REPHOTOGRAPH, Rephotograph, rephotograph
from asen_search.model.data.dataset import Tagged

VIEWS_FORMAT = 1  # bump when what a view is changes (augment.py's defaults): another folder of views


def view_paths(paths: Sequence[Path], views: int, folder: Path, progress: bool = True) -> list[list[Path]]:
    """`views` new photographs of every image of `paths`, written once into `folder` (named by the
    image's content and the view number; reused by later runs): `[views][len(paths)]` paths."""

    def draw(image: Image.Image, digest: str, v: int) -> Image.Image:
        return rephotograph(image, np.random.default_rng([int(digest[:15], 16), v]))

    return derived_paths(
        paths,
        views,
        Path(folder) / f"views-v{VIEWS_FORMAT}-{_settings_key()}",
        draw,
        "new photographs of the train images",
        progress,
    )


def mirror_paths(paths: Sequence[Path], folder: Path, progress: bool = True) -> list[Path]:
    """The left-right mirror image of every image of `paths`, written once into `folder` (named by
    the image's content; reused by later runs): the training images of `--mirror`."""
    return derived_paths(
        paths,
        1,
        Path(folder) / "mirrors-v1",
        lambda image, _d, _v: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "mirror images of the train images",
        progress,
    )[0]


# `--reframe`: a new photograph that never crops (always framed wider, model/augment.py): the whole garment
# stays in view, so its proportions (lengths) and colours keep their labels
REFRAME = replace(DEFAULT_REPHOTOGRAPH, zoom_out=1.0)


def reframed_paths(paths: Sequence[Path], folder: Path, progress: bool = True) -> list[Path]:
    """A new photograph of every image of `paths` framed wider, never cropped (`REFRAME`), written
    once into `folder` (named by the image's content; reused by later runs): the images of `--reframe`."""

    def draw(image: Image.Image, digest: str, _v: int) -> Image.Image:
        return rephotograph(image, np.random.default_rng([int(digest[:15], 16), 7]), REFRAME)

    return derived_paths(
        paths,
        1,
        Path(folder) / f"reframed-v1-{_settings_key(REFRAME)}",
        draw,
        "reframed train images",
        progress,
    )[0]


def derived_paths(
    paths: Sequence[Path],
    count: int,
    folder: Path,
    draw: Callable[[Image.Image, str, int], Image.Image],
    desc: str,
    progress: bool = True,
) -> list[list[Path]]:
    """`count` images drawn from every image of `paths` by `draw(image, content digest, number)`,
    written once as JPEG into `folder` (named by the content and the number): `[count][len(paths)]`."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[list[Path]] = [[] for _ in range(count)]
    for path in tqdm(paths, desc=desc, unit="img", disable=not progress, leave=False, dynamic_ncols=True):
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        image: Image.Image | None = None
        for v in range(count):
            target = folder / f"{digest[:32]}-{v}.jpg"
            if not target.is_file():
                if image is None:
                    image = Image.open(path).convert("RGB")
                tmp = target.with_name(target.name + ".tmp")
                draw(image, digest, v).save(tmp, "JPEG", quality=95)
                tmp.replace(target)
            out[v].append(target)
    return out


def _settings_key(how: Rephotograph = DEFAULT_REPHOTOGRAPH) -> str:
    return hashlib.sha256(repr(how).encode()).hexdigest()[:10]


class InstanceSampler:
    """Draws (attr, anchor, view of the anchor, another image of the anchor's value) rows: anchors
    are label rows (fid, attr, value) drawn uniformly; views live at `n_images * (1 + v) + fid`."""

    def __init__(
        self, labels: Tagged, n_images: int, views: int, seed: int | Sequence[int] | None = None
    ) -> None:
        if views < 1:
            raise ValueError(f"views must be at least 1, got {views}")
        self.n_images, self.views = n_images, views
        pairs = np.unique(np.stack([labels.fids, labels.attrs, labels.values], axis=1), axis=0).reshape(-1, 3)
        groups: dict[tuple[int, int], list[int]] = {}
        for fid, attr, value in pairs.tolist():
            groups.setdefault((attr, value), []).append(fid)
        # anchors whose value has another image (else no negative of the same value exists)
        self._rows = np.array([r for r in pairs.tolist() if len(groups[(r[1], r[2])]) >= 2], dtype=np.int64)
        self._groups = {k: np.array(v, dtype=np.int64) for k, v in groups.items()}
        self._rng = np.random.default_rng(seed)

    def sample(self, n: int) -> np.ndarray:
        """`n` rows as int64 `[n, 4]`: (attr, anchor fid, view row, negative fid); empty when no
        value has two images."""
        if not len(self._rows) or n <= 0:
            return np.zeros((0, 4), dtype=np.int64)
        rng = self._rng
        picked = self._rows[rng.integers(len(self._rows), size=n)]
        out = np.empty((n, 4), dtype=np.int64)
        out[:, 0], out[:, 1] = picked[:, 1], picked[:, 0]
        out[:, 2] = self.n_images * (1 + rng.integers(self.views, size=n)) + picked[:, 0]
        for i, (fid, attr, value) in enumerate(picked.tolist()):
            group = self._groups[(attr, value)]
            j = int(rng.integers(len(group) - 1))
            others = group[group != fid]
            out[i, 3] = others[min(j, len(others) - 1)]
        return out

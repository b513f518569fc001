"""Geometric verification of copies: does an item show the design's own garment, photographed anew?

The copy score (asen_search/copy_score.py) compares attribute embeddings, which learn classes: a
look-alike (another garment with the same values) scores as high as a copy, and no class model can
tell them apart (docs/protection.md, "The ceiling of attribute classes"). What a copy keeps and a
look-alike does not is the garment itself: its outline, its print, where its details sit. Instance
retrieval has a standard test for that, independent of any training: local features of both
pictures matched one to one, and a geometric transform that maps many of them onto their matches.

Here: RootSIFT features (OpenCV's SIFT, Hellinger-normalised) of the image upscaled `UPSCALE` times
(garments in a catalogue picture are often small); matches that pass Lowe's ratio test, one per
feature of the item; a similarity transform (rotation, scale, shift: what a new photograph does)
fitted by RANSAC; its inliers counted as distinct points on both sides, so a degenerate fit that
sends many points onto one counts little, and a fit whose scale is outside 1/4..4 counts nothing.

`verify_ranking` re-ranks the `TOP_K` best of a copy-score ranking (the service's `POST /copies` with
`verify`, `asen scan --copies --verify`), `verified_scores` a design's scores over a whole split (the
copy benchmark): each of those items gains `WEIGHT` times its verification (`min(max(inliers - FLOOR,
0), CAP) / CAP`, 0 to 1); the rest keep their score and come after them.
Every constant was chosen on the copy benchmark's valid split (docs/protection.md, "Geometric
verification"); the test split only measured it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

UPSCALE = 2.0  # images are enlarged this much before the features are found
RATIO = 0.9  # Lowe's ratio test: a match is kept when its distance is below RATIO x the second best's
RANSAC_PIXELS = 3.0  # RANSAC's reprojection tolerance, in upscaled pixels
SCALES = (0.25, 4.0)  # a transform scaling the garment outside this range is no photograph of it
FLOOR = 2  # inliers any unrelated pair reaches by chance
CAP = 16  # inliers beyond FLOOR that count as fully verified
WEIGHT = 0.2  # what a fully verified item adds to its copy score
TOP_K = 50  # the items per design that are verified (the copy score's best)


@dataclass(frozen=True)
class LocalFeatures:
    """One image's local features: `points` `[n, 2]` (upscaled pixels), `descriptors` `[n, 128]`."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


_PER_THREAD = threading.local()  # one detector per thread: OpenCV does not promise that one may be shared


def _detector() -> Any:
    if not hasattr(_PER_THREAD, "sift"):
        _PER_THREAD.sift = cv2.SIFT.create()
    return _PER_THREAD.sift


def local_features(image: Image.Image, detector: Any = None) -> LocalFeatures:
    """RootSIFT features of an RGB image (enlarged `UPSCALE` times, in grey); `detector` another SIFT
    setting (bench/copy_verify_sweep.py), else this thread's default one."""
    grey = np.asarray(image.convert("L"))
    if UPSCALE != 1:
        grey = cv2.resize(grey, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_CUBIC)
    keypoints, descriptors = (detector or _detector()).detectAndCompute(grey, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    if descriptors is None or not len(points):
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    d = descriptors.astype(np.float32)
    root = np.sqrt(d / np.maximum(d.sum(axis=1, keepdims=True), 1e-7))  # RootSIFT (Hellinger kernel)
    return LocalFeatures(points, root.astype(np.float32))


def inliers(
    design: LocalFeatures, item: LocalFeatures, ratio: float = RATIO, pixels: float = RANSAC_PIXELS
) -> int:
    """How many of the design's features a similarity transform maps onto their matches in the item
    (distinct points on both sides); 0 where no plausible transform is found."""
    if len(design) < 2 or len(item) < 2:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    best: dict[int, cv2.DMatch] = {}  # one match per feature of the item: the closest
    for pair in matcher.knnMatch(design.descriptors, item.descriptors, k=2):
        if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance:
            m = pair[0]
            if m.trainIdx not in best or m.distance < best[m.trainIdx].distance:
                best[m.trainIdx] = m
    if len(best) < 3:
        return 0
    matches = list(best.values())
    src = design.points[[m.queryIdx for m in matches]]
    dst = item.points[[m.trainIdx for m in matches]]
    transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=pixels)
    if transform is None or mask is None:
        return 0
    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    if not SCALES[0] < scale < SCALES[1]:
        return 0
    kept = mask.ravel().astype(bool)
    distinct = lambda p: len(np.unique(np.round(p[kept]), axis=0))  # noqa: E731
    return min(distinct(src), distinct(dst))


def verification(count: int | np.ndarray) -> float | np.ndarray:
    """Inliers -> 0..1: nothing up to FLOOR, fully verified at FLOOR + CAP."""
    return np.minimum(np.maximum(np.asarray(count, dtype=np.float64) - FLOOR, 0), CAP) / CAP


@dataclass(frozen=True)
class Checked:
    """An item of a copy-score ranking after verification: its `position` in that ranking, its score
    (the copy score plus `WEIGHT` x its verification) and its inliers (None: not verified)."""

    position: int
    score: float
    copy_score: float
    inliers: int | None


def verify_ranking(
    copy_scores: Sequence[float],
    design: LocalFeatures,
    features_of: Callable[[int], LocalFeatures | None],
    pool: int = TOP_K,
) -> list[Checked]:
    """A copy-score ranking (best first) with its first `pool` items re-ranked by verification against
    the design; `features_of(position)` is None for an item without a readable picture (it keeps its
    copy score). The items past the pool follow unverified, as they were: none scores above a pool
    item, whose score is at least its copy score, itself at least theirs."""
    checked = []
    for position, score in enumerate(copy_scores[:pool]):
        features = features_of(position)
        count = None if features is None else inliers(design, features)
        bonus = 0.0 if count is None else WEIGHT * float(verification(count))
        checked.append(Checked(position, float(score) + bonus, float(score), count))
    checked.sort(key=lambda c: (-c.score, c.position))
    rest = [Checked(p, float(s), float(s), None) for p, s in enumerate(copy_scores) if p >= pool]
    return checked + rest


def verified_scores(
    scores: np.ndarray,
    design: LocalFeatures,
    features_of: Callable[[int], LocalFeatures],
    exclude: Sequence[int] = (),
    top_k: int = TOP_K,
) -> tuple[np.ndarray, dict[int, int]]:
    """A design's copy scores over every row with its `top_k` best rows (those in `exclude` aside)
    verified (`verify_ranking` over them): each gains `WEIGHT x verification(inliers)`. Returns the new
    scores and the inliers of every verified row."""
    out = np.asarray(scores, dtype=np.float64).copy()
    ranked = out.copy()
    ranked[list(exclude)] = -np.inf
    order = np.argsort(-ranked, kind="stable")[: min(top_k, int(np.isfinite(ranked).sum()))]
    counts = {}
    for checked in verify_ranking(
        out[order].tolist(), design, lambda p: features_of(int(order[p])), pool=len(order)
    ):
        row = int(order[checked.position])
        out[row] = checked.score
        counts[row] = int(checked.inliers or 0)
    return out, counts

"""Triplet sampling for the attribute-specific triplet loss (asen-spec.md, "Losses"); numpy only.

Per triplet: an attribute uniformly over the usable attributes (or by given weights:
`attribute_weights`); a positive value ``vp`` uniformly over that attribute's values with at least
two distinct images and a negative value ``vn != vp`` uniformly over its other values with at least
one image (together: uniform over all valid ordered pairs, because every ``vp`` has the same number
of possible ``vn``; or by given weights per pair: `pair_weights`); anchor and positive are two
distinct images with ``vp``, the negative any image with ``vn``. Duplicate label rows count once; an
image labelled with two values of one attribute (not in the reference data) could be drawn as both
the anchor and the negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asen_search.model.data.dataset import Tagged


@dataclass(frozen=True)
class _AttributeTable:
    """One attribute's images grouped by value: ``fids[starts[v]:starts[v] + counts[v]]`` have value v."""

    fids: np.ndarray  # int64 [n_images_of_attr], sorted by value
    starts: np.ndarray  # int64 [n_values]
    counts: np.ndarray  # int64 [n_values]
    positive_values: np.ndarray  # int64: values with >= 2 images
    negative_values: np.ndarray  # int64: values with >= 1 image

    @property
    def usable(self) -> bool:
        return len(self.positive_values) >= 1 and len(self.negative_values) >= 2


class TripletSampler:
    """Draws (attr, anchor_fid, positive_fid, negative_fid) rows from flattened train labels."""

    def __init__(
        self, labels: Tagged, n_values: Sequence[int], seed: int | Sequence[int] | None = None
    ) -> None:
        self.n_values = [int(k) for k in n_values]
        _validate(labels, self.n_values)
        self._tables = [_table(labels, a, k) for a, k in enumerate(self.n_values)]
        self.usable_attributes: list[int] = [a for a, t in enumerate(self._tables) if t.usable]
        if not self.usable_attributes:
            raise ValueError(
                "no attribute can make a triplet: each needs one value with >= 2 distinct "
                "images and another value with >= 1 image"
            )
        self._rng = np.random.default_rng(seed)

    def sample(
        self,
        n: int,
        attribute_weights: Sequence[float] | None = None,
        pair_weights: Sequence[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """``n`` triplets as int64 ``[n, 4]``: (attr, anchor_fid, positive_fid, negative_fid).
        ``attribute_weights`` (one per attribute, >= 0): how often each attribute is drawn, relative
        to the others (default: uniform over the usable ones; unusable ones are never drawn).
        ``pair_weights`` (per attribute None or a ``[values, values]`` array >= 0): how often each
        (positive value, negative value) pair of that attribute is drawn, relative to its other valid
        pairs (default: uniform over the valid pairs; a pair without a positive or a negative image,
        or with the same value twice, is never drawn)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        usable = np.asarray(self.usable_attributes, dtype=np.int64)
        out = np.empty((n, 4), dtype=np.int64)
        if attribute_weights is None:
            out[:, 0] = usable[self._rng.integers(len(usable), size=n)]
        else:
            out[:, 0] = usable[
                self._rng.choice(len(usable), size=n, p=self._probabilities(attribute_weights))
            ]
        for attr in self.usable_attributes:
            rows = np.flatnonzero(out[:, 0] == attr)
            if len(rows):
                weights = None if pair_weights is None else pair_weights[attr]
                out[rows, 1:] = self._sample_attribute(self._tables[attr], len(rows), weights)
        return out

    def _probabilities(self, weights: Sequence[float]) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(self.n_values),) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"attribute weights: one finite value >= 0 per attribute, got {list(weights)}")
        w = w[self.usable_attributes]
        if w.sum() <= 0:
            raise ValueError("attribute weights: every usable attribute has weight 0")
        return w / w.sum()

    def _sample_attribute(self, t: _AttributeTable, k: int, pair_weights: np.ndarray | None) -> np.ndarray:
        """``k`` (anchor, positive, negative) fid rows for one attribute, int64 ``[k, 3]``."""
        rng = self._rng
        if pair_weights is None:
            vp = t.positive_values[rng.integers(len(t.positive_values), size=k)]
            # vn: uniform over negative_values without vp (skip vp's slot by shifting past it).
            vp_slot = np.searchsorted(t.negative_values, vp)
            slot = rng.integers(len(t.negative_values) - 1, size=k)
            vn = t.negative_values[slot + (slot >= vp_slot)]
        else:
            vp, vn = self._draw_pairs(t, k, pair_weights)
        anchor = rng.integers(t.counts[vp])
        positive = rng.integers(t.counts[vp] - 1)
        positive += positive >= anchor  # distinct from the anchor's slot
        negative = rng.integers(t.counts[vn])
        return np.stack(
            [t.fids[t.starts[vp] + anchor], t.fids[t.starts[vp] + positive], t.fids[t.starts[vn] + negative]],
            axis=1,
        )

    def _draw_pairs(self, t: _AttributeTable, k: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(t.counts)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n, n) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(
                f"pair weights: a finite [{n}, {n}] array >= 0 per attribute, got shape {w.shape}"
            )
        valid = np.zeros((n, n), dtype=bool)
        valid[np.ix_(t.positive_values, t.negative_values)] = True
        np.fill_diagonal(valid, False)
        w = np.where(valid, w, 0.0)
        p = (w if w.sum() > 0 else valid.astype(np.float64)).ravel()
        cells = self._rng.choice(n * n, size=k, p=p / p.sum())
        return cells // n, cells % n


def _validate(labels: Tagged, n_values: list[int]) -> None:
    if any(k < 1 for k in n_values):
        raise ValueError(f"every attribute needs >= 1 value, got n_values={n_values}")
    if len(labels) and (labels.attrs.min() < 0 or labels.attrs.max() >= len(n_values)):
        raise ValueError(f"attribute ids must lie in [0, {len(n_values)})")
    limits = np.asarray(n_values, dtype=np.int64)[labels.attrs]
    if len(labels) and ((labels.values < 0) | (labels.values >= limits)).any():
        raise ValueError("value ids out of range of n_values")


def _table(labels: Tagged, attr: int, n_values: int) -> _AttributeTable:
    mask = labels.attrs == attr
    # Distinct (value, fid) pairs, sorted by value then fid: duplicate rows count once.
    pairs = np.unique(np.stack([labels.values[mask], labels.fids[mask]], axis=1), axis=0)
    pairs = pairs.reshape(-1, 2)
    counts = np.bincount(pairs[:, 0], minlength=n_values).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return _AttributeTable(
        fids=pairs[:, 1].astype(np.int64),
        starts=starts,
        counts=counts,
        positive_values=np.flatnonzero(counts >= 2).astype(np.int64),
        negative_values=np.flatnonzero(counts >= 1).astype(np.int64),
    )

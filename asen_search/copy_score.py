"""The copy score: how much of a design an item copies, from its per-attribute scores.

A copy score is the mean of an item's best `A - m` attribute scores (`A` attributes, up to `m` of
them modified; docs/protection.md). The copy search (index/copies.py) ranks items by it, and the
calibration and the evaluation of copy detection (model/copy_calibration.py, model/copy_eval.py)
score the benchmark's copies with it. numpy only, below the layers (no import from `model`, `index`
or `service`), so that `model` and `index` share one definition without importing each other
(tests/test_layers.py).
"""

from __future__ import annotations

import numpy as np

DEFAULT_MODIFIED = 2  # attributes a copy may modify (m)


def kept_count(n_attributes: int, modified: int) -> int:
    """How many attribute scores the copy score averages: `A - m`, at least one."""
    if modified < 0:
        raise ValueError(f"modified must be at least 0, got {modified}")
    return max(1, n_attributes - modified)


def copy_scores(scores: np.ndarray, kept: int) -> np.ndarray:
    """`[..., A]` attribute scores -> `[...]`: the mean of each row's best `kept`."""
    if not 1 <= kept <= scores.shape[-1]:
        raise ValueError(f"kept must be in 1..{scores.shape[-1]}, got {kept}")
    best = -np.partition(-scores, kept - 1, axis=-1)[..., :kept]
    return best.mean(axis=-1)

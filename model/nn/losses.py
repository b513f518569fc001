"""Losses of ASEN++: the triplet ranking loss on cosine similarity and the global/local alignment."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F


def triplet_violations(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float | torch.Tensor = 0.2
) -> torch.Tensor:
    """`max(0, m - cos(a, p) + cos(a, n))` per triplet `[B]` of `[B, D]` embeddings."""
    pos = F.cosine_similarity(anchor, positive, dim=-1)
    neg = F.cosine_similarity(anchor, negative, dim=-1)
    return F.relu(margin - pos + neg)


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.2
) -> torch.Tensor:
    """`mean max(0, m - cos(a, p) + cos(a, n))` over `[B, D]` embeddings."""
    return triplet_violations(anchor, positive, negative, margin).mean()


def weighted_triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margins: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """`mean w_i max(0, m_i - cos(a, p) + cos(a, n))`: a margin and a weight per triplet `[B]` (class
    and instance-aware triplets in one batch: model/training/instance.py)."""
    return (weights * triplet_violations(anchor, positive, negative, margins)).mean()


def alignment_loss(global_parts: list[torch.Tensor], local_parts: list[torch.Tensor]) -> torch.Tensor:
    """`sum over x in {anchor, pos, neg} of mean(1 - cos(g_x, l_x))`."""
    # sum() starts from the int 0; with at least one pair (always, in use) the result is a tensor
    return cast(
        torch.Tensor,
        sum((1.0 - F.cosine_similarity(g, loc, dim=-1)).mean() for g, loc in zip(global_parts, local_parts)),
    )


def joint_loss(
    g: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    loc: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    margin: float | torch.Tensor = 0.2,
    local_weight: float = 0.1,
    align_weight: float = 0.1,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stage 2: `L_tri(global) + 0.1 L_tri(local) + 0.1 L_align` on (anchor, positive, negative) triples;
    with `weights`, `margin` is one per triple and the triplet terms are weighted per triple."""
    if weights is None:
        assert isinstance(margin, float | int)
        tri = triplet_loss(*g, margin=float(margin)) + local_weight * triplet_loss(*loc, margin=float(margin))
    else:
        assert isinstance(margin, torch.Tensor)
        tri = weighted_triplet_loss(*g, margin, weights) + local_weight * weighted_triplet_loss(
            *loc, margin, weights
        )
    return tri + align_weight * alignment_loss(list(g), list(loc))

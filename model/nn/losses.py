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


LOCAL_WEIGHT = 0.1  # the local branch's share of each stage-2 term (asen-spec.md, "Losses")


def joint_loss(
    g: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    loc: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    margin: float | torch.Tensor = 0.2,
    local_weight: float = LOCAL_WEIGHT,
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


NEGATIVE_MINING = ("none", "semi-hard", "hard")


def in_batch_negatives(
    embeddings: torch.Tensor,
    attrs: torch.Tensor,
    values: torch.Tensor,
    n_anchors: int,
    mode: str,
) -> torch.Tensor:
    """For each of a batch's `n_anchors` triplets, the row of `embeddings` `[3B, D]` (anchors, then
    positives, then negatives, as the loss stacks them) to use as its negative: among the batch's rows
    embedded under the same attribute (`attrs` `[3B]`) whose value there (`values` `[B, 3B]`: the value
    of row j under anchor i's attribute, -1 where unknown) is known and differs from the anchor's,
    `hard` takes the one most similar to the anchor, `semi-hard` the most similar one that is still less
    similar than the positive (FaceNet's semi-hard negative; the sampled one where none is), always
    considering the triplet's own sampled negative. Returns indices `[B]`; `none` returns the sampled
    negatives."""
    own = torch.arange(n_anchors, device=embeddings.device) + 2 * n_anchors
    if mode == "none":
        return own
    with torch.no_grad():
        unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
        sim = unit[:n_anchors] @ unit.T  # [B, 3B]
        index = torch.arange(n_anchors, device=embeddings.device)
        anchor_value = values[index, index]
        ok = (attrs[None, :] == attrs[:n_anchors, None]) & (values >= 0) & (values != anchor_value[:, None])
        ok[index, own] = True  # the sampled negative is always a candidate
        hard = torch.where(ok, sim, torch.full_like(sim, -2.0)).argmax(dim=1)
        if mode == "hard":
            return hard
        if mode != "semi-hard":
            raise ValueError(f"negative mining must be one of {NEGATIVE_MINING}, got {mode!r}")
        pos = sim[index, index + n_anchors][:, None]
        semi = ok & (sim < pos)
        pick = torch.where(semi, sim, torch.full_like(sim, -2.0)).argmax(dim=1)
        return torch.where(semi.any(dim=1), pick, own)


def proxy_loss(
    embeddings: torch.Tensor,
    attrs: torch.Tensor,
    values: torch.Tensor,
    proxies: torch.Tensor,
    n_values: torch.Tensor,
    scale: float,
    soft: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalised-softmax classification of embeddings `[N, D]` among their attribute's value proxies
    (`proxies` `[A, V, D]`, `n_values` `[A]` of them in use): `-log p(value)` with `p` the softmax of
    `scale * cos(embedding, proxy)` over the attribute's values, averaged over the rows whose value
    (`values` `[N]`, -1: unknown) is known. `soft` `[A]`, where positive, gives the attribute's rows a
    target spread over neighbouring values, `exp(-soft * |v - value|)` normalised (ordered values: a
    length one step off is less wrong than two)."""
    keep = values >= 0
    if not bool(keep.any()):
        return embeddings.sum() * 0.0
    attrs, values = attrs[keep], values[keep]
    unit = F.normalize(embeddings[keep].float(), dim=-1)
    centres = F.normalize(proxies[attrs].float(), dim=-1)  # [n, V, D]
    steps = torch.arange(proxies.shape[1], device=values.device)
    used = steps[None, :] < n_values[attrs][:, None]  # [n, V]
    logits = scale * torch.einsum("nd,nvd->nv", unit, centres)
    log_p = torch.log_softmax(logits.masked_fill(~used, -1e4), dim=-1)
    distance = (steps[None, :] - values[:, None]).abs().float()
    decay = torch.zeros(len(values), device=values.device) if soft is None else soft[attrs].float()
    target = torch.where(distance == 0, 1.0, torch.exp(-decay[:, None] * distance) * (decay[:, None] > 0))
    target = target * used
    target = target / target.sum(dim=1, keepdim=True)
    return -(target * log_p).sum(dim=1).mean()

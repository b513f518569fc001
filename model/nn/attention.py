"""Attribute-aware spatial (ASA) and channel (ACA) attention, and the branch head built from them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SpatialAttention(nn.Module):
    """ASA: `s = softmax_ij(<tanh(W_p e), tanh(conv1x1 F)_ij> / sqrt(c'))`, `I_s = sum_ij s_ij F_ij`.

    With `glimpses` G > 1, each attribute gets G attention maps (G projections W_p), and the G pooled
    vectors are concatenated (`[B, K, G C]`): one map can rest on the shoulders and another on the hem,
    so that with position channels the head sees both places, not their blend. The attention returned
    (RoI boxes, explanations) is the mean of the G maps."""

    def __init__(
        self, in_channels: int, attr_dim: int, common_dim: int, enabled: bool = True, glimpses: int = 1
    ) -> None:
        super().__init__()
        self.enabled = enabled
        self.common_dim = common_dim
        self.glimpses = glimpses
        self.attr_proj = nn.Linear(attr_dim, common_dim * glimpses)  # W_p, one per glimpse
        self.conv = nn.Conv2d(in_channels, common_dim, 1)  # F -> F'

    def weights(self, feats: torch.Tensor, attr: torch.Tensor) -> torch.Tensor:
        """feats `[B, C, h, w]`, attr `[B, K, attr_dim]` -> every glimpse's attention `[B, K G, hw]`."""
        b, _, h, w = feats.shape
        k, g = attr.shape[1], self.glimpses
        if not self.enabled:
            return feats.new_full((b, k * g, h * w), 1.0 / (h * w))
        p = torch.tanh(self.attr_proj(attr)).reshape(b, k * g, self.common_dim)  # [B, K G, c']
        fp = torch.tanh(self.conv(feats)).flatten(2)  # [B, c', hw]
        return torch.softmax(torch.bmm(p, fp) / math.sqrt(self.common_dim), dim=-1)

    def forward(self, feats: torch.Tensor, attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats `[B, C, h, w]`, attr `[B, K, attr_dim]` -> pooled `[B, K, G C]`, attention `[B, K, h, w]`."""
        pooled, att = self.pool(feats, attr)
        b, _, h, w = feats.shape
        return pooled, att.view(b, attr.shape[1], self.glimpses, h, w).mean(dim=2)

    def pool(self, feats: torch.Tensor, attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> pooled `[B, K, G C]` and every glimpse's attention `[B, K G, hw]`."""
        b, c = feats.shape[:2]
        att = self.weights(feats, attr)
        pooled = torch.bmm(att, feats.flatten(2).transpose(1, 2)).reshape(b, attr.shape[1], self.glimpses * c)
        return pooled, att


class ChannelAttention(nn.Module):
    """ACA: `alpha = sigmoid(W_2 relu(W_1 [I_s ; relu(W_q e)]))`, returns `I_s * alpha`."""

    def __init__(self, in_channels: int, attr_dim: int, reduction: int, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.attr_proj = nn.Linear(attr_dim, attr_dim)  # W_q
        self.fc1 = nn.Linear(in_channels + attr_dim, in_channels // reduction)  # W_1
        self.fc2 = nn.Linear(in_channels // reduction, in_channels)  # W_2

    def forward(self, pooled: torch.Tensor, attr: torch.Tensor) -> torch.Tensor:
        """pooled `[B, K, C]`, attr `[B, K, attr_dim]` -> re-weighted `[B, K, C]`."""
        if not self.enabled:
            return pooled
        q = F.relu(self.attr_proj(attr))
        alpha = torch.sigmoid(self.fc2(F.relu(self.fc1(torch.cat([pooled, q], dim=-1)))))
        return pooled * alpha


class ChannelStandardised(nn.Module):
    """Base of the heads: a fixed per-channel affine standardisation `(F - mean) / std` of the
    backbone map (train-set statistics). Frozen ImageNet features differ in scale by orders of
    magnitude per channel; without it colour-like channels are drowned out."""

    feat_mean: torch.Tensor  # buffers [C], registered in __init__
    feat_std: torch.Tensor

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(in_channels))
        self.register_buffer("feat_std", torch.ones(in_channels))

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp_min(1e-6))

    def standardise(self, feats: torch.Tensor) -> torch.Tensor:
        """`[B, C, h, w]` -> `[B, C, h, w]`."""
        return (feats - self.feat_mean[:, None, None]) / self.feat_std[:, None, None]


POSITION_CHANNELS = 5  # y, x, y^2, x^2, xy on a [-1, 1] grid


def position_channels(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """`[5, h, w]`: y, x, y^2, x^2 and xy of each cell centre on a [-1, 1] grid. Pooled with the
    attention weights they become the attended region's centre and second moments (its extent)."""
    y = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h * 2 - 1
    x = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w * 2 - 1
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([yy, xx, yy * yy, xx * xx, yy * xx])


class GarmentExtent(nn.Module):
    """Where the garment is and where each glimpse rests on it, measured against the garment's width.

    A learned mask `m = sigmoid(conv1x1 F)` (one per head, the same for every attribute) stands for the
    garment; its attention-free moments give its centre `(c_y, c_x)`, spreads `(s_y, s_x)` and area. Each
    glimpse's centre and spread are then taken relative to the garment: `(g_y - c_y) / s_x`,
    `(g_x - c_x) / s_x`, `log(g_sy / s_x)`, `log(g_sx / s_x)`. A length is such a ratio (hem height
    against shoulder width); pictures framed at any scale give the same numbers, which neither pooled
    cell features nor the position channels (absolute places on the picture) can. The head pools
    `6 + 4 G` of these beside the features (`--extent`). Measured within noise and off by default: the
    mask, told nothing of what a garment is, learns edges as much as garments (docs/results.md)."""

    def __init__(self, in_channels: int, glimpses: int) -> None:
        super().__init__()
        self.mask = nn.Conv2d(in_channels, 1, 1)
        self.glimpses = glimpses
        self.dim = 6 + 4 * glimpses

    @staticmethod
    def _moments(wts: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """wts `[..., hw]` summing to 1, grid `[2, hw]` (y, x) -> centre y, x and spread y, x `[...]`."""
        cy, cx = wts @ grid[0], wts @ grid[1]
        vy = (wts @ grid[0].square() - cy.square()).clamp_min(0)
        vx = (wts @ grid[1].square() - cx.square()).clamp_min(0)
        return cy, cx, (vy + 1e-4).sqrt(), (vx + 1e-4).sqrt()

    def forward(self, feats: torch.Tensor, att: torch.Tensor, k: int) -> torch.Tensor:
        """feats `[B, C, h, w]`, every glimpse's attention `[B, K G, hw]` -> `[B, K, 6 + 4 G]`."""
        b, _, h, w = feats.shape
        grid = position_channels(h, w, feats)[:2].flatten(1)  # [2, hw]: y, x
        m = torch.sigmoid(self.mask(feats)).flatten(1)  # [B, hw]
        cy, cx, sy, sx = self._moments(m / m.sum(dim=1, keepdim=True).clamp_min(1e-6), grid)
        garment = torch.stack(
            [cy, cx, sy.log(), sx.log(), (sy / sx).log(), m.mean(dim=1).clamp_min(1e-4).log()], -1
        )
        gy, gx, gsy, gsx = self._moments(att.view(b, k, self.glimpses, h * w), grid)  # [B, K, G] each
        width = sx[:, None, None]
        rel = torch.stack(
            [
                (gy - cy[:, None, None]) / width,
                (gx - cx[:, None, None]) / width,
                (gsy / width).log(),
                (gsx / width).log(),
            ],
            -1,
        )  # [B, K, G, 4]
        return torch.cat([garment[:, None].expand(-1, k, -1), rel.flatten(2)], dim=-1)


class AttentionHead(ChannelStandardised):
    """One branch's head on a (standardised) backbone map: ASA, then ACA, then the projection W_f.

    With `positions`, five position channels join the standardised map before the attention
    (`position_channels`): attention-weighted pooling of cell features alone is blind to where the
    cells are, so an attribute defined by proportions (a hem's height relative to the shoulders, on
    pictures framed to the garment) cannot be read from it (docs/results.md, garment length).
    """

    def __init__(
        self,
        in_channels: int,
        attr_dim: int,
        common_dim: int,
        reduction: int,
        out_dim: int,
        use_asa: bool = True,
        use_aca: bool = True,
        positions: bool = False,
        glimpses: int = 1,
        extent: bool = False,
    ) -> None:
        super().__init__(in_channels)
        self.positions = positions
        width = in_channels + (POSITION_CHANNELS if positions else 0)
        self.asa = SpatialAttention(width, attr_dim, common_dim, use_asa, glimpses)
        self.extent = GarmentExtent(in_channels, glimpses) if extent else None
        pooled = width * glimpses + (self.extent.dim if self.extent is not None else 0)
        self.aca = ChannelAttention(pooled, attr_dim, reduction, use_aca)
        self.proj = nn.Linear(pooled, out_dim)  # W_f

    def forward(self, feats: torch.Tensor, attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats `[B, C, h, w]`, attr `[B, K, attr_dim]` -> embeddings `[B, K, out]`, attention `[B, K, h, w]`."""
        base = feats = self.standardise(feats)
        b, _, h, w = feats.shape
        if self.positions:
            feats = torch.cat([feats, position_channels(h, w, feats).expand(b, -1, -1, -1)], dim=1)
        pooled, every = self.asa.pool(feats, attr)
        k = attr.shape[1]
        if self.extent is not None:
            pooled = torch.cat([pooled, self.extent(base, every, k)], dim=-1)
        att = every.view(b, k, self.asa.glimpses, h, w).mean(dim=2)
        return self.proj(self.aca(pooled, attr)), att


def channel_statistics(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a batch of maps `[N, C, h, w]` -> (`[C]`, `[C]`)."""
    flat = feats.transpose(0, 1).flatten(1).float()
    return flat.mean(dim=1), flat.std(dim=1)

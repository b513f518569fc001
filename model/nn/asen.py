"""The ASEN++ network and the paper's baselines, built from a `ModelConfig`.

All variants expose the same two steps so that training, evaluation and encoding share one code path:
`global_embed(maps, attrs)` on global backbone maps and, for ASEN++, `local_embed(maps, attrs)` on
backbone maps of the RoI crops. `attrs` is `[B, K]`: K attributes per image, embedded in one pass.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from asen_search.model.config import BranchConfig, ModelConfig, Preprocess
from asen_search.model.nn.attention import AttentionHead, ChannelStandardised
from asen_search.model.nn.backbones import Backbone, build_backbone


class SharedEmbeddingHead(ChannelStandardised):
    """Baselines: global average pooling + one linear embedding shared by all attributes; CSN
    multiplies it by a learned, non-negative per-attribute mask."""

    def __init__(self, in_channels: int, out_dim: int, n_attributes: int, masked: bool) -> None:
        super().__init__(in_channels)
        self.proj = nn.Linear(in_channels, out_dim)
        self.masks = nn.Parameter(torch.full((n_attributes, out_dim), 0.9)) if masked else None

    def forward(self, feats: torch.Tensor, attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats `[B, C, h, w]`, attrs `[B, K]` -> `[B, K, out]`, uniform attention `[B, K, h, w]`."""
        feats = self.standardise(feats)
        emb = self.proj(feats.mean(dim=(2, 3)))[:, None, :].expand(-1, attrs.shape[1], -1)
        if self.masks is not None:
            emb = emb * F.relu(self.masks[attrs])
        b, _, h, w = feats.shape
        return emb, feats.new_full((b, attrs.shape[1], h, w), 1.0 / (h * w))


def fusion_beta(pre: Preprocess, attrs: torch.Tensor) -> float | torch.Tensor:
    """The global branch's weight for attribute ids `attrs` (any shape): the checkpoint's one beta,
    or its per-attribute betas looked up per id."""
    if pre.betas is None:
        return pre.beta
    return torch.tensor(pre.betas, dtype=torch.float32, device=attrs.device)[attrs]


class ASENModel(nn.Module):
    """ASEN++ (global + RoI-zoomed local branch), ASEN global-only, CSN or the triplet network."""

    def __init__(
        self,
        cfg: ModelConfig,
        pretrained: bool = False,
        global_weights: Path | None = None,
        local_weights: Path | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.global_backbone = build_backbone(cfg.global_branch, pretrained, global_weights)
        self.attr_embedding = nn.Embedding(cfg.n_attributes, cfg.attr_dim)
        self.global_head = self._head(cfg.global_branch, self.global_backbone)
        self.local_backbone: Backbone | None = None
        self.local_head: ChannelStandardised | None = None
        if cfg.has_local:
            self.local_backbone = build_backbone(cfg.local_branch, pretrained, local_weights)
            self.local_head = self._head(cfg.local_branch, self.local_backbone)

    def _head(self, branch: BranchConfig, backbone: Backbone) -> ChannelStandardised:
        cfg = self.cfg
        if cfg.variant in ("csn", "triplet"):
            return SharedEmbeddingHead(
                backbone.out_channels, branch.out_dim, cfg.n_attributes, masked=cfg.variant == "csn"
            )
        return AttentionHead(
            backbone.out_channels,
            cfg.attr_dim,
            branch.common_dim,
            branch.reduction,
            branch.out_dim,
            cfg.use_asa,
            cfg.use_aca,
            branch.positions,
            branch.glimpses,
            branch.extent,
        )

    def _run_head(self, head: nn.Module, maps: torch.Tensor, attrs: torch.Tensor):
        if isinstance(head, SharedEmbeddingHead):
            return head(maps, attrs)
        return head(maps, self.attr_embedding(attrs))

    def global_embed(self, maps: torch.Tensor, attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone tail + head: stem maps `[B, ...]`, attrs `[B, K]` -> `[B, K, D_g]`, attention `[B, K, h, w]`."""
        return self.global_head_embed(self.global_backbone.tail(maps), attrs)

    def global_head_embed(
        self, feats: torch.Tensor, attrs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The head alone on full backbone maps `[B, C, h, w]` (an inference runtime ran the backbone)."""
        return self._run_head(self.global_head, feats, attrs)

    def local_embed(self, maps: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
        """Local tail + head on crop stem maps `[B, ...]` with attrs `[B, K]` -> `[B, K, D_l]`."""
        assert self.local_backbone is not None
        return self.local_head_embed(self.local_backbone.tail(maps), attrs)

    def local_head_embed(self, feats: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
        """The local head alone on full backbone maps of the crops -> `[B, K, D_l]`."""
        assert self.local_head is not None
        return self._run_head(self.local_head, feats, attrs)[0]

    def fuse(self, g: torch.Tensor, loc: torch.Tensor | None, beta: float | torch.Tensor) -> torch.Tensor:
        """`[sqrt(beta) g/|g| ; sqrt(1-beta) l/|l|]` (or `g/|g|` without a local part): unit vectors.
        `beta` is one number or one per vector (a tensor of `g`'s shape without its last axis)."""
        g = F.normalize(g, dim=-1)
        if loc is None:
            return g
        if isinstance(beta, torch.Tensor):
            beta = beta.to(g)[..., None]
        return torch.cat([g * beta**0.5, F.normalize(loc, dim=-1) * (1.0 - beta) ** 0.5], dim=-1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by role: the global side (with the shared attribute embedding) and
        the local side, so stage 2 can give them different learning rates."""
        local: list[nn.Parameter] = []
        if self.local_head is not None:
            assert self.local_backbone is not None  # built together with the local head
            local = [
                p for m in (self.local_backbone, self.local_head) for p in m.parameters() if p.requires_grad
            ]
        global_ = [
            p
            for m in (self.global_backbone, self.global_head, self.attr_embedding)
            for p in m.parameters()
            if p.requires_grad
        ]
        return {"global": global_, "local": local}

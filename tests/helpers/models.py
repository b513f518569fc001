"""Tiny models and checkpoints that run in seconds, and image bytes for requests."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from asen_search.model.checkpoint import save_checkpoint
from asen_search.model.config import BranchConfig, ModelConfig, Preprocess
from asen_search.model.data.dataset import load_dataset
from asen_search.model.nn.asen import ASENModel


def tiny_config(variant: str = "asen++", n_attributes: int = 3) -> ModelConfig:
    return ModelConfig(
        variant=variant,
        n_attributes=n_attributes,
        attr_dim=16,
        global_branch=BranchConfig("tiny", 16, 64, 16, 2, 16),
        local_branch=BranchConfig("tiny", 16, 32, 16, 2, 16),
    )


def spread_tiny_model(n_attributes: int, seed: int = 0) -> ASENModel:
    """A tiny random model whose embeddings differ clearly between images: at plain random init
    every image gets nearly the same vector (cosine ~0.9999), too close for ordering tests."""
    torch.manual_seed(seed)
    model = ASENModel(tiny_config(n_attributes=n_attributes))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.add_(torch.randn_like(param) * 3.0 * param.std())
    return model.eval()


def write_checkpoint(path: Path, dataset: Path, seed: int = 0) -> Path:
    attributes = load_dataset(dataset).attributes
    save_checkpoint(
        path, spread_tiny_model(len(attributes), seed), Preprocess(global_size=64, local_size=32), attributes
    )
    return path


def image_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def png_bytes(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")  # type: ignore[attr-defined]
    return buffer.getvalue()

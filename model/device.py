"""Where the network runs: `--device auto|cpu|cuda|cuda:N` for training, evaluation, index builds and
the service. `auto` takes a CUDA GPU where torch sees one, else the CPU; asking for CUDA where there is
none is a clear error, never a silent fall-back. On CUDA the forward passes run under autocast
(bfloat16: no loss scaling needed) and host-to-device copies come from pinned memory, non-blocking;
results come back as float32 on the CPU either way.
"""

from __future__ import annotations

import contextlib

import torch

DEVICE_CHOICES = "auto (a CUDA GPU where torch sees one, else the CPU), cpu, cuda or cuda:N"


class DeviceUnavailable(RuntimeError):
    """The device asked for is not there."""


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: expected {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"unsupported device {name!r}: expected {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"device {name!r}: torch sees no CUDA GPU here (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); use --device cpu or auto"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    return device


def mixed_precision(
    device: torch.device, enabled: bool | None = None
) -> contextlib.AbstractContextManager[object]:
    """Autocast to bfloat16 for forward passes: on by default on CUDA, off on the CPU (where it is
    slower on most cores); `enabled` forces it either way (the tests check the bf16 path on the CPU)."""
    on = device.type == "cuda" if enabled is None else enabled
    if not on:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`: through pinned memory and a non-blocking copy for CUDA."""
    if device.type != "cuda" or tensor.device.type == "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)

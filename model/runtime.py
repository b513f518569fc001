"""Inference runtimes for the backbones: torch, or the backbone exported to ONNX and run by an
inference runtime made for CPUs (OpenVINO, ONNX Runtime).

Only the backbones (about 95% of an encoding's arithmetic) move to the runtime; the attention
heads, the RoI boxes and the fusion stay in torch, so every runtime shares one code path above
the feature maps. Measured side by side on the demo model (docs/performance.md): OpenVINO runs the
whole encoder 4.4x faster than torch (57.9 against 13.3 images/s, bench/perf.py); ONNX Runtime
sits between the two. `auto` picks OpenVINO on a CPU when it is installed, torch otherwise (and
always torch on a GPU). The exported graph is built in memory from the loaded weights at start-up
(about a second per branch): nothing is downloaded or written.

Every runtime must give the embeddings torch gives: tests/model/test_runtime.py checks cosine
>= 0.999 per vector and the same top-10 on a catalogue; OpenVINO is asked for float32 inference
(its CPU plugin would otherwise pick bfloat16 where the CPU has it).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("asen.runtime")
RUNTIME_CHOICES = ("auto", "torch", "openvino", "onnxruntime")
RUNTIME_HELP = (
    "backbone inference runtime: auto (OpenVINO on a CPU when installed, else torch), torch, "
    "openvino or onnxruntime (docs/performance.md)"
)

BackboneRunner = Callable[[torch.Tensor], torch.Tensor]


class RuntimeUnavailable(RuntimeError):
    """The requested runtime is not installed or cannot run this model."""


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def resolve_runtime(name: str, device: torch.device) -> str:
    """The runtime `name` stands for on `device`; RuntimeUnavailable for a runtime that cannot be used."""
    if name not in RUNTIME_CHOICES:
        raise RuntimeUnavailable(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIME_CHOICES)}")
    if name == "auto":
        return "openvino" if device.type == "cpu" and _installed("openvino") else "torch"
    if name != "torch" and device.type != "cpu":
        raise RuntimeUnavailable(f"the {name} runtime runs on the CPU only; use --runtime torch on {device}")
    module = {"openvino": "openvino", "onnxruntime": "onnxruntime"}.get(name)
    if module and not _installed(module):
        raise RuntimeUnavailable(
            f"the {name} runtime is not installed: pip install {name}, or use --runtime torch"
        )
    return name


def export_onnx(backbone: nn.Module, input_size: int) -> bytes:
    """The backbone (in eval mode) as an ONNX graph with a dynamic batch dimension."""
    was_training = backbone.training
    backbone.eval()
    buffer = io.BytesIO()
    example = torch.zeros(1, 3, input_size, input_size)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                backbone,
                (example,),
                buffer,  # type: ignore[arg-type]  # a file object works too
                input_names=["x"],
                output_names=["maps"],
                opset_version=17,
                dynamo=False,
                dynamic_axes={"x": {0: "batch"}, "maps": {0: "batch"}},
            )
    finally:
        backbone.train(was_training)
    return buffer.getvalue()


class _OpenVinoRunner:
    """One compiled model; an infer request per calling thread (a request is not thread-safe)."""

    device = torch.device("cpu")

    def __init__(self, graph: bytes, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(graph, b"")
        self.compiled = core.compile_model(
            model,
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",  # one stream using every thread: best at batch 1 and 32
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": "f32",  # never bfloat16 behind our back
            },
        )
        self._local = threading.local()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({0: x.contiguous().numpy()}, share_outputs=False)
        return torch.from_numpy(np.asarray(result[0]))


class _OnnxRuntimeRunner:
    device = torch.device("cpu")

    def __init__(self, graph: bytes, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out: Any = self.session.run(None, {"x": x.contiguous().numpy()})[0]
        return torch.from_numpy(np.asarray(out))


class _Stem(nn.Module):
    """A backbone's frozen stem as a module of its own (what the training caches hold)."""

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.backbone.stem(x)
        return out


def stem_runner(backbone: Any, input_size: int, runtime: str, threads: int | None = None) -> BackboneRunner:
    """`backbone.stem` (model/nn/backbones.py) on `runtime`: the training caches' feature maps."""
    if runtime == "torch":
        return cast(BackboneRunner, backbone.stem)
    return backbone_runner(_Stem(backbone), input_size, runtime, threads)


@dataclass(frozen=True)
class Stems:
    """Both branches' stems on one runtime, for the training caches (the stems are frozen, so they
    are exported once per run)."""

    global_: BackboneRunner
    local: BackboneRunner | None

    @classmethod
    def of(cls, model: Any, global_size: int, local_size: int, runtime: str) -> Stems:
        local = (
            None if model.local_backbone is None else stem_runner(model.local_backbone, local_size, runtime)
        )
        return cls(stem_runner(model.global_backbone, global_size, runtime), local)


def backbone_runner(
    backbone: nn.Module, input_size: int, runtime: str, threads: int | None = None
) -> BackboneRunner:
    """`[B, 3, S, S]` float32 -> the backbone's feature maps, on `runtime` ("torch", "openvino" or
    "onnxruntime"; resolve "auto" with `resolve_runtime` first)."""
    if runtime == "torch":
        return backbone.__call__
    threads = threads or torch.get_num_threads()
    try:
        graph = export_onnx(backbone, input_size)
        if runtime == "openvino":
            return _OpenVinoRunner(graph, threads)
        if runtime == "onnxruntime":
            return _OnnxRuntimeRunner(graph, threads)
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"the {runtime} runtime is not installed ({exc}); use --runtime torch"
        ) from None
    raise RuntimeUnavailable(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIME_CHOICES)}")

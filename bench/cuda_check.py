"""The CUDA path, checked on a machine with a GPU (a few minutes): a short training run with
`--device cuda` (bfloat16 autocast, pinned non-blocking copies), then the same checkpoint encoding
the same images on the CPU and on the GPU, in float32 and under autocast.

    .venv/bin/python bench/cuda_check.py --work /tmp/cuda-check

Prints one JSON object: training seconds and MAP, and the largest difference between the CPU and GPU
embeddings (float32: expected under 1e-3; bfloat16 autocast: its cosine to the float32 vectors).
Exits 1 when no GPU is visible or a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the dataset, cache and run")
    parser.add_argument("--train", type=int, default=600)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False, "error": "torch sees no CUDA GPU"}))
        return 1
    from asen_search.model.data.synth import generate_dataset
    from asen_search.model.encoder import Encoder
    from asen_search.model.nn.preprocess import load_image
    from asen_search.model.training.trainer import TrainConfig, train

    data = args.work / "data"
    if not (data / "meta.json").is_file():
        generate_dataset(data, n_train=args.train, n_valid=200, n_test=200, seed=0, progress=False)
    start = time.perf_counter()
    summary = train(
        TrainConfig(
            data=data,
            out=args.work / "run",
            stage1_epochs=2,
            stage2_epochs=1,
            triplets_per_epoch=3200,
            device="cuda",
            cache_dir=args.work / "cache",
        ),
        progress=False,
    )
    seconds = time.perf_counter() - start
    images = [load_image(p) for p in sorted((data / "images" / "test").glob("*.jpg"))[:64]]
    checkpoint = args.work / "run" / "best.pt"
    cpu = Encoder.from_checkpoint(checkpoint, "cpu").encode(images)
    gpu_encoder = Encoder.from_checkpoint(checkpoint, "cuda")
    gpu_encoder.amp = False
    gpu32 = gpu_encoder.encode(images)
    gpu_encoder.amp = None  # the default on CUDA: bfloat16 autocast
    gpu16 = gpu_encoder.encode(images)
    result = {
        "cuda": True,
        "gpu": torch.cuda.get_device_name(0),
        "train_seconds": round(seconds, 1),
        "best_valid_map": summary["best_valid_map"],
        "max_abs_diff_cpu_vs_gpu_float32": float(np.abs(cpu - gpu32).max()),
        "min_cosine_cpu_vs_gpu_bf16": float((cpu * gpu16).sum(-1).min()),
    }
    print(json.dumps(result))
    ok = result["max_abs_diff_cpu_vs_gpu_float32"] < 1e-3 and result["min_cosine_cpu_vs_gpu_bf16"] > 0.98
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

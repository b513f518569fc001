"""Head training step time on cached maps with and without the malloc settings (docs/tuning.md).

.venv/bin/python bench/allocator_step.py none; python bench/allocator_step.py mallopt
"""

import sys
import time

import torch

from asen_search.model.config import ModelConfig
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.losses import triplet_loss
from asen_search.model.tuning import tune_allocator


def main(mode: str) -> None:
    if mode == "mallopt":
        tune_allocator()
    model = ASENModel(ModelConfig(variant="asen-global", n_attributes=7), pretrained=False)
    maps = torch.randn(4000, 112, 14, 14).to(torch.float16)
    optimiser = torch.optim.Adam(model.parameter_groups()["global"], 1e-3)

    def step() -> None:
        fids = torch.randint(0, 4000, (96,))
        attrs = torch.randint(0, 7, (96, 1))
        parts = model.global_embed(maps[fids].float(), attrs)[0][:, 0].chunk(3)
        loss = triplet_loss(*parts)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    for _ in range(3):
        step()
    start = time.time()
    for _ in range(15):
        step()
    print(mode, "step ms", (time.time() - start) / 15 * 1000)


if __name__ == "__main__":
    main(sys.argv[1])

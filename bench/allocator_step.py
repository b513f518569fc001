"""Head training step time on cached maps with and without the malloc settings (docs/results.md).

    python bench/allocator_step.py none; python bench/allocator_step.py mallopt
"""
import sys
if sys.argv[1] == "mallopt":
    from model.runtime import tune_allocator; tune_allocator()
import torch, time
from model.asen import ASENModel
from model.config import ModelConfig
m = ASENModel(ModelConfig(variant='asen-global', n_attributes=7), pretrained=False)
maps = torch.randn(4000, 112, 14, 14).to(torch.float16)
opt = torch.optim.Adam(m.parameter_groups()['global'], 1e-3)
from model.losses import triplet_loss
def step():
    fids = torch.randint(0, 4000, (96,))
    attrs = torch.randint(0, 7, (96, 1))
    g = m.global_embed(maps[fids].float(), attrs)[0][:, 0].chunk(3)
    loss = triplet_loss(*g)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3): step()
t=time.time()
for _ in range(15): step()
print(sys.argv[1], 'step ms', (time.time()-t)/15*1000)

import torch

from asen_search.model.nn.losses import alignment_loss, joint_loss, triplet_loss


def _slow_triplet(a, p, n, margin):
    total = 0.0
    for i in range(len(a)):
        cos_p = float(a[i] @ p[i] / (a[i].norm() * p[i].norm()))
        cos_n = float(a[i] @ n[i] / (a[i].norm() * n[i].norm()))
        total += max(0.0, margin - cos_p + cos_n)
    return total / len(a)


def test_triplet_loss_matches_plain_loop() -> None:
    torch.manual_seed(0)
    a, p, n = torch.randn(3, 17, 8).unbind(0)
    assert abs(float(triplet_loss(a, p, n, 0.2)) - _slow_triplet(a, p, n, 0.2)) < 1e-5


def test_triplet_loss_zero_when_margin_met() -> None:
    a = torch.tensor([[1.0, 0.0]])
    assert float(triplet_loss(a, a.clone(), torch.tensor([[-1.0, 0.0]]), 0.2)) == 0.0


def test_joint_loss_matches_plain_loop() -> None:
    torch.manual_seed(1)
    g = torch.randn(3, 9, 6).unbind(0)
    loc = torch.randn(3, 9, 6).unbind(0)
    align = 0.0
    for gx, lx in zip(g, loc):
        align += sum(1 - float(gx[i] @ lx[i] / (gx[i].norm() * lx[i].norm())) for i in range(9)) / 9
    expected = _slow_triplet(*g, 0.2) + 0.1 * _slow_triplet(*loc, 0.2) + 0.1 * align
    assert abs(float(alignment_loss(list(g), list(loc))) - align) < 1e-5
    assert abs(float(joint_loss(g, loc)) - expected) < 1e-5

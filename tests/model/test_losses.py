import torch

from asen_search.model.nn.losses import alignment_loss, joint_loss, proxy_loss, triplet_loss


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


def _slow_negatives(emb, attrs, values, n, mode):
    """The choice of `in_batch_negatives` written as a plain loop."""
    unit = torch.nn.functional.normalize(emb, dim=-1)
    out = []
    for i in range(n):
        pos = float(unit[i] @ unit[n + i])
        cands = [
            j
            for j in range(3 * n)
            if j == 2 * n + i or (attrs[j] == attrs[i] and values[i, j] >= 0 and values[i, j] != values[i, i])
        ]
        sims = {j: float(unit[i] @ unit[j]) for j in cands}
        semi = [j for j in cands if sims[j] < pos]
        if mode == "semi-hard":
            out.append(max(semi, key=lambda j: sims[j]) if semi else 2 * n + i)
        else:
            out.append(max(cands, key=lambda j: sims[j]))
    return out


def test_in_batch_negatives_match_a_plain_loop() -> None:
    """Hard and semi-hard picks: only rows of the anchor's attribute with a known, different value (or
    the triplet's own negative), the most similar (below the positive for semi-hard)."""
    from asen_search.model.nn.losses import in_batch_negatives

    torch.manual_seed(3)
    n = 12
    emb = torch.randn(3 * n, 8)
    attrs = torch.randint(0, 2, (n,)).repeat(3)
    row_values = torch.randint(-1, 3, (3 * n, 2))  # each row's value under attribute 0 and 1, -1 unknown
    values = row_values[:, attrs[:n]].T.clone()  # [n, 3n]: row j's value under anchor i's attribute
    values[torch.arange(n), torch.arange(n)] = torch.randint(0, 3, (n,))  # anchors are labelled
    for mode in ("hard", "semi-hard"):
        got = in_batch_negatives(emb, attrs, values, n, mode).tolist()
        assert got == _slow_negatives(emb, attrs, values, n, mode), mode
    assert in_batch_negatives(emb, attrs, values, n, "none").tolist() == list(range(2 * n, 3 * n))
    hard = in_batch_negatives(emb, attrs, values, n, "hard")
    for i, j in enumerate(hard.tolist()):
        assert j == 2 * n + i or (attrs[j] == attrs[i] and values[i, j] not in (-1, values[i, i]))


def test_hard_negatives_raise_the_loss() -> None:
    """The mined negatives violate the margin at least as much as the sampled ones, and more here."""
    from asen_search.model.nn.losses import in_batch_negatives

    torch.manual_seed(4)
    n = 16
    emb = torch.randn(3 * n, 8)
    attrs = torch.zeros(3 * n, dtype=torch.long)
    values = torch.tensor([[0] * n + [0] * n + [1] * n] * n)  # anchors/positives value 0, negatives 1
    values[:, : n // 2] = 2  # half the other anchors: another value, so candidates too
    values[torch.arange(n), torch.arange(n)] = 0
    a, p, sampled = emb.chunk(3)
    mined = emb[in_batch_negatives(emb, attrs, values, n, "hard")]
    assert float(triplet_loss(a, p, mined)) > float(triplet_loss(a, p, sampled))


def _slow_proxy(emb, attrs, values, proxies, n_values, scale, soft):
    """The proxy term row by row: cross-entropy against a target over the attribute's used values."""
    total, rows = 0.0, 0
    for e, a, v in zip(emb, attrs.tolist(), values.tolist()):
        if v < 0:
            continue
        used = int(n_values[a])
        cos = torch.stack(
            [torch.nn.functional.cosine_similarity(e, proxies[a, k], dim=0) for k in range(used)]
        )
        log_p = torch.log_softmax(scale * cos, dim=0)
        decay = float(soft[a])
        target = torch.tensor(
            [
                1.0 if k == v else (float(torch.exp(torch.tensor(-decay * abs(k - v)))) if decay > 0 else 0.0)
                for k in range(used)
            ]
        )
        total += float(-(target / target.sum() * log_p).sum())
        rows += 1
    return total / rows


def test_proxy_loss_matches_plain_loop_over_known_values_and_used_proxies() -> None:
    """Each row is classified among its own attribute's proxies only: the padding proxies beyond an
    attribute's values and the rows of unknown value (-1) take no part; soft targets on the attributes
    that ask for them."""
    torch.manual_seed(2)
    proxies = torch.randn(3, 5, 6)
    n_values = torch.tensor([5, 2, 3])
    attrs = torch.tensor([0, 1, 2, 2, 0, 1, 2])
    values = torch.tensor([4, 1, 0, 2, -1, 0, 1])
    emb = torch.randn(7, 6)
    soft = torch.tensor([0.0, 0.0, 1.5])
    for s in (None, soft):
        want = _slow_proxy(
            emb, attrs, values, proxies, n_values, 8.0, soft if s is not None else torch.zeros(3)
        )
        assert abs(float(proxy_loss(emb, attrs, values, proxies, n_values, 8.0, s)) - want) < 1e-4
    # a padding proxy equal to a row's embedding changes nothing
    padded = proxies.clone()
    padded[1, 4] = emb[1]
    assert (
        abs(
            float(proxy_loss(emb, attrs, values, padded, n_values, 8.0))
            - float(proxy_loss(emb, attrs, values, proxies, n_values, 8.0))
        )
        < 1e-6
    )
    # no known value: zero, and still part of the graph
    none = proxy_loss(emb.requires_grad_(), attrs, torch.full((7,), -1), proxies, n_values, 8.0)
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_proxy_loss_soft_targets_prefer_a_near_value() -> None:
    """With soft targets an embedding at the proxy of the neighbouring value costs less than one at a
    value three steps away; with the value alone (one-hot) both cost the same."""
    proxies = torch.eye(4)[None]  # one attribute, four orthogonal value proxies
    n_values, attrs, values = torch.tensor([4]), torch.tensor([0]), torch.tensor([0])
    near, far = proxies[0, 1][None], proxies[0, 3][None]
    soft = torch.tensor([1.0])
    assert float(proxy_loss(near, attrs, values, proxies, n_values, 16.0, soft)) < float(
        proxy_loss(far, attrs, values, proxies, n_values, 16.0, soft)
    )
    assert (
        abs(
            float(proxy_loss(near, attrs, values, proxies, n_values, 16.0))
            - float(proxy_loss(far, attrs, values, proxies, n_values, 16.0))
        )
        < 1e-5
    )

import torch

from asen_search.model.nn.attention import AttentionHead, ChannelAttention, SpatialAttention


def test_spatial_attention_shapes_and_sums_to_one() -> None:
    torch.manual_seed(0)
    asa = SpatialAttention(in_channels=12, attr_dim=8, common_dim=6)
    feats, attr = torch.randn(4, 12, 5, 7), torch.randn(4, 3, 8)
    pooled, att = asa(feats, attr)
    assert pooled.shape == (4, 3, 12) and att.shape == (4, 3, 5, 7)
    torch.testing.assert_close(att.sum(dim=(2, 3)), torch.ones(4, 3))
    assert (att >= 0).all()
    # pooled is the attention-weighted sum of the ORIGINAL feature vectors
    manual = torch.einsum("bkhw,bchw->bkc", att, feats)
    torch.testing.assert_close(pooled, manual)


def test_spatial_attention_depends_on_attribute() -> None:
    torch.manual_seed(0)
    asa = SpatialAttention(12, 8, 6)
    feats = torch.randn(1, 12, 5, 5)
    _, att = asa(feats, torch.randn(1, 2, 8))
    assert not torch.allclose(att[0, 0], att[0, 1])


def test_disabled_spatial_attention_is_average_pooling() -> None:
    asa = SpatialAttention(12, 8, 6, enabled=False)
    feats = torch.randn(2, 12, 4, 4)
    pooled, att = asa(feats, torch.randn(2, 1, 8))
    torch.testing.assert_close(pooled[:, 0], feats.mean(dim=(2, 3)))
    torch.testing.assert_close(att.sum(dim=(2, 3)), torch.ones(2, 1))


def test_channel_attention_gates_between_zero_and_one() -> None:
    torch.manual_seed(0)
    aca = ChannelAttention(in_channels=12, attr_dim=8, reduction=2)
    pooled = torch.rand(3, 2, 12) + 0.1
    out = aca(pooled, torch.randn(3, 2, 8))
    assert out.shape == pooled.shape
    ratio = out / pooled
    assert (ratio > 0).all() and (ratio < 1).all()


def test_head_output_shapes_and_standardisation() -> None:
    torch.manual_seed(0)
    head = AttentionHead(12, 8, 6, 2, 10)
    feats, attr = torch.randn(2, 12, 3, 3), torch.randn(2, 4, 8)
    emb, att = head(feats, attr)
    assert emb.shape == (2, 4, 10) and att.shape == (2, 4, 3, 3)
    mean, std = torch.randn(12), torch.rand(12) + 0.5
    head.set_standardisation(mean, std)
    emb2, _ = head(feats * std[:, None, None] + mean[:, None, None], attr)
    torch.testing.assert_close(emb, emb2, atol=1e-5, rtol=1e-4)


def test_position_channels_give_the_attended_regions_moments() -> None:
    """Pooled with the attention, the position channels are the attended region's centre and second
    moments: attention on one cell gives that cell's coordinates."""
    import torch

    from asen_search.model.nn.attention import AttentionHead, position_channels

    pos = position_channels(4, 6, torch.zeros(1))
    assert pos.shape == (5, 4, 6)
    assert torch.allclose(pos[0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # y of the rows
    assert torch.allclose(pos[2], pos[0] ** 2) and torch.allclose(pos[4], pos[0] * pos[1])
    head = AttentionHead(8, 4, 6, 2, 5, use_asa=False, positions=True)
    assert head.proj.in_features == 8 + 5
    emb, att = head(torch.randn(2, 8, 4, 6), torch.randn(2, 3, 4))
    assert emb.shape == (2, 3, 5) and att.shape == (2, 3, 4, 6)


def test_checkpoints_without_the_positions_key_load_without_positions() -> None:
    from asen_search.model.config import ModelConfig

    data = ModelConfig().to_dict()
    for branch in ("global_branch", "local_branch"):
        del data[branch]["positions"]
        del data[branch]["extent"]
    loaded = ModelConfig.from_dict(data).global_branch
    assert loaded.positions is False and loaded.extent is False


def test_glimpses_pool_each_map_side_by_side() -> None:
    """G maps per attribute: the pooled vector is the G weighted sums one after another, each map sums
    to one, and the attention given out is their mean."""
    torch.manual_seed(0)
    asa = SpatialAttention(12, 8, 6, glimpses=2)
    feats, attr = torch.randn(3, 12, 5, 7), torch.randn(3, 4, 8)
    pooled, att = asa(feats, attr)
    assert pooled.shape == (3, 4, 24) and att.shape == (3, 4, 5, 7)
    p = torch.tanh(asa.attr_proj(attr)).reshape(3, 8, 6)
    maps = torch.softmax(
        torch.einsum("bgc,bchw->bghw", p, torch.tanh(asa.conv(feats))).flatten(2) / 6**0.5, -1
    )
    maps = maps.view(3, 4, 2, 5, 7)
    torch.testing.assert_close(pooled[..., 12:], torch.einsum("bkhw,bchw->bkc", maps[:, :, 1], feats))
    torch.testing.assert_close(att, maps.mean(dim=2))
    assert not torch.allclose(maps[:, :, 0], maps[:, :, 1])
    head = AttentionHead(12, 8, 6, 2, 16, positions=True, glimpses=3)
    emb, _ = head(torch.randn(2, 12, 4, 4), torch.randn(2, 5, 8))
    assert emb.shape == (2, 5, 16)


def _garment(
    top: int, left: int, height: int, width: int, size: int = 40
) -> tuple[torch.Tensor, torch.Tensor]:
    """A feature map whose channel 0 is +10 on a rectangle (the garment) and -10 elsewhere, and two
    glimpses: one on the rectangle's bottom row (the hem), one on its top row (the shoulders)."""
    feats = torch.full((1, 2, size, size), -10.0)
    feats[0, 0, top : top + height, left : left + width] = 10.0
    att = torch.zeros(1, 2, size, size)
    att[0, 0, top + height - 1, left : left + width] = 1.0 / width
    att[0, 1, top, left : left + width] = 1.0 / width
    return feats, att.flatten(2)


def test_garment_extent_measures_proportions_at_any_scale() -> None:
    """The extent features are ratios to the garment's width: the same garment drawn 1.5 times larger
    elsewhere gives the same hem place, a longer garment of the same width another one."""
    from asen_search.model.nn.attention import GarmentExtent

    extent = GarmentExtent(2, glimpses=2)
    with torch.no_grad():
        extent.mask.weight.zero_()
        extent.mask.weight[0, 0] = 1.0  # the mask is channel 0: the rectangle
        extent.mask.bias.zero_()
    with torch.no_grad():
        small = extent(*_garment(4, 8, 16, 8), k=1)[0, 0]
        large = extent(*_garment(2, 14, 24, 12), k=1)[0, 0]
        longer = extent(*_garment(4, 8, 24, 8), k=1)[0, 0]
    assert small.shape == (6 + 4 * 2,)
    hem, aspect = 6, 4  # the hem glimpse's height below the garment's centre / width; log(s_y / s_x)
    for i in (hem, hem + 4, aspect):  # the hem's and the shoulders' places, the garment's aspect
        assert abs(float(small[i] - large[i])) < 0.06 * abs(float(small[i])) + 0.02, i
    assert float(longer[hem]) > 1.3 * float(small[hem])
    assert float(longer[aspect]) > float(small[aspect]) + 0.3


def test_head_with_extent_pools_it_beside_the_features() -> None:
    torch.manual_seed(0)
    head = AttentionHead(12, 8, 6, 2, 16, positions=True, glimpses=2, extent=True)
    assert head.proj.in_features == (12 + 5) * 2 + 6 + 4 * 2
    emb, att = head(torch.randn(2, 12, 5, 5), torch.randn(2, 3, 8))
    assert emb.shape == (2, 3, 16) and att.shape == (2, 3, 5, 5)
    assert torch.isfinite(emb).all()

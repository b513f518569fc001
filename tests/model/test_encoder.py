import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from asen_search.model.config import Preprocess
from asen_search.model.data.dataset import Attribute
from asen_search.model.encoder import Encoder
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.preprocess import global_inputs
from tests.helpers.models import tiny_config

ATTRS = tuple(Attribute(f"a{i}", ("x", "y")) for i in range(3))


def _images(n: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(80, 60), (64, 64), (50, 90), (120, 70), (70, 70)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


@pytest.mark.parametrize("variant", ["asen++", "asen-global", "csn", "triplet"])
def test_all_attributes_equal_per_attribute(variant: str) -> None:
    torch.manual_seed(0)
    model = ASENModel(tiny_config(variant), pretrained=False)
    enc = Encoder(model, Preprocess(global_size=64, local_size=32), ATTRS)
    images = _images()
    everything = enc.encode(images, batch_size=2)
    assert everything.shape == (5, 3, enc.dim) and everything.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(everything, axis=-1), 1.0, rtol=1e-5)
    for a in range(3):
        np.testing.assert_allclose(enc.encode_attribute(images, a), everything[:, a], atol=1e-5)


def test_explain_returns_map_and_box_in_original_pixels() -> None:
    torch.manual_seed(0)
    enc = Encoder(
        ASENModel(tiny_config(), pretrained=False), Preprocess(global_size=64, local_size=32), ATTRS
    )
    img = _images()[3]  # 120 x 70: the centre crop shows x in [25, 95)
    exp = enc.explain(img, 1)
    assert exp.attention.shape == (4, 4) and exp.attention.min() >= 0 and exp.attention.max() <= 1
    x0, y0, x1, y1 = exp.roi_box
    assert 25 <= x0 < x1 <= 95 and 0 <= y0 < y1 <= 70
    assert abs((x1 - x0) - (y1 - y0)) < 1e-6
    assert exp.image_box == (25.0, 0.0, 95.0, 70.0)


def test_mirror_average_images_is_the_mean_of_an_image_and_its_mirror() -> None:
    """`mirror_average="images"` embeds each image with its left-right mirror (one pass) and averages: the result is
    the unit mean of the two plain vectors, an image and its mirror embed alike, and the service's
    batched path (`encode_requests`) gives the same vectors."""
    torch.manual_seed(0)
    model = ASENModel(tiny_config(), pretrained=False)
    plain = Encoder(model, Preprocess(global_size=64, local_size=32), ATTRS)
    averaged = Encoder(model, Preprocess(global_size=64, local_size=32, mirror_average="images"), ATTRS)
    images = _images()
    mirrors = [ImageOps.mirror(image) for image in images]
    both = averaged.encode(images, batch_size=2)
    expected = plain.encode(images) + plain.encode(mirrors)
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(both, expected, atol=1e-5)
    np.testing.assert_allclose(averaged.encode(mirrors, batch_size=3), both, atol=1e-5)
    assert np.abs(plain.encode(mirrors) - plain.encode(images)).max() > 1e-3  # the plain model is not
    requests = [(images[0], [0, 2]), (images[3], [1]), (images[4], [])]
    out = averaged.encode_requests(requests)
    np.testing.assert_allclose(out[0], both[0, [0, 2]], atol=1e-5)
    np.testing.assert_allclose(out[1], both[3, [1]], atol=1e-5)
    assert out[2].shape == (0, averaged.dim)


def test_mirror_average_crops_averages_each_rois_local_embedding_with_its_mirrors() -> None:
    """`mirror_average="crops"` leaves the global part as it is and gives the local part the unit mean of
    the RoI crop's embedding and its left-right mirror's; `encode_requests` agrees."""
    torch.manual_seed(0)
    model = ASENModel(tiny_config(), pretrained=False).eval()
    plain = Encoder(model, Preprocess(global_size=64, local_size=32), ATTRS)
    crops = Encoder(model, Preprocess(global_size=64, local_size=32, mirror_average="crops"), ATTRS)
    images = _images()
    g = model.cfg.global_branch.out_dim
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    got, before = crops.encode(images, batch_size=2), plain.encode(images, batch_size=2)
    np.testing.assert_allclose(unit(got[..., :g]), unit(before[..., :g]), atol=1e-5)
    pairs = [(i, a) for i in range(len(images)) for a in range(len(ATTRS))]
    state = plain._global_pass(images, pairs, global_inputs(images, plain.preprocess))
    with torch.inference_mode():
        mirrored = model.local_head_embed(model.local_backbone(plain._crops(state).flip(-1)), state.attr_ids)
    expected = unit(unit(before[..., g:]) + unit(mirrored[:, 0].numpy().reshape(len(images), len(ATTRS), -1)))
    np.testing.assert_allclose(unit(got[..., g:]), expected, atol=1e-4)
    assert np.abs(unit(got[..., g:]) - unit(before[..., g:])).max() > 1e-3
    out = crops.encode_requests([(images[1], [2, 0])])
    np.testing.assert_allclose(out[0], got[1, [2, 0]], atol=1e-5)


def test_unknown_attribute_name() -> None:
    enc = Encoder(
        ASENModel(tiny_config(), pretrained=False), Preprocess(global_size=64, local_size=32), ATTRS
    )
    assert enc.attribute_id("a2") == 2
    with pytest.raises(KeyError, match="known attributes: a0, a1, a2"):
        enc.attribute_id("collar")


def test_each_attribute_is_cropped_at_its_own_roi_threshold() -> None:
    """Per-attribute RoI thresholds travel in the checkpoint's preprocessing and reach the encoder."""
    torch.manual_seed(0)
    model = ASENModel(tiny_config(), pretrained=False)
    thresholds = (0.0, 0.5, 0.95)
    per = Encoder(model, Preprocess(global_size=64, local_size=32, roi_thresholds=thresholds), ATTRS)
    images = _images()
    everything = per.encode(images, batch_size=2)
    for a, t in enumerate(thresholds):
        alone = Encoder(model, Preprocess(global_size=64, local_size=32, roi_threshold=t), ATTRS)
        np.testing.assert_allclose(everything[:, a], alone.encode_attribute(images, a), atol=1e-5)
        assert per.explain(images[3], a).roi_box == alone.explain(images[3], a).roi_box
    boxes = {per.explain(images[3], a).roi_box for a in range(3)}
    assert len(boxes) >= 2

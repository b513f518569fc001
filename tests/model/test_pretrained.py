"""The offline ImageNet weights are really loaded: each EfficientNet-Lite recognises a cat."""

import pytest
import torch

from asen_search.model.config import Preprocess
from asen_search.model.nn.backbones import LITE_WEIGHTS, backbone_spec, build_lite_classifier
from asen_search.model.nn.preprocess import normalise
from asen_search.model.nn.roi import SquareView, crop_resize

# ImageNet classes 281-285 are the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian cat).
CATS = range(281, 286)


@pytest.mark.parametrize("name", list(LITE_WEIGHTS))
def test_pretrained_lite_classifies_chelsea_as_a_cat(name: str) -> None:
    from PIL import Image

    # a declared test dependency (provides the sample photo): missing fails, not skips
    from skimage import data

    img = Image.fromarray(data.chelsea())
    view = SquareView.of(img.width, img.height, "center")
    x = normalise([crop_resize(img, view.box(), backbone_spec(name).input_size)], Preprocess())
    net = build_lite_classifier(name, pretrained=True).eval()
    with torch.no_grad():
        probs = net(x).softmax(-1)[0]
    assert int(probs.argmax()) in CATS
    assert float(probs[list(CATS)].sum()) > 0.5
    # and random weights do not
    with torch.no_grad():
        rand = build_lite_classifier(name, pretrained=False).eval()(x).softmax(-1)[0]
    assert float(rand[list(CATS)].sum()) < 0.1

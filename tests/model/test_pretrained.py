"""The offline ImageNet weights are really loaded: the backbone recognises a cat."""

import torch

from asen_search.model.config import Preprocess
from asen_search.model.nn.backbones import build_lite0_classifier
from asen_search.model.nn.preprocess import normalise
from asen_search.model.nn.roi import SquareView, crop_resize

# ImageNet classes 281-285 are the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian cat).
CATS = range(281, 286)


def test_pretrained_lite0_classifies_chelsea_as_a_cat() -> None:
    from PIL import Image
    from skimage import (
        data,
    )  # a declared test dependency (provides the sample photo): missing fails, not skips

    img = Image.fromarray(data.chelsea())
    view = SquareView.of(img.width, img.height, "center")
    x = normalise([crop_resize(img, view.box(), 224)], Preprocess())
    net = build_lite0_classifier(pretrained=True).eval()
    with torch.no_grad():
        probs = net(x).softmax(-1)[0]
    assert int(probs.argmax()) in CATS
    assert float(probs[list(CATS)].sum()) > 0.5
    # and random weights do not
    with torch.no_grad():
        rand = build_lite0_classifier(pretrained=False).eval()(x).softmax(-1)[0]
    assert float(rand[list(CATS)].sum()) < 0.1

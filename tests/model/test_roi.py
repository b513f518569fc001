"""RoI boxes on hand-worked attention maps, and the crop mapping back to the original image."""

import pytest
import torch
from PIL import Image

from asen_search.model.nn.roi import SquareView, attention_boxes


def test_uniform_map_gives_whole_image() -> None:
    boxes = attention_boxes(torch.full((1, 14, 14), 1 / 196), 224, 0.1)
    assert boxes.tolist() == [[0, 0, 224, 224]]


def test_one_hot_spot() -> None:
    # A single hot cell (row 5, col 5) upsampled bilinearly x16: the value falls off linearly over one
    # cell (16 px) from the cell centre at pixel 88, so it is above 0.1 within 0.9 * 16 = 14.4 px:
    # pixels 74..101 -> box [74, 102), side 28, already square.
    att = torch.zeros(1, 14, 14)
    att[0, 5, 5] = 1.0
    assert attention_boxes(att, 224, 0.1).tolist() == [[74, 74, 102, 102]]


def test_box_made_square_around_its_centre() -> None:
    att = torch.zeros(1, 14, 14)
    att[0, 5, 5:8] = 1.0  # three cells wide, one cell high: x [74, 134), y [74, 102)
    assert attention_boxes(att, 224, 0.1).tolist() == [[74, 58, 134, 118]]


def test_box_at_image_edge_is_shifted_inside() -> None:
    att = torch.zeros(1, 14, 14)
    att[0, 0, 10:14] = 1.0  # top-right corner, wider than high: y [0, 22) grows to 70 -> [0, 70)
    box = attention_boxes(att, 224, 0.1).tolist()[0]
    assert box == [154, 0, 224, 70]


def test_threshold_zero_keeps_everything_above_the_minimum() -> None:
    att = torch.zeros(1, 14, 14)
    att[0, 7, 7] = 1.0
    strict = attention_boxes(att, 224, 0.5).tolist()[0]
    loose = attention_boxes(att, 224, 0.1).tolist()[0]
    assert strict[2] - strict[0] < loose[2] - loose[0]


def test_crop_mapping_non_square_centre_crop() -> None:
    # 400 x 200 image: the centre crop shows x in [100, 300), scale 200/224 per input pixel.
    view = SquareView.of(400, 200, "center")
    assert (view.left, view.top, view.side) == (100.0, 0.0, 200.0)
    assert view.to_original((0, 0, 224, 224), 224) == (100.0, 0.0, 300.0, 200.0)
    x0, y0, x1, y1 = view.to_original((112, 56, 224, 168), 224)
    assert (x0, y0, x1, y1) == (200.0, 50.0, 300.0, 150.0)


def test_crop_mapping_tall_image_and_letterbox() -> None:
    assert SquareView.of(150, 300, "center").box() == (0.0, 75.0, 150.0, 225.0)
    assert SquareView.of(150, 300, "pad").box() == (-75.0, 0.0, 225.0, 300.0)


def test_crop_from_original_pixels() -> None:
    from asen_search.model.nn.roi import crop_resize

    img = Image.new("RGB", (400, 200), (0, 0, 0))
    img.paste((255, 0, 0), (200, 50, 300, 150))  # a red square where the box maps
    view = SquareView.of(400, 200, "center")
    crop = crop_resize(img, view.to_original((112, 56, 224, 168), 224), 32)
    assert crop.size == (32, 32)
    assert crop.getpixel((16, 16)) == (255, 0, 0) and crop.getpixel((1, 1))[0] > 200


def _brute_force_box(att: torch.Tensor, size: int, t: float) -> list[int]:
    """The spec's steps literally: full bilinear upsample, min-max, threshold, rectangle, square."""
    import torch.nn.functional as F

    up = F.interpolate(att[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    norm = (up - up.min()) / (up.max() - up.min())
    ys, xs = torch.nonzero(norm > t, as_tuple=True)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    side = max(x1 - x0, y1 - y0)
    sx = min(max((x0 + x1 - side) // 2, 0), size - side)
    sy = min(max((y0 + y1 - side) // 2, 0), size - side)
    return [sx, sy, sx + side, sy + side]


def test_fast_boxes_equal_brute_force_on_random_maps() -> None:
    torch.manual_seed(0)
    maps = torch.rand(200, 14, 14) ** 6
    fast = attention_boxes(maps, 224, 0.1).tolist()
    assert fast == [_brute_force_box(m, 224, 0.1) for m in maps]
    rect = torch.rand(50, 7, 9) ** 4  # non-square maps, other sizes and thresholds
    assert attention_boxes(rect, 112, 0.3).tolist() == [_brute_force_box(m, 112, 0.3) for m in rect]


def test_one_threshold_per_map_matches_each_map_alone() -> None:
    """Per-attribute RoI thresholds (`--roi-thresholds`): each map is cut at its own threshold,
    across the chunks the maps are cut into."""
    torch.manual_seed(0)
    att = torch.rand(9, 7, 7) ** 4
    thresholds = torch.tensor([0.0, 0.05, 0.1, 0.3, 0.6, 0.9, 0.2, 0.4, 0.05])
    each = torch.cat([attention_boxes(att[i : i + 1], 112, float(t)) for i, t in enumerate(thresholds)])
    assert torch.equal(attention_boxes(att, 112, thresholds, chunk=4), each)
    assert len({tuple(b) for b in each.tolist()}) >= 3  # the thresholds made different boxes


def test_roi_threshold_of_an_attribute() -> None:
    from asen_search.model.config import Preprocess
    from asen_search.model.nn.roi import roi_threshold

    attrs = torch.tensor([2, 0, 1, 2])
    assert roi_threshold(Preprocess(roi_threshold=0.2), attrs) == 0.2
    per = roi_threshold(Preprocess(roi_threshold=0.2, roi_thresholds=(0.1, 0.0, 0.5)), attrs)
    assert per.tolist() == pytest.approx([0.5, 0.1, 0.0, 0.5])

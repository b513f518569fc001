"""Geometric verification of copies (model/copy_verify.py): a new photograph of one garment is
verified, another garment is not, degenerate fits count nothing, only the best items are re-ranked."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from asen_search.model import copy_verify
from asen_search.model.augment import rephotograph
from asen_search.model.copy_verify import (
    CAP,
    FLOOR,
    WEIGHT,
    LocalFeatures,
    inliers,
    local_features,
    verification,
    verified_scores,
    verify_ranking,
)
from asen_search.model.data.copies import new_design
from asen_search.model.data.synth_draw import GARMENT_PARTS, SeededParts, make_shape, render_garment


def _garment(seed: int, photo_seed: int = 0) -> Image.Image:
    """A demo garment drawn from its own per-part seeds on a plain background."""
    design = new_design(np.random.default_rng(seed))
    parts = SeededParts(dict(zip(GARMENT_PARTS, design.seeds)), np.random.default_rng(photo_seed))
    named = design.named()
    shape = make_shape(named["sleeve_length"], named["garment_length"], parts)
    garment = render_garment(named, shape, 120.0, parts).convert("RGBA")
    canvas = Image.new("RGB", (260, 300), (90, 120, 150))
    canvas.paste(garment, ((260 - garment.width) // 2, (300 - garment.height) // 2), garment)
    return canvas


def test_a_new_photograph_of_a_garment_is_verified_and_another_garment_is_not() -> None:
    design = _garment(1)
    mine = local_features(design)
    same = min(
        inliers(mine, local_features(rephotograph(design, np.random.default_rng(s)))) for s in (0, 1, 4)
    )
    other = max(inliers(mine, local_features(_garment(seed))) for seed in (2, 4, 5))
    assert same >= FLOOR + CAP // 2, same
    assert other < same / 3, (same, other)
    assert verification(same) > verification(other)


def _features(points: np.ndarray, seed: int = 0) -> LocalFeatures:
    rng = np.random.default_rng(seed)
    descriptors = rng.random((len(points), 128)).astype(np.float32)
    return LocalFeatures(points.astype(np.float32), descriptors)


def test_a_transform_that_shrinks_the_garment_to_a_point_counts_nothing() -> None:
    points = np.random.default_rng(1).uniform(0, 400, (30, 2))
    design = _features(points)
    shifted = LocalFeatures(points.astype(np.float32) + 25, design.descriptors)
    assert inliers(design, shifted) == 30  # a true re-framing: every point
    shrunk = LocalFeatures((points * 0.05 + 100).astype(np.float32), design.descriptors)
    assert inliers(design, shrunk) == 0  # scale 0.05: no photograph of the same garment


def test_points_found_several_times_at_one_place_count_once() -> None:
    # SIFT finds several features (orientations) at one place: 4 places, 8 features each
    places = np.array([[50, 60], [200, 80], [120, 300], [330, 250]], dtype=np.float32)
    points = np.repeat(places, 8, axis=0)
    design = _features(points, seed=2)
    item = LocalFeatures(points + np.float32(10), design.descriptors)
    assert inliers(design, item) == 4


def test_too_few_features_verify_nothing() -> None:
    empty = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    some = _features(np.random.default_rng(0).uniform(0, 100, (10, 2)))
    assert inliers(empty, some) == inliers(some, empty) == 0
    blank = local_features(Image.new("RGB", (64, 64), (200, 10, 10)))
    assert len(blank) == 0 and inliers(blank, some) == 0


def test_verification_is_zero_up_to_the_floor_and_one_from_the_cap() -> None:
    assert verification(0) == verification(FLOOR) == 0
    assert verification(FLOOR + CAP // 2) == pytest.approx(0.5)
    assert verification(FLOOR + CAP) == verification(10 * CAP) == 1


def test_only_the_best_items_are_verified_and_they_gain_at_most_the_weight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = {0: 100, 1: 0, 2: 100, 3: 100, 4: FLOOR + CAP // 2}
    monkeypatch.setattr(copy_verify, "inliers", lambda design, item: counts[int(item.points[0, 0])])
    features = {
        r: LocalFeatures(np.full((1, 2), r, np.float32), np.zeros((1, 128), np.float32)) for r in counts
    }
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.6])
    out, verified = verified_scores(scores, features[0], features.__getitem__, exclude=[0], top_k=3)
    assert set(verified) == {1, 2, 4}  # the design (row 0) aside, the three best; row 3 not verified
    assert out[0] == 0.9 and out[3] == 0.1
    assert out[1] == pytest.approx(0.8) and out[2] == pytest.approx(0.7 + WEIGHT)
    assert out[4] == pytest.approx(0.6 + WEIGHT / 2)
    assert list(np.argsort(-out[1:]) + 1)[:2] == [2, 1]  # the verified item overtakes the unverified one


def test_a_ranking_is_reranked_within_its_pool_and_the_rest_follows_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = [0, 100, None, 100, 100]  # position 2 has no picture
    monkeypatch.setattr(copy_verify, "inliers", lambda design, item: int(item.points[0, 0]))

    def features(position: int) -> LocalFeatures | None:
        count = counts[position]
        return (
            None if count is None else LocalFeatures(np.full((1, 2), count, np.float32), np.zeros((1, 128)))
        )

    ranking = verify_ranking([0.9, 0.85, 0.8, 0.75, 0.7], features(0), features, pool=4)  # type: ignore[arg-type]
    assert [c.position for c in ranking] == [1, 3, 0, 2, 4]  # verified first within the pool
    assert ranking[0].score == pytest.approx(0.85 + WEIGHT) and ranking[0].copy_score == 0.85
    assert (ranking[3].inliers, ranking[3].score) == (None, 0.8)  # no picture: unverified, its copy score
    assert (ranking[4].inliers, ranking[4].score) == (None, 0.7)  # beyond the pool: as it was, after it
    assert all(a.score >= b.score for a, b in zip(ranking, ranking[1:]))


def test_each_thread_describes_pictures_with_its_own_detector() -> None:
    """OpenCV does not promise that one detector may serve threads at once (the service verifies in
    worker threads): each thread has its own, and concurrent descriptions equal sequential ones."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    together = threading.Barrier(4)

    def detector(_: int) -> object:
        together.wait(timeout=30)  # four threads at once
        return copy_verify._detector()

    pictures = [_garment(seed) for seed in (1, 2, 3, 4)]
    with ThreadPoolExecutor(4) as pool:
        detectors = list(pool.map(detector, range(4)))
        described = list(pool.map(local_features, pictures))
    assert len({id(d) for d in detectors}) == 4
    for alone, concurrent in zip((local_features(p) for p in pictures), described):
        assert np.array_equal(alone.points, concurrent.points)
        assert np.array_equal(alone.descriptors, concurrent.descriptors)

"""Triplet sampler: valid triplets, rare values only as negatives, uniform attributes, seeding."""

from __future__ import annotations

import time

import numpy as np
import pytest

from asen_search.model.data.dataset import Tagged
from asen_search.model.training.sampling import TripletSampler


def _tagged(rows: list[tuple[int, int, int]]) -> Tagged:
    table = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    return Tagged(table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy())


def _random_labels(seed: int = 0, n: int = 600, n_values: tuple[int, ...] = (4, 6, 3)) -> Tagged:
    rng = np.random.default_rng(seed)
    attrs = rng.integers(0, len(n_values), size=n)
    values = np.array([rng.integers(0, n_values[a]) for a in attrs])
    return Tagged(np.arange(n, dtype=np.int64), attrs.astype(np.int64), values.astype(np.int64))


def _value_of(labels: Tagged) -> dict[tuple[int, int], set[int]]:
    out: dict[tuple[int, int], set[int]] = {}
    for f, a, v in zip(labels.fids.tolist(), labels.attrs.tolist(), labels.values.tolist()):
        out.setdefault((f, a), set()).add(v)
    return out


def test_triplets_are_valid() -> None:
    labels = _random_labels()
    triplets = TripletSampler(labels, [4, 6, 3], seed=0).sample(5000)
    assert triplets.shape == (5000, 4) and triplets.dtype == np.int64
    value_of = _value_of(labels)
    for attr, anchor, positive, negative in triplets.tolist():
        assert anchor != positive
        (va,), (vp,), (vn,) = value_of[anchor, attr], value_of[positive, attr], value_of[negative, attr]
        assert va == vp != vn


def test_rare_values_are_only_negatives() -> None:
    # attr 0: value 0 has 3 images, value 1 one image (fid 10), value 2 none; attr 1: 1 image each.
    labels = _tagged([(0, 0, 0), (1, 0, 0), (2, 0, 0), (10, 0, 1), (3, 1, 0), (4, 1, 1)])
    sampler = TripletSampler(labels, [3, 2], seed=1)
    assert sampler.usable_attributes == [0]
    triplets = sampler.sample(2000)
    assert (triplets[:, 0] == 0).all()
    assert set(triplets[:, 1]) | set(triplets[:, 2]) == {0, 1, 2}
    assert (triplets[:, 3] == 10).all()
    assert (triplets[:, 1] != triplets[:, 2]).all()


def test_duplicate_rows_count_once() -> None:
    # value 0 has one distinct image listed twice: not a positive value, so nothing is usable.
    with pytest.raises(ValueError, match="no attribute can make a triplet"):
        TripletSampler(_tagged([(0, 0, 0), (0, 0, 0), (1, 0, 1)]), [2])


@pytest.mark.parametrize(
    "rows",
    [
        [(0, 0, 0), (1, 0, 1), (2, 1, 0)],  # one image per value
        [(0, 0, 0), (1, 0, 0), (2, 0, 0)],  # one value only
        [],
    ],
)
def test_no_usable_attribute_raises(rows: list[tuple[int, int, int]]) -> None:
    with pytest.raises(ValueError, match="no attribute can make a triplet"):
        TripletSampler(_tagged(rows), [3, 2])


def test_attribute_and_value_choice_roughly_uniform() -> None:
    labels = _random_labels(n=3000, n_values=(4, 6, 3))
    triplets = TripletSampler(labels, [4, 6, 3], seed=2).sample(60_000)
    np.testing.assert_allclose(np.bincount(triplets[:, 0], minlength=3) / 60_000, 1 / 3, atol=0.015)
    attr1 = triplets[triplets[:, 0] == 1]
    values = dict(zip(labels.fids.tolist(), labels.values.tolist()))
    vp = np.array([values[f] for f in attr1[:, 1]])
    np.testing.assert_allclose(np.bincount(vp, minlength=6) / len(vp), 1 / 6, atol=0.02)


def test_deterministic_by_seed() -> None:
    labels = _random_labels()
    a = TripletSampler(labels, [4, 6, 3], seed=5).sample(100)
    b = TripletSampler(labels, [4, 6, 3], seed=5).sample(100)
    c = TripletSampler(labels, [4, 6, 3], seed=6).sample(100)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rejects_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match="value ids"):
        TripletSampler(_tagged([(0, 0, 5)]), [3])
    with pytest.raises(ValueError, match="attribute ids"):
        TripletSampler(_tagged([(0, 2, 0)]), [3])


def test_100k_triplets_fast() -> None:
    labels = _random_labels(n=50_000, n_values=(6, 9, 8, 6, 5, 5, 10, 5))
    sampler = TripletSampler(labels, [6, 9, 8, 6, 5, 5, 10, 5], seed=0)
    start = time.perf_counter()
    triplets = sampler.sample(100_000)
    assert time.perf_counter() - start < 1.0
    assert triplets.shape == (100_000, 4)


def test_attribute_weights_set_how_often_each_attribute_is_drawn() -> None:
    labels = _random_labels(n=3000, n_values=(4, 6, 3))
    triplets = TripletSampler(labels, [4, 6, 3], seed=3).sample(60_000, [1.0, 2.0, 5.0])
    np.testing.assert_allclose(
        np.bincount(triplets[:, 0], minlength=3) / 60_000, [1 / 8, 2 / 8, 5 / 8], atol=0.01
    )
    value_of = _value_of(labels)
    for attr, anchor, positive, negative in triplets[:2000].tolist():  # still valid triplets
        (va,), (vp,), (vn,) = value_of[anchor, attr], value_of[positive, attr], value_of[negative, attr]
        assert va == vp != vn and anchor != positive


def test_attribute_weights_never_draw_an_unusable_attribute() -> None:
    labels = _tagged([(0, 0, 0), (1, 0, 0), (2, 0, 1), (3, 1, 0), (4, 1, 1)])  # attribute 1 unusable
    triplets = TripletSampler(labels, [2, 2], seed=1).sample(500, [0.1, 10.0])
    assert (triplets[:, 0] == 0).all()


@pytest.mark.parametrize("weights", [[1.0, -1.0, 1.0], [1.0, 1.0], [0.0, 0.0, 0.0], [1.0, float("nan"), 1.0]])
def test_attribute_weights_are_checked(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="attribute weights"):
        TripletSampler(_random_labels(), [4, 6, 3], seed=0).sample(10, weights)


def test_pair_weights_set_how_often_each_value_pair_is_drawn() -> None:
    labels = _random_labels(n=3000, n_values=(4, 6, 3))
    hard = np.zeros((4, 4))
    hard[1, 2], hard[2, 1] = 3.0, 1.0  # attribute 0: only (1, 2) and (2, 1), three to one
    triplets = TripletSampler(labels, [4, 6, 3], seed=4).sample(40_000, pair_weights=[hard, None, None])
    value_of = {f: v for f, v in zip(labels.fids.tolist(), labels.values.tolist())}
    first = triplets[triplets[:, 0] == 0]
    pairs = [(value_of[p], value_of[n]) for p, n in first[:, 2:4].tolist()]
    assert set(pairs) == {(1, 2), (2, 1)}
    assert pairs.count((1, 2)) / len(pairs) == pytest.approx(0.75, abs=0.02)
    for _attr, anchor, positive, negative in first[:500].tolist():
        assert value_of[anchor] == value_of[positive] != value_of[negative] and anchor != positive
    other = triplets[triplets[:, 0] == 1]  # None: uniform as before
    vn = np.array([value_of[n] for n in other[:, 3]])
    np.testing.assert_allclose(np.bincount(vn, minlength=6) / len(vn), 1 / 6, atol=0.02)


def test_pair_weights_never_draw_an_invalid_pair() -> None:
    # value 1 has one image: a negative only; value 2 has none; the diagonal is never a pair
    labels = _tagged([(0, 0, 0), (1, 0, 0), (2, 0, 1), (3, 0, 3), (4, 0, 3)])
    triplets = TripletSampler(labels, [4], seed=2).sample(2000, pair_weights=[np.ones((4, 4))])
    value_of = {f: v for f, _, v in [(0, 0, 0), (1, 0, 0), (2, 0, 1), (3, 0, 3), (4, 0, 3)]}
    pairs = {(value_of[p], value_of[n]) for p, n in triplets[:, 2:4].tolist()}
    assert pairs == {(0, 1), (0, 3), (3, 0), (3, 1)}
    only_invalid = np.zeros((4, 4))
    only_invalid[2, 1] = only_invalid[0, 0] = 5.0  # no weight on a valid pair: uniform over the valid ones
    triplets = TripletSampler(labels, [4], seed=2).sample(2000, pair_weights=[only_invalid])
    assert {(value_of[p], value_of[n]) for p, n in triplets[:, 2:4].tolist()} == pairs


def test_pair_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="pair weights"):
        TripletSampler(_random_labels(), [4, 6, 3], seed=0).sample(
            100, pair_weights=[np.ones((3, 3)), None, None]
        )
    with pytest.raises(ValueError, match="pair weights"):
        TripletSampler(_random_labels(), [4, 6, 3], seed=0).sample(
            100, pair_weights=[-np.ones((4, 4)), None, None]
        )

"""Copy search (index/copies.py) on every engine: exactly the brute-force copy scores, top k and
threshold, with filters and excluded ids, with the top-k pool forced to grow."""

from __future__ import annotations

import numpy as np
import pytest

from asen_search.copy_score import copy_scores, kept_count
from asen_search.index import copies
from asen_search.index.copies import CopyRule, search_copies
from tests.helpers.engines import ATTRIBUTES, DIM, Make, clustered, unit

IDS = [f"item-{i}" for i in range(150)] + ["café-ü", "东京-裙", "quote'\"-\\x", "emoji-👗"]


def _fill(make: Make, seed: int = 3) -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = clustered(rng, len(IDS))
    catalogue = make()
    metadata = [{"shop": ["a", "b"][i % 2], "i": i} for i in range(len(IDS))]
    catalogue.add(IDS, vectors, metadata)
    return catalogue, vectors


def _brute(
    vectors: np.ndarray, design: np.ndarray, kept: int, mask: np.ndarray | None = None
) -> list[tuple[str, float]]:
    scores = np.einsum("nad,ad->na", vectors.astype(np.float64), design.astype(np.float64))
    totals = copy_scores(scores, kept)
    rows = [(IDS[i], float(totals[i])) for i in range(len(IDS)) if mask is None or mask[i]]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def _design(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy-like design: item 7 with one attribute replaced and a little noise."""
    design = vectors[7].copy()
    design[1] = unit(rng.standard_normal(DIM))
    return unit(design + 0.05 * rng.standard_normal(design.shape))


def test_copy_scores_is_the_mean_of_the_best_kept() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.4]])
    assert np.allclose(copy_scores(scores, 2), [0.7, 0.35])
    assert np.allclose(copy_scores(scores, 3), scores.mean(axis=1))
    assert kept_count(7, 2) == 5 and kept_count(2, 5) == 1
    with pytest.raises(ValueError):
        copy_scores(scores, 0)
    with pytest.raises(ValueError):
        kept_count(7, -1)


@pytest.mark.parametrize("modified", [0, 1, 2])
def test_top_k_equals_brute_force(make: Make, modified: int, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue, vectors = _fill(make)
    design = _design(vectors, np.random.default_rng(modified))
    rule = CopyRule(tuple(ATTRIBUTES), modified)
    monkeypatch.setattr(copies, "FIRST_POOL", 4)  # small pools: the bound must make the search grow
    answer = search_copies(catalogue, dict(zip(ATTRIBUTES, design)), rule, top_k=12)
    expected = _brute(vectors, design, rule.kept)[:12]
    assert [h.id for h in answer.hits] == [i for i, _ in expected]
    assert np.allclose([h.score for h in answer.hits], [s for _, s in expected], atol=1e-5)
    for hit in answer.hits:
        row = IDS.index(hit.id)
        assert set(hit.scores) == set(ATTRIBUTES)
        assert np.allclose(
            [hit.scores[a] for a in ATTRIBUTES], np.einsum("ad,ad->a", vectors[row], design), atol=1e-5
        )
    assert answer.hits[0].id == "item-7"


def test_paging_with_offset_gives_the_next_items(make: Make) -> None:
    catalogue, vectors = _fill(make)
    design = _design(vectors, np.random.default_rng(5))
    rule = CopyRule(tuple(ATTRIBUTES), 1)
    whole = search_copies(catalogue, dict(zip(ATTRIBUTES, design)), rule, top_k=20).hits
    page = search_copies(catalogue, dict(zip(ATTRIBUTES, design)), rule, top_k=10, offset=10).hits
    assert [h.id for h in page] == [h.id for h in whole[10:]]


def test_threshold_returns_exactly_the_items_passing(make: Make) -> None:
    catalogue, vectors = _fill(make)
    design = _design(vectors, np.random.default_rng(9))
    rule = CopyRule(tuple(ATTRIBUTES), 1)
    expected = _brute(vectors, design, rule.kept)
    threshold = expected[15][1] - 1e-4  # about 16 pass
    answer = search_copies(
        catalogue, dict(zip(ATTRIBUTES, design)), rule, min_score=threshold, max_results=100
    )
    passing = [i for i, s in expected if s >= threshold]
    assert [h.id for h in answer.hits] == passing and not answer.truncated
    cut = search_copies(catalogue, dict(zip(ATTRIBUTES, design)), rule, min_score=threshold, max_results=5)
    assert [h.id for h in cut.hits] == passing[:5] and cut.truncated


def test_filters_and_exclusions_hold(make: Make) -> None:
    catalogue, vectors = _fill(make)
    design = _design(vectors, np.random.default_rng(11))
    rule = CopyRule(tuple(ATTRIBUTES), 2)
    answer = search_copies(
        catalogue,
        dict(zip(ATTRIBUTES, design)),
        rule,
        top_k=10,
        filters={"shop": "b"},
        exclude=["item-7", "café-ü"],
    )
    mask = np.array([i % 2 == 1 and IDS[i] not in ("item-7", "café-ü") for i in range(len(IDS))])
    assert [h.id for h in answer.hits] == [i for i, _ in _brute(vectors, design, rule.kept, mask)[:10]]


def test_ids_in_any_script_are_found_and_judged(make: Make) -> None:
    catalogue, vectors = _fill(make)
    for target in ("东京-裙", "quote'\"-\\x", "emoji-👗"):
        design = vectors[IDS.index(target)].copy()
        design[2] = -design[2]  # the third attribute changed
        rule = CopyRule(tuple(ATTRIBUTES), 1, {a: 0.5 for a in ATTRIBUTES})
        hit = search_copies(catalogue, dict(zip(ATTRIBUTES, design)), rule, top_k=1).hits[0]
        assert hit.id == target and hit.score == pytest.approx(1.0, abs=1e-5)
        assert hit.modified == ["neckline"]


def test_bad_calls_are_refused(make: Make) -> None:
    catalogue, vectors = _fill(make)
    rule = CopyRule(tuple(ATTRIBUTES), 1)
    with pytest.raises(ValueError, match="no query vector"):
        search_copies(catalogue, {"colour": vectors[0, 0]}, rule, top_k=3)
    with pytest.raises(ValueError, match="top_k or min_score"):
        search_copies(catalogue, dict(zip(ATTRIBUTES, vectors[0])), rule)


def test_the_pool_grows_until_no_unseen_item_can_beat_the_kth(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items that match the design strongly under one attribute fill every attribute's first pool;
    the true best copies match moderately under all three and are only found by growing the pool."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].T.astype(np.float32)  # orthonormal rows
    design = np.stack([basis[0], basis[1], basis[2]])  # one axis per attribute
    spiky, balanced = [], []
    for a in range(3):
        for j in range(40):  # score 1 under attribute a, 0 under the others
            v = np.stack([basis[3 + (j % 20)]] * 3)
            v[a] = basis[a]
            spiky.append(v)
    for j in range(10):  # score 0.6 - j/100 under every attribute
        s = 0.6 - j / 100
        balanced.append(np.stack([s * basis[a] + np.sqrt(1 - s * s) * basis[10 + a] for a in range(3)]))
    vectors = np.stack(spiky + balanced).astype(np.float32)
    ids = [f"s{i}" for i in range(len(spiky))] + [f"b{j}" for j in range(len(balanced))]
    catalogue = make()
    catalogue.add(ids, vectors)
    monkeypatch.setattr(copies, "FIRST_POOL", 1)
    answer = search_copies(catalogue, dict(zip(ATTRIBUTES, design)), CopyRule(tuple(ATTRIBUTES), 0), top_k=5)
    assert [h.id for h in answer.hits] == ["b0", "b1", "b2", "b3", "b4"]
    assert answer.scored > 15  # it had to look past the first pools

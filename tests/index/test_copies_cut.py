"""Copy search (index/copies.py) where a threshold search's per-attribute range list is cut at its cap,
and on an empty catalogue, on every engine: still exactly the brute-force answer."""

from __future__ import annotations

import numpy as np

from asen_search.copy_score import copy_scores
from asen_search.index.copies import CopyRule, search_copies
from tests.helpers.engines import ATTRIBUTES, DIM, Make, unit


def _at(rng: np.random.Generator, direction: np.ndarray, score: float) -> np.ndarray:
    """A unit vector whose cosine with the unit `direction` is `score`."""
    other = rng.standard_normal(DIM)
    other = unit(other - (other @ direction) * direction)
    return unit(score * direction + np.sqrt(1 - score * score) * other)


def test_a_cut_range_list_still_gives_the_best_copies_that_pass(make: Make) -> None:
    """50 items score high under the first attribute, the higher the less they copy the rest: the first
    attribute's range list, cut at its cap, holds only the worst copies. The best ones must still come
    first, as brute force ranks them, and the page must say more pass."""
    rng = np.random.default_rng(0)
    design = unit(rng.standard_normal((len(ATTRIBUTES), DIM)))
    ids = [f"item-{i}" for i in range(60)]
    vectors = unit(rng.standard_normal((len(ids), len(ATTRIBUTES), DIM)))
    for i in range(50):
        vectors[i] = [
            _at(rng, design[0], 0.95 - 0.001 * i),
            _at(rng, design[1], 0.01 * i),
            _at(rng, design[2], -0.5),
        ]
    catalogue = make()
    catalogue.add(ids, vectors)
    rule = CopyRule(tuple(ATTRIBUTES), 1)
    totals = copy_scores(
        np.einsum("nad,ad->na", vectors.astype(np.float64), design.astype(np.float64)), rule.kept
    )
    passing = sorted((i for i in range(len(ids)) if totals[i] >= 0.55), key=lambda i: (-totals[i], ids[i]))
    assert len(passing) > 20
    queries = dict(zip(ATTRIBUTES, design))
    for offset in (0, 2, 6):
        answer = search_copies(catalogue, queries, rule, min_score=0.55, max_results=2, offset=offset)
        assert [h.id for h in answer.hits] == [ids[i] for i in passing[offset : offset + 2]]
        assert answer.truncated and answer.total is None
    whole = search_copies(catalogue, queries, rule, min_score=0.55, max_results=100)
    assert [h.id for h in whole.hits] == [ids[i] for i in passing]
    assert not whole.truncated and whole.total == len(passing)


def test_an_empty_catalogue_has_no_copies(make: Make) -> None:
    catalogue = make()
    queries = dict(zip(ATTRIBUTES, unit(np.ones((len(ATTRIBUTES), DIM)))))
    rule = CopyRule(tuple(ATTRIBUTES), 1)
    assert search_copies(catalogue, queries, rule, top_k=5).hits == []
    answer = search_copies(catalogue, queries, rule, min_score=0.1)
    assert answer.hits == [] and not answer.truncated and answer.total == 0

"""Filtered search goes through FAISS id selectors (pre-filtering), never a post-filter."""

from __future__ import annotations

import functools

import faiss
import numpy as np
import pytest

from asen_search.index import FaissCatalogue
from tests.helpers.engines import ATTRIBUTES, DIM, FINGERPRINT, make_catalogue, unit

FACTORIES = ["Flat", "HNSW16", "IVF8,Flat"]


def rare_far_catalogue(factory: str) -> tuple[FaissCatalogue, np.ndarray, np.ndarray]:
    """600 'common' items near the query and 30 'rare' ones pointing away from it."""
    rng = np.random.default_rng(7)
    query = unit(rng.standard_normal(DIM))
    common = unit(query + 0.6 * rng.standard_normal((600, len(ATTRIBUTES), DIM)))
    rare = unit(-query + 0.6 * rng.standard_normal((30, len(ATTRIBUTES), DIM)))
    vectors = np.concatenate([common, rare])
    metadata = [{"category": "common"}] * 600 + [{"category": "rare"}] * 30
    catalogue = FaissCatalogue.create(ATTRIBUTES, DIM, FINGERPRINT, factory)
    catalogue.add([f"item-{i}" for i in range(630)], vectors, metadata)
    return catalogue, vectors, query


@pytest.mark.parametrize("factory", FACTORIES)
def test_filter_finds_k_matches_far_beyond_the_unfiltered_top_k(factory: str) -> None:
    catalogue, vectors, query = rare_far_catalogue(factory)
    unfiltered = catalogue.search(query, "colour", 100)
    assert all(r.metadata["category"] == "common" for r in unfiltered)  # no rare item near the top
    results = catalogue.search(query, "colour", 10, filters={"category": "rare"})
    scores = vectors[600:, 0] @ query
    expected = [f"item-{600 + i}" for i in np.argsort(-scores)[:10]]
    assert [r.id for r in results] == expected
    assert all(r.metadata["category"] == "rare" for r in results)


def test_flat_filter_is_a_faiss_bitmap_selector(monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue, _, query = rare_far_catalogue("Flat")
    made: list[int] = []
    real = faiss.IDSelectorBitmap

    def spy(bitmap: np.ndarray) -> faiss.IDSelector:
        made.append(int(np.unpackbits(bitmap).sum()))
        return real(bitmap)

    monkeypatch.setattr(faiss, "IDSelectorBitmap", spy)
    assert len(catalogue.search(query, "colour", 5, filters={"category": "rare"})) == 5
    assert made == [30]


@pytest.mark.parametrize(("factory", "knobs"), [("HNSW16", {"ef_search": 128}), ("IVF8,Flat", {"nprobe": 8})])
def test_approximate_indexes_filter_inside_faiss_too(factory: str, knobs: dict[str, int]) -> None:
    catalogue, vectors, _ = make_catalogue(900, factory)
    catalogue.set_search_params(**knobs)
    catalogue.set_exact_filter_max(0)  # force the FAISS selector path
    rng = np.random.default_rng(3)
    allowed = {"shirt", "coat"}
    hits = 0
    for query in vectors[rng.choice(900, 20, replace=False), 0]:
        results = catalogue.search(query, "colour", 10, filters={"category": sorted(allowed)})
        assert len(results) == 10 and all(r.metadata["category"] in allowed for r in results)
        scores = np.where([i % 3 != 1 for i in range(900)], vectors[:, 0] @ query, -np.inf)
        hits += len({f"item-{i}" for i in np.argsort(-scores)[:10]} & {r.id for r in results})
    assert hits / 200 >= 0.9


@pytest.mark.parametrize("factory", FACTORIES)
def test_exclude_removes_ids_from_results(factory: str) -> None:
    catalogue, vectors, _ = make_catalogue(300, factory)
    first = catalogue.search(vectors[4, 0], "colour", 5)
    assert first[0].id == "item-4"
    excluded = catalogue.search(vectors[4, 0], "colour", 5, exclude=["item-4", "not-an-item"])
    assert "item-4" not in {r.id for r in excluded} and len(excluded) == 5
    both = catalogue.search(vectors[4, 0], "colour", 5, filters={"category": "coat"}, exclude=["item-4"])
    assert both and all(r.id != "item-4" and r.metadata["category"] == "coat" for r in both)


def test_filters_must_be_a_mapping_of_scalars() -> None:
    catalogue, _, _ = make_catalogue(10)
    with pytest.raises(ValueError, match="filters must be a JSON object"):
        catalogue.search(np.ones(DIM, np.float32), "colour", 3, filters=["category"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="values are str, number, bool or null"):
        catalogue.search(np.ones(DIM, np.float32), "colour", 3, filters={"category": [{"x": 1}]})  # type: ignore[list-item]


@functools.lru_cache(maxsize=3)  # built once per kind for this module's 100k tests (none writes to it)
def _large_catalogue(factory: str, n: int = 100_000) -> tuple[FaissCatalogue, np.ndarray]:
    """`n` clustered items; `shard` = i % 1000, so one shard is 0.1% of the catalogue."""
    from tests.helpers.engines import clustered

    vectors = clustered(np.random.default_rng(11), n)
    catalogue = FaissCatalogue.create(ATTRIBUTES, DIM, FINGERPRINT, factory)
    for lo in range(0, n, 20_000):
        catalogue.add(
            [f"item-{i}" for i in range(lo, lo + 20_000)],
            vectors[lo : lo + 20_000],
            [{"shard": i % 1000} for i in range(lo, lo + 20_000)],
        )
    return catalogue, vectors


@pytest.mark.parametrize("factory", ["Flat", pytest.param("HNSW16", marks=pytest.mark.slow), "IVF256,Flat"])
def test_a_filter_matching_a_tenth_of_a_percent_of_100k_items_returns_k_exact_results(factory: str) -> None:
    """min(k, matches) results, the exact best of the matching items, for every index kind: also
    when the approximate search alone finds too few (exact_filter_max 0 sends the filter through
    the graph / the probed lists, which hold about 1 match in 1000 each; the shortfall is then
    answered exactly)."""
    catalogue, vectors = _large_catalogue(factory)
    rng = np.random.default_rng(5)
    shard = np.arange(len(vectors)) % 1000 == 7
    for exact_filter_max in (20_000, 0):
        if factory != "Flat":
            catalogue.set_exact_filter_max(exact_filter_max)
        for query in unit(rng.standard_normal((5, DIM))):
            results = catalogue.search(query, "sleeve", 10, filters={"shard": 7})
            scores = np.where(shard, vectors[:, 1] @ query, -np.inf)
            assert [r.id for r in results] == [f"item-{i}" for i in np.argsort(-scores)[:10]]
        few = catalogue.search(unit(rng.standard_normal(DIM)), "sleeve", 500, filters={"shard": 7})
        assert len(few) == 100  # min(k, matches): every match, once


@pytest.mark.parametrize(("factory", "knobs"), [("Flat", {}), ("HNSW16", {}), ("IVF256,Flat", {"nprobe": 4})])
def test_a_threshold_search_over_100k_items_finds_exactly_the_items_above_it(
    factory: str, knobs: dict
) -> None:
    """Every item at or above the threshold, best first, whatever the index kind (approximate kinds
    of this size are scanned exactly: a graph or a few probed lists would miss some), with a filter too."""
    catalogue, vectors = _large_catalogue(factory)
    if knobs:
        catalogue.set_search_params(**knobs)
    rng = np.random.default_rng(9)
    shard = np.arange(len(vectors)) % 1000
    for wanted in (20, 300, 1500):
        query = vectors[rng.integers(len(vectors)), 2]
        scores = vectors[:, 2] @ query
        ordered = np.sort(scores)[::-1]
        threshold = float((ordered[wanted - 1] + ordered[wanted]) / 2)
        hits, truncated = catalogue.search_range(query, "neckline", threshold, 5000)
        expected = [f"item-{i}" for i in np.argsort(-scores, kind="stable")[:wanted]]
        _same_ranking(hits, expected, scores)
        assert not truncated
        hits, _ = catalogue.search_range(query, "neckline", threshold, 5000, filters={"shard": [1, 2, 3]})
        _same_ranking(hits, [i for i in expected if shard[int(i.split("-")[1])] in (1, 2, 3)], scores)


def _same_ranking(hits: list, expected: list[str], scores: np.ndarray) -> None:
    """The same items, best first; two whose scores differ by float rounding alone (FAISS's kernel
    and numpy's) may swap places."""
    assert sorted(h.id for h in hits) == sorted(expected)
    got = np.array([h.score for h in hits])
    assert np.all(np.diff(got) <= 0)
    np.testing.assert_allclose(got, scores[[int(i.split("-")[1]) for i in expected]], atol=1e-5)

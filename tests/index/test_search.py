"""Exact search equals brute force; approximate indexes reach recall@10 >= 0.9 vs exact."""

from __future__ import annotations

import numpy as np
import pytest

from asen_search.index import FaissCatalogue, SearchResult
from tests.helpers.engines import ATTRIBUTES, DIM, make_catalogue, unit


def brute_force(vectors: np.ndarray, attr: int, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = vectors[:, attr] @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


def recall_at_10(catalogue: FaissCatalogue, vectors: np.ndarray, queries: np.ndarray) -> float:
    hits = 0
    for query, results in zip(queries, catalogue.search(queries, "sleeve", 10), strict=True):
        exact, _ = brute_force(vectors, 1, query, 10)
        hits += len({f"item-{i}" for i in exact} & {r.id for r in results})
    return hits / (10 * len(queries))


def near_items(vectors: np.ndarray, rng: np.random.Generator, n: int = 40) -> np.ndarray:
    """In-distribution queries ``[n, dim]`` for the "sleeve" attribute: perturbed items."""
    picked = vectors[rng.choice(len(vectors), n, replace=False), 1]
    return unit(picked + 0.3 * rng.standard_normal(picked.shape))


def test_flat_equals_brute_force(rng: np.random.Generator) -> None:
    catalogue, vectors, _ = make_catalogue(500)
    for query in unit(rng.standard_normal((5, DIM))):
        results = catalogue.search(query, "colour", 10)
        order, scores = brute_force(vectors, 0, query, 10)
        assert [r.id for r in results] == [f"item-{i}" for i in order]
        np.testing.assert_allclose([r.score for r in results], scores, rtol=1e-5, atol=1e-6)
        assert all(isinstance(r, SearchResult) for r in results)
        assert results[0].metadata == {
            "category": ["shirt", "dress", "coat"][order[0] % 3],
            "i": int(order[0]),
        }


def test_batch_queries_return_one_list_per_query(rng: np.random.Generator) -> None:
    catalogue, _, _ = make_catalogue(100)
    queries = unit(rng.standard_normal((3, DIM)))
    batch = catalogue.search(queries, "neckline", 4)
    assert len(batch) == 3 and all(len(row) == 4 for row in batch)
    assert [r.id for r in batch[1]] == [r.id for r in catalogue.search(queries[1], "neckline", 4)]
    for row in batch:
        assert [r.score for r in row] == sorted((r.score for r in row), reverse=True)


def test_k_larger_than_catalogue_returns_everything_once() -> None:
    catalogue, _, ids = make_catalogue(12)
    results = catalogue.search(np.ones(DIM, np.float32) / DIM**0.5, "colour", 50)
    assert sorted(r.id for r in results) == sorted(ids)


def test_empty_catalogue_returns_no_results() -> None:
    catalogue = FaissCatalogue.create(ATTRIBUTES, DIM, "fp")
    assert catalogue.search(np.ones(DIM, np.float32), "colour", 5) == []


@pytest.mark.parametrize(
    ("factory", "knobs"), [("HNSW16", {"ef_search": 128}), ("IVF16,Flat", {"nprobe": 6})]
)
def test_approximate_recall_vs_exact(factory: str, knobs: dict[str, int], rng: np.random.Generator) -> None:
    catalogue, vectors, _ = make_catalogue(3000, factory)
    catalogue.set_search_params(**knobs)
    assert catalogue.search_params()[next(iter(knobs))] == next(iter(knobs.values()))
    queries = near_items(vectors, rng)
    assert recall_at_10(catalogue, vectors, queries) >= 0.9


def test_search_knobs_change_approximate_results(rng: np.random.Generator) -> None:
    catalogue, vectors, _ = make_catalogue(3000, "IVF32,Flat")
    queries = near_items(vectors, rng)
    catalogue.set_search_params(nprobe=1)
    low = recall_at_10(catalogue, vectors, queries)
    catalogue.set_search_params(nprobe=32)
    assert recall_at_10(catalogue, vectors, queries) == 1.0 > low


def test_knob_that_does_not_apply_is_rejected() -> None:
    catalogue, _, _ = make_catalogue(10)
    with pytest.raises(ValueError, match="ef_search applies to HNSW"):
        catalogue.set_search_params(ef_search=32)
    with pytest.raises(ValueError, match="positive"):
        make_catalogue(10, "HNSW8")[0].set_search_params(ef_search=0)


def test_unknown_attribute_lists_the_known_ones() -> None:
    catalogue, _, _ = make_catalogue(10)
    with pytest.raises(KeyError, match="known attributes: \\['colour', 'sleeve', 'neckline'\\]"):
        catalogue.search(np.ones(DIM, np.float32), "pattern", 3)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (np.ones(DIM + 1, np.float32), "shape"),
        (np.ones((2, 3, DIM), np.float32), "shape"),
        (np.full(DIM, np.nan, np.float32), "NaN"),
        (np.ones(DIM, np.int64), "floating"),
    ],
)
def test_bad_queries_are_value_errors(query: np.ndarray, message: str) -> None:
    catalogue, _, _ = make_catalogue(10)
    with pytest.raises(ValueError, match=message):
        catalogue.search(query, "colour", 3)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_a_value_error(k: object) -> None:
    catalogue, _, _ = make_catalogue(10)
    with pytest.raises(ValueError, match="k must be"):
        catalogue.search(np.ones(DIM, np.float32), "colour", k)  # type: ignore[arg-type]


def test_unsupported_or_invalid_factory() -> None:
    with pytest.raises(ValueError, match="invalid FAISS factory"):
        FaissCatalogue.create(ATTRIBUTES, DIM, "fp", "NoSuchIndex12")
    with pytest.raises(ValueError, match="unsupported FAISS factory"):
        FaissCatalogue.create(ATTRIBUTES, DIM, "fp", "PQ8")


def test_flat_scan_equals_faiss_own_search(rng: np.random.Generator) -> None:
    """The Flat scan (one BLAS product over the stored vectors, index/attribute_index.py) against
    FAISS's IndexFlatIP on the same vectors: single and batched queries (more than one chunk),
    excluded keys, removed items, k beyond the catalogue."""
    import faiss

    from asen_search.index.attribute_index import SCAN_QUERY_CHUNK, AttributeIndex

    index = AttributeIndex.create(DIM, "Flat")
    vectors = unit(rng.standard_normal((3000, DIM))).astype(np.float32)
    keys = np.arange(3000, dtype=np.int64) * 3 + 7
    index.add(keys, vectors)
    removed = keys[::5]
    index.remove(removed)
    live = np.setdiff1d(keys, removed)
    reference = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    reference.add_with_ids(vectors[np.isin(keys, live)], live)
    queries = unit(rng.standard_normal((2 * SCAN_QUERY_CHUNK + 3, DIM))).astype(np.float32)
    for batch in (queries[:1], queries):
        for k in (1, 10, 5000):
            got_scores, got_keys = index.search(batch, k)
            want_scores, want_keys = reference.search(batch, k)
            found = want_keys >= 0  # FAISS pads with -FLT_MAX, this package with -inf
            np.testing.assert_allclose(got_scores[found], want_scores[found], rtol=1e-5, atol=1e-6)
            assert (got_scores[~found] == -np.inf).all() and (got_keys[~found] == -1).all()
            # the same keys in the same order, except two keys whose scores tie to float32 rounding
            # (a BLAS product and FAISS's own loop sum in different orders)
            rows, ranks = np.nonzero(got_keys != want_keys)
            assert np.abs(got_scores[rows, ranks] - want_scores[rows, ranks]).max(initial=0) < 1e-6
            assert (got_keys != want_keys).mean() < 0.01
            for row in range(len(batch)):
                assert set(got_keys[row][found[row]]) == set(want_keys[row][found[row]]) or k < len(live)
    excluded = reference.search(queries[:1], 3)[1][0][[0, 2]]  # the best and the third best
    got_scores, got_keys = index.search(queries[:1], 10, excluded=excluded)
    want_keys = [key for key in reference.search(queries[:1], 12)[1][0] if key not in excluded][:10]
    assert got_keys[0].tolist() == want_keys and not np.isin(excluded, got_keys).any()

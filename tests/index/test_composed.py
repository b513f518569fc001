"""Composed queries (index/composed.py, FaissCatalogue.search_composed) against a numpy brute-force
weighted sum: the exact path (Flat, or no positive part), filters, exclusions, negative weights, the
candidate path with every item a candidate, and check_parts' refusals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from asen_search.index import FaissCatalogue, Part, SearchResult
from asen_search.index.composed_parts import check_parts

ATTRIBUTES = ["colour", "sleeve", "neckline"]
DIM = 16
N = 3000
K = 10


def unit(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return unit(np.random.default_rng(7).standard_normal((N, len(ATTRIBUTES), DIM)))


@pytest.fixture(scope="module", params=["Flat", "HNSW16"])
def catalogue(request: pytest.FixtureRequest, vectors: np.ndarray) -> FaissCatalogue:
    catalogue = FaissCatalogue.create(ATTRIBUTES, DIM, "model-composed", request.param)
    catalogue.add([f"item-{i}" for i in range(N)], vectors, [{"f": i % 5, "g": i % 10} for i in range(N)])
    return catalogue


def brute_force(
    vectors: np.ndarray,
    parts: Sequence[Part],
    k: int,
    allowed: Sequence[int] | None = None,
    exclude: Sequence[int] = (),
) -> tuple[list[str], np.ndarray]:
    """Ids and scores of the top `k` items by the weighted sum, best first (ties by row)."""
    total = np.zeros(len(vectors), dtype=np.float64)
    for part in parts:
        total += part.weight * (vectors[:, ATTRIBUTES.index(part.attribute)] @ part.vector).astype(np.float64)
    if allowed is not None:
        total[np.setdiff1d(np.arange(len(vectors)), allowed)] = -np.inf
    total[list(exclude)] = -np.inf
    order = np.argsort(-total, kind="stable")[: min(k, int(np.isfinite(total).sum()))]
    return [f"item-{i}" for i in order], total[order]


def assert_same(hits: Sequence[SearchResult], expected: tuple[list[str], np.ndarray], name: str = "") -> None:
    ids, scores = expected
    assert [h.id for h in hits] == ids, name
    np.testing.assert_allclose([h.score for h in hits], scores, rtol=0, atol=1e-5, err_msg=name)


def queries(vectors: np.ndarray) -> list[tuple[str, list[Part]]]:
    rng = np.random.default_rng(11)
    random = unit(rng.standard_normal((3, DIM)))
    return [
        ("one positive", [Part("colour", vectors[5, 0], 1.0)]),
        (
            "item, a negative weight",
            [Part("colour", vectors[5, 0], 0.7), Part("sleeve", vectors[5, 1], -0.4)],
        ),
        (
            "mixed sources, three parts",
            [
                Part("colour", random[0], 0.3),
                Part("sleeve", vectors[99, 1], -1.0),
                Part("neckline", random[1], 0.9),
            ],
        ),
        ("a zero weight", [Part("colour", random[2], 0.5), Part("neckline", vectors[8, 2], 0.0)]),
        ("all negative", [Part("sleeve", vectors[42, 1], -0.6), Part("neckline", random[2], -0.2)]),
    ]


def test_exact_path_equals_brute_force(catalogue: FaissCatalogue, vectors: np.ndarray) -> None:
    """Flat: every query; HNSW: the all-negative one (no positive part: an exact scan there too)."""
    for name, parts in queries(vectors):
        if catalogue.factory != "Flat" and any(p.weight > 0 for p in parts):
            continue
        assert_same(catalogue.search_composed(parts, K), brute_force(vectors, parts, K), name)


def test_exact_path_with_filters_and_exclude(catalogue: FaissCatalogue, vectors: np.ndarray) -> None:
    allowed = [i for i in range(N) if i % 5 in (1, 3)]
    for name, parts in queries(vectors):
        if catalogue.factory != "Flat" and any(p.weight > 0 for p in parts):
            continue
        top = brute_force(vectors, parts, 3, allowed)[0]
        excluded = [int(i.split("-")[1]) for i in top[:2]] + [5, 42]
        hits = catalogue.search_composed(
            parts, K, filters={"f": [1, 3]}, exclude=[f"item-{i}" for i in excluded]
        )
        assert_same(hits, brute_force(vectors, parts, K, allowed, excluded), name)
        assert all(h.metadata["f"] in (1, 3) for h in hits)
        assert_same(
            catalogue.search_composed(parts, K, filters={"f": 2}),
            brute_force(vectors, parts, K, [i for i in range(N) if i % 5 == 2]),
            name,
        )
        # a tenth of the items: scored from their stored vectors rather than a scan of all of them
        assert_same(
            catalogue.search_composed(parts, K, filters={"g": 0}, exclude=["item-10"]),
            brute_force(vectors, parts, K, list(range(0, N, 10)), [10]),
            name,
        )


def test_candidate_path_with_every_item_a_candidate(catalogue: FaissCatalogue, vectors: np.ndarray) -> None:
    """per_part >= the catalogue: each positive part's search returns every item, so the rescoring is
    exact (on HNSW as on Flat), negative parts included. HNSW returns about as many items as its
    search visits, which efSearch bounds (16 by default: a few hundred here), so it is raised to N."""
    before = catalogue.search_params().get("ef_search")
    if before is not None:
        catalogue.set_search_params(ef_search=N)
    try:
        for name, parts in queries(vectors):
            if not any(p.weight > 0 for p in parts):
                continue
            assert_same(catalogue.search_composed(parts, K, per_part=N), brute_force(vectors, parts, K), name)
            excluded = [5, 99, *[int(i.split("-")[1]) for i in brute_force(vectors, parts, 2)[0]]]
            allowed = [i for i in range(N) if i % 5 != 0]
            hits = catalogue.search_composed(
                parts, K, filters={"f": [1, 2, 3, 4]}, per_part=N, exclude=[f"item-{i}" for i in excluded]
            )
            assert_same(hits, brute_force(vectors, parts, K, allowed, excluded), name)
    finally:
        if before is not None:
            catalogue.set_search_params(ef_search=before)


def test_k_beyond_the_matches(catalogue: FaissCatalogue, vectors: np.ndarray) -> None:
    parts = [Part("colour", vectors[0, 0], -1.0)]
    allowed = list(range(4, N, 5))[:3]
    hits = catalogue.search_composed(
        parts, K, exclude=[f"item-{i}" for i in range(4, N, 5)[3:]], filters={"f": 4}
    )
    assert_same(hits, brute_force(vectors, parts, K, allowed))
    assert len(hits) == 3


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([Part("fit", np.ones(DIM), 1.0)], "unknown attribute 'fit'"),
        ([Part("colour", np.ones(DIM), 1.0), Part("colour", np.ones(DIM), -0.5)], "appears in two parts"),
        ([Part("colour", np.ones(DIM), 1.5)], "weight must be a number in"),
        ([Part("colour", np.ones(DIM), -1.01)], "weight must be a number in"),
        ([Part("colour", np.ones(DIM), 0.0), Part("sleeve", np.ones(DIM), 0.0)], "every part has weight 0"),
        ([], "at least one part"),
        ([Part("colour", np.ones(DIM + 1), 1.0)], f"must be {DIM} finite numbers"),
    ],
)
def test_check_parts_refuses(parts: list[Part], message: str, catalogue: FaissCatalogue) -> None:
    with pytest.raises(ValueError, match=message):
        check_parts(parts, ATTRIBUTES, DIM)
    with pytest.raises(ValueError, match=message):
        catalogue.search_composed(parts, K)


def test_check_parts_accepts_the_bounds() -> None:
    parts = check_parts(
        [Part("colour", np.ones(DIM, dtype=np.float64), -1), Part("sleeve", np.ones(DIM), 1.0)],
        ATTRIBUTES,
        DIM,
    )
    assert [(p.weight, p.vector.dtype) for p in parts] == [(-1.0, np.float32), (1.0, np.float32)]

"""add / upsert / remove without a rebuild, reconstruction by id, training rules."""

from __future__ import annotations

import numpy as np
import pytest

from asen_search.index import FaissCatalogue
from tests.helpers.engines import ATTRIBUTES, DIM, FINGERPRINT, clustered, make_catalogue, unit

FACTORIES = ["Flat", "HNSW16", "IVF8,Flat"]


@pytest.mark.parametrize("factory", FACTORIES)
def test_removed_items_are_never_returned(factory: str) -> None:
    catalogue, vectors, ids = make_catalogue(400, factory)
    gone = ids[:50]
    result = catalogue.remove([*gone, "never-there"])
    assert result.removed == gone and result.unknown == ["never-there"]
    assert len(catalogue) == 350 and "item-0" not in catalogue
    for i in range(50):  # each removed item's own vector is the best possible query for it
        returned = {r.id for r in catalogue.search(vectors[i, 0], "colour", 20)}
        assert not returned & set(gone)
    everything = catalogue.search(vectors[:5, 2], "neckline", 400)
    assert not {r.id for row in everything for r in row} & set(gone)
    if factory == "Flat":  # approximate indexes may return fewer than k
        assert all(len(row) == 350 for row in everything)


@pytest.mark.parametrize("factory", FACTORIES)
def test_upsert_replaces_vectors_and_keeps_metadata(factory: str, rng: np.random.Generator) -> None:
    catalogue, vectors, _ = make_catalogue(300, factory)
    new = unit(rng.standard_normal((1, len(ATTRIBUTES), DIM)))
    catalogue.upsert(["item-7", "brand-new"], np.concatenate([new, new]))
    assert len(catalogue) == 301
    np.testing.assert_allclose(catalogue.vector("item-7", "sleeve"), new[0, 1], atol=1e-6)
    assert catalogue.get("item-7").metadata == {"category": "dress", "i": 7}
    assert catalogue.get("brand-new").metadata == {}
    hits = [r.id for r in catalogue.search(vectors[7, 0], "colour", 300)]
    assert hits.count("item-7") <= 1  # the old vector is gone, only the new one can match
    top = catalogue.search(new[0, 0], "colour", 2)
    assert {r.id for r in top} == {"item-7", "brand-new"}


def test_add_existing_id_is_rejected_and_changes_nothing() -> None:
    catalogue, vectors, _ = make_catalogue(20)
    with pytest.raises(ValueError, match="use upsert"):
        catalogue.add(["item-3", "fresh"], vectors[:2])
    assert len(catalogue) == 20 and "fresh" not in catalogue


@pytest.mark.parametrize(
    ("ids", "shape", "message"),
    [
        (["a", "a"], (2, 3, DIM), "duplicate"),
        (["a"], (1, 2, DIM), "shape"),
        (["a"], (1, 3, DIM + 1), "shape"),
        (["a", "b"], (1, 3, DIM), "shape"),
        (["bad\x00id"], (1, 3, DIM), "control"),
    ],
)
def test_bad_adds_are_value_errors(ids: list[str], shape: tuple[int, ...], message: str) -> None:
    catalogue = FaissCatalogue.create(ATTRIBUTES, DIM, FINGERPRINT)
    with pytest.raises(ValueError, match=message):
        catalogue.add(ids, np.ones(shape, np.float32))
    assert len(catalogue) == 0


def test_nan_vectors_and_bad_metadata_are_rejected() -> None:
    catalogue = FaissCatalogue.create(ATTRIBUTES, DIM, FINGERPRINT)
    vectors = np.ones((1, 3, DIM), np.float32)
    vectors[0, 1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        catalogue.add(["a"], vectors)
    with pytest.raises(ValueError, match="JSON"):
        catalogue.add(["a"], np.ones((1, 3, DIM), np.float32), [{"when": object()}])
    with pytest.raises(ValueError, match="metadata entries"):
        catalogue.add(["a"], np.ones((1, 3, DIM), np.float32), [{}, {}])


@pytest.mark.parametrize("factory", [*FACTORIES, "IVF8,PQ4"])
def test_reconstruct_and_score_ids(factory: str) -> None:
    catalogue, vectors, _ = make_catalogue(300, factory)
    tolerance = 0.2 if "PQ" in factory else 1e-6
    np.testing.assert_allclose(catalogue.vector("item-42", "neckline"), vectors[42, 2], atol=tolerance)
    query = vectors[5, 1]
    scores = catalogue.score_ids(query, "sleeve", ["item-1", "item-2"])
    np.testing.assert_allclose(
        [scores["item-1"], scores["item-2"]], vectors[[1, 2], 1] @ query, atol=tolerance
    )
    with pytest.raises(KeyError, match="no item"):
        catalogue.score_ids(query, "sleeve", ["item-1", "missing"])
    with pytest.raises(KeyError):
        catalogue.vector("missing", "sleeve")


def test_training_index_needs_a_large_enough_first_batch(rng: np.random.Generator) -> None:
    catalogue = FaissCatalogue.create(ATTRIBUTES, DIM, FINGERPRINT, "IVF64,Flat")
    with pytest.raises(ValueError, match="at least 64 items"):
        catalogue.add([f"x{i}" for i in range(10)], clustered(rng, 10))
    assert len(catalogue) == 0
    catalogue.add([f"x{i}" for i in range(100)], clustered(rng, 100))
    catalogue.add(["late"], clustered(rng, 1))  # later batches of any size
    assert len(catalogue) == 101


def test_compact_purges_hnsw_tombstones_and_keeps_results() -> None:
    catalogue, vectors, ids = make_catalogue(300, "HNSW16")
    catalogue.set_search_params(ef_search=80)
    catalogue.remove(ids[:100])
    before = [r.id for r in catalogue.search(vectors[150, 0], "colour", 10)]
    assert catalogue.compact() == 100
    assert catalogue.compact() == 0
    assert catalogue.search_params()["ef_search"] == 80
    assert [r.id for r in catalogue.search(vectors[150, 0], "colour", 10)] == before
    assert len(catalogue) == 200


def test_ids_and_get() -> None:
    catalogue, _, ids = make_catalogue(5)
    assert catalogue.ids() == ids
    assert catalogue.get("item-2").metadata["category"] == "coat"
    with pytest.raises(KeyError, match="no item .* in the catalogue"):
        catalogue.get("nope")

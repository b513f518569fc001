"""One contract for every catalogue engine: the FAISS directory (`FaissCatalogue`) and Milvus
(`MilvusCatalogue`, on a real Milvus Lite engine in both of its layouts, and with the slow tests on the real
embedded Milvus server), so they cannot drift apart. Every test here runs on each (the `make` fixture,
tests/index/conftest.py); results are compared with a brute-force reference. What users send (every script,
quotes, edge numbers, refused text) and two writers at once: tests/index/test_contract_inputs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asen_search.index import FaissCatalogue, UnknownItem
from tests.helpers.engines import ATTRIBUTES, DIM, FINGERPRINT, Make, clustered


def _filled(make: Make, n: int = 300, seed: int = 0) -> tuple[Any, np.ndarray, list[str]]:
    vectors = clustered(np.random.default_rng(seed), n)
    ids = [f"item-{i}" for i in range(n)]
    catalogue = make()
    catalogue.add(ids, vectors, [{"category": ["shirt", "dress", "coat"][i % 3], "i": i} for i in range(n)])
    return catalogue, vectors, ids


def _brute(
    vectors: np.ndarray,
    ids: list[str],
    query: np.ndarray,
    a: int,
    k: int,
    keep: Callable[[int], bool] = lambda i: True,
) -> tuple[list[str], np.ndarray]:
    scores = vectors[:, a] @ query
    order = [i for i in np.argsort(-scores, kind="stable") if keep(int(i))][:k]
    return [ids[i] for i in order], scores[order]


def test_search_equals_brute_force_ids_order_and_scores(make: Make) -> None:
    catalogue, vectors, ids = _filled(make)
    rng = np.random.default_rng(5)
    for a, attribute in enumerate(ATTRIBUTES):
        query = clustered(rng, 1)[0, a]
        hits = catalogue.search(query, attribute, 20)
        want_ids, want_scores = _brute(vectors, ids, query, a, 20)
        assert [h.id for h in hits] == want_ids
        np.testing.assert_allclose([h.score for h in hits], want_scores, atol=1e-5)
        assert hits[0].metadata == {
            "category": ["shirt", "dress", "coat"][ids.index(hits[0].id) % 3],
            "i": ids.index(hits[0].id),
        }


def test_composed_search_equals_a_brute_force_weighted_sum(make: Make) -> None:
    from asen_search.index import Part

    catalogue, vectors, ids = _filled(make)
    rng = np.random.default_rng(8)
    q = clustered(rng, 1)[0]
    cases = [
        ([(0, 1.0), (1, 0.5)], None, ()),
        ([(0, 0.7), (2, -1.0)], {"category": ["shirt", "coat"]}, ("item-3",)),
        ([(1, -0.6)], None, ()),
    ]  # no positive part: every item scanned
    for weights, filters, exclude in cases:
        parts = [Part(ATTRIBUTES[a], q[a], w) for a, w in weights]
        total = sum(w * (vectors[:, a].astype(np.float64) @ q[a]) for a, w in weights)
        keep = [
            i
            for i in np.argsort(-total, kind="stable")
            if ids[i] not in exclude
            and (filters is None or ["shirt", "dress", "coat"][i % 3] in filters["category"])
        ][:15]
        hits = catalogue.search_composed(parts, 15, filters=filters, exclude=exclude)
        assert [h.id for h in hits] == [ids[i] for i in keep]
        np.testing.assert_allclose([h.score for h in hits], total[keep], atol=1e-5)
    with pytest.raises(ValueError, match="appears in two parts"):
        catalogue.search_composed([Part(ATTRIBUTES[0], q[0], 1.0), Part(ATTRIBUTES[0], q[0], 0.5)], 5)


def test_search_range_equals_a_brute_force_threshold(make: Make) -> None:
    catalogue, vectors, ids = _filled(make)
    query = vectors[11, 2]
    scores = vectors[:, 2] @ query
    ordered = np.sort(scores)[::-1]
    threshold = float((ordered[89] + ordered[90]) / 2)  # 90 items pass: more than the first fetch of 64
    everything = [ids[i] for i in np.argsort(-scores, kind="stable") if scores[i] >= threshold]
    hits, truncated = catalogue.search_range(query, ATTRIBUTES[2], threshold, 500)
    assert [h.id for h in hits] == everything and not truncated
    hits, truncated = catalogue.search_range(query, ATTRIBUTES[2], threshold, 30)
    assert [h.id for h in hits] == everything[:30] and truncated
    wanted = [i for i in everything if ids.index(i) % 3 == 0 and i != "item-0"]
    hits, _ = catalogue.search_range(
        query, ATTRIBUTES[2], threshold, 500, filters={"category": "shirt"}, exclude=["item-0"]
    )
    assert [h.id for h in hits] == wanted
    assert catalogue.search_range(query, ATTRIBUTES[2], 1.0, 5)[0] == [] or ordered[0] >= 1.0
    with pytest.raises(ValueError, match="min_score"):
        catalogue.search_range(query, ATTRIBUTES[2], 1.5, 5)


def test_batch_queries_give_one_list_per_query(make: Make) -> None:
    catalogue, vectors, ids = _filled(make, 100)
    queries = vectors[:3, 1]
    batched = catalogue.search(queries, "sleeve", 5)
    assert [[h.id for h in row] for row in batched] == [
        [h.id for h in catalogue.search(q, "sleeve", 5)] for q in queries
    ]


def test_filters_and_exclude_match_a_brute_force_filter(make: Make) -> None:
    catalogue, vectors, ids = _filled(make)
    query = vectors[7, 0]
    hits = catalogue.search(query, "colour", 15, filters={"category": ["dress", "coat"]}, exclude=["item-7"])
    want, _ = _brute(vectors, ids, query, 0, 15, keep=lambda i: i % 3 != 0 and i != 7)
    assert [h.id for h in hits] == want


def test_filter_semantics(make: Make) -> None:
    catalogue = make()
    metadata = [
        {"category": "dress", "colours": ["red", "blue"], "sale": True, "size": 38},
        {"category": "dress", "colours": ["green"], "sale": 1, "size": 40},
        {"category": "coat", "colours": ["red"], "sale": False, "size": 38.5},
    ]
    catalogue.add(["a", "b", "c"], clustered(np.random.default_rng(0), 3), metadata)
    query = np.ones(DIM, np.float32)

    def found(**filters: object) -> set[str]:
        return {r.id for r in catalogue.search(query, "colour", 10, filters=filters)}

    assert found(category="dress") == {"a", "b"}
    assert found(category=["dress", "coat"]) == {"a", "b", "c"}
    assert found(colours="red") == {"a", "c"}  # a list field matches any element
    assert found(colours=["green", "blue"]) == {"a", "b"}
    assert found(category="dress", colours="red") == {"a"}  # fields combine with AND
    assert found(sale=True) == {"a"} and found(sale=False) == {"c"}  # True is not 1
    assert found(size=38) == {"a"} and found(size=38.5) == {"c"}
    assert found(category="shoe") == set() and found(brand="x") == set()
    assert found(category=[]) == set()
    catalogue.remove(["a"])
    assert found(colours="red") == {"c"}


def test_a_removed_item_is_never_returned_again(make: Make) -> None:
    catalogue, vectors, ids = _filled(make, 60)
    result = catalogue.remove(["item-3", "item-4", "nope"])
    assert result.removed == ["item-3", "item-4"] and result.unknown == ["nope"]
    assert len(catalogue) == 58 and "item-3" not in catalogue and "item-5" in catalogue
    hits = catalogue.search(vectors[3, 0], "colour", 60)
    assert len(hits) == 58 and {"item-3", "item-4"}.isdisjoint(h.id for h in hits)
    with pytest.raises(UnknownItem):
        catalogue.get("item-3")


def test_upsert_replaces_vectors_and_keeps_metadata_unless_given(make: Make) -> None:
    catalogue, vectors, _ = _filled(make, 30)
    new = clustered(np.random.default_rng(9), 2)
    catalogue.upsert(["item-1", "fresh"], new)
    assert (
        catalogue.get("item-1").metadata == {"category": "dress", "i": 1}
        and catalogue.get("fresh").metadata == {}
    )
    np.testing.assert_allclose(catalogue.vector("item-1", "neckline"), new[0, 2], atol=1e-6)
    assert catalogue.search(new[0, 2], "neckline", 1)[0].id == "item-1"
    catalogue.upsert(["item-1"], new[:1], [{"category": "coat"}])
    assert catalogue.get("item-1").metadata == {"category": "coat"} and len(catalogue) == 31


def test_adding_a_present_id_is_refused_and_changes_nothing(make: Make) -> None:
    catalogue, vectors, _ = _filled(make, 10)
    with pytest.raises(ValueError, match="already in the catalogue"):
        catalogue.add(["new-1", "item-2"], clustered(np.random.default_rng(1), 2))
    assert len(catalogue) == 10 and "new-1" not in catalogue
    np.testing.assert_allclose(catalogue.vector("item-2", "colour"), vectors[2, 0], atol=1e-6)


def test_bad_writes_are_value_errors(make: Make) -> None:
    catalogue = make()
    with pytest.raises(ValueError, match="shape"):
        catalogue.add(["a"], np.ones((1, 2, DIM), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        catalogue.add(["a"], np.full((1, len(ATTRIBUTES), DIM), np.nan, np.float32))
    with pytest.raises(ValueError, match="JSON"):
        catalogue.add(["a"], clustered(np.random.default_rng(0), 1), [{"x": object()}])
    assert len(catalogue) == 0


def test_score_ids_and_vector_are_exact(make: Make) -> None:
    catalogue, vectors, _ = _filled(make, 20)
    query = vectors[0, 1]
    scores = catalogue.score_ids(query, "sleeve", ["item-5", "item-0", "item-5"])
    assert list(scores) == ["item-5", "item-0"]
    np.testing.assert_allclose([scores["item-5"], scores["item-0"]], vectors[[5, 0], 1] @ query, atol=1e-5)
    with pytest.raises(KeyError, match="no item"):
        catalogue.score_ids(query, "sleeve", ["item-1", "ghost"])


def test_reads_of_unknown_things_fail_clearly(make: Make) -> None:
    catalogue, vectors, _ = _filled(make, 5)
    with pytest.raises(KeyError, match="known attributes"):
        catalogue.search(vectors[0, 0], "pattern", 3)
    with pytest.raises(ValueError, match="k must be"):
        catalogue.search(vectors[0, 0], "colour", 0)
    with pytest.raises(ValueError, match="query must have shape"):
        catalogue.search(np.ones(DIM + 1, np.float32), "colour", 3)
    with pytest.raises(UnknownItem):
        catalogue.vector("ghost", "colour")


def test_ids_len_and_metadata_values(make: Make) -> None:
    catalogue, _, ids = _filled(make, 12)
    assert sorted(catalogue.ids()) == sorted(ids) and len(catalogue) == 12
    assert catalogue.metadata_values("category") == {"shirt", "dress", "coat"}
    assert (
        catalogue.attributes == ATTRIBUTES and catalogue.dim == DIM and catalogue.fingerprint == FINGERPRINT
    )


def test_iter_items_returns_every_item_once_with_its_vectors(make: Make) -> None:
    catalogue, vectors, ids = _filled(make, 25)
    seen: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    for batch_ids, batch, metas in catalogue.iter_items(batch_size=7):
        assert batch.shape == (len(batch_ids), len(ATTRIBUTES), DIM)
        seen.update({i: (v, m) for i, v, m in zip(batch_ids, batch, metas)})
    assert sorted(seen) == sorted(ids)
    np.testing.assert_allclose(seen["item-4"][0], vectors[4], atol=1e-6)
    assert seen["item-4"][1] == {"category": "dress", "i": 4}


def test_copy_into_the_other_backend_keeps_every_item_and_every_answer(make: Make, tmp_path: Path) -> None:
    from asen_search.index.milvus import MilvusCatalogue
    from asen_search.index.transfer import copy_catalogue, open_catalogue

    catalogue, vectors, ids = _filled(make, 50)
    other = (
        f"milvus-lite:{tmp_path}/copy.db#copy"
        if isinstance(catalogue, FaissCatalogue)
        else str(tmp_path / "copy-dir")
    )
    copied = copy_catalogue(catalogue, other, batch_size=16)
    copied.close()
    reopened = open_catalogue(other, expected_fingerprint=FINGERPRINT)
    try:
        assert isinstance(reopened, MilvusCatalogue) == isinstance(catalogue, FaissCatalogue)
        assert len(reopened) == 50 and reopened.get("item-9").metadata == catalogue.get("item-9").metadata
        query = vectors[3, 2]
        assert [h.id for h in reopened.search(query, "neckline", 10)] == [
            h.id for h in catalogue.search(query, "neckline", 10)
        ]
    finally:
        reopened.close()

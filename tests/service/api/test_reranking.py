"""The rerank formula and its retry, on a real catalogue, without HTTP."""

from __future__ import annotations

import numpy as np
import pytest

from asen_search.index import CatalogueBusy, FaissCatalogue, Part
from asen_search.service.operations.reranking import rerank_scores as rerank
from asen_search.service.operations.reranking import score_known


def _catalogue() -> FaissCatalogue:
    catalogue = FaissCatalogue.create(["colour"], 2, "fp")
    vectors = np.array([[[1.0, 0.0]], [[0.6, 0.8]], [[0.0, 1.0]]], dtype=np.float32)
    catalogue.add(["a", "b", "c"], vectors, [{"k": 1, "_image": "x.jpg"}, {}, {}])
    return catalogue


def test_weight_one_ranks_by_similarity_zero_keeps_the_order() -> None:
    catalogue = _catalogue()
    query = np.array([0.0, 1.0], dtype=np.float32)
    scores, metadata, unknown = score_known(catalogue, [Part("colour", query, 1.0)], ["a", "zz", "b", "c"])
    assert unknown == ["zz"] and scores == pytest.approx({"a": 0.0, "b": 0.8, "c": 1.0})
    assert metadata["a"] == {"k": 1}, "the private image key is never returned"
    order = ["a", "zz", "b", "c"]
    assert [h.id for h in rerank(order, scores, metadata, 1.0)] == ["c", "b", "a"]
    assert [h.id for h in rerank(order, scores, metadata, 0.0)] == ["a", "b", "c"]
    half = {h.id: h.score for h in rerank(order, scores, metadata, 0.5)}
    assert half == pytest.approx(
        {"a": 0.5 * 0.0 + 0.5 * 1.0, "b": 0.5 * 0.8 + 0.5 * 0.5, "c": 0.5 + 0.5 * 0.25}
    )


def test_a_composed_query_scores_the_weighted_sum() -> None:
    catalogue = FaissCatalogue.create(["colour", "cut"], 2, "fp")
    vectors = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [1.0, 0.0]]], dtype=np.float32)
    catalogue.add(["a", "b"], vectors)
    parts = [
        Part("colour", np.array([1.0, 0.0], dtype=np.float32), 0.5),
        Part("cut", np.array([0.0, 1.0], dtype=np.float32), -1.0),
    ]
    scores, _, unknown = score_known(catalogue, parts, ["b", "a", "x"])
    assert unknown == ["x"] and scores == pytest.approx({"a": 0.5 * 1.0 - 1.0, "b": 0.5 * 0.6 - 0.0})


def test_ties_keep_the_submitted_order() -> None:
    hits = rerank(["x", "y"], {"x": 0.5, "y": 0.5}, {"x": {}, "y": {}}, 1.0)
    assert [(h.id, h.position) for h in hits] == [("x", 0), ("y", 1)]


def test_a_catalogue_that_keeps_changing_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = _catalogue()

    def vanished(*args: object) -> dict[str, float]:
        raise KeyError("deleted meanwhile")

    monkeypatch.setattr(catalogue, "score_ids", vanished)
    with pytest.raises(CatalogueBusy, match="changed during the request 5 times"):
        score_known(catalogue, [Part("colour", np.array([1.0, 0.0], dtype=np.float32), 1.0)], ["a"])

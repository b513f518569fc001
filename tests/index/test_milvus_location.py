"""Milvus locations: what `--index` / ASEN_INDEX accept for the Milvus backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asen_search.index import parse_filters
from asen_search.index.milvus import MilvusLocation, filter_expression, filter_terms, is_milvus


def test_server_and_lite_locations_parse_and_print_back() -> None:
    server = MilvusLocation.parse("milvus://db.internal:19530/shop")
    assert (server.uri, server.collection, server.consistency) == (
        "http://db.internal:19530",
        "shop",
        "Strong",
    )
    lite = MilvusLocation.parse("milvus-lite:/data/shop.db")
    assert (lite.uri, lite.collection) == ("/data/shop.db", "catalogue")
    bounded = MilvusLocation.parse("milvus://h:1/c?consistency=Bounded")
    assert bounded.consistency == "Bounded" and str(bounded) == "milvus://h:1/c?consistency=Bounded"
    tuned = MilvusLocation.parse("milvus://h:1/c?consistency=Bounded&ef_search=128")
    assert (
        tuned.search == (("ef_search", 128),)
        and str(tuned) == "milvus://h:1/c?consistency=Bounded&ef_search=128"
    )
    for text in ("milvus://db.internal:19530/shop", "milvus-lite:/data/shop.db#c2"):
        assert str(MilvusLocation.parse(text)) == text and is_milvus(text)


@pytest.mark.parametrize(
    "text",
    [
        "milvus://host:19530",
        "milvus:///c",
        "milvus://h:1/a/b",
        "milvus-lite:/data/shop",
        "milvus://h:1/c?consistency=Sometimes",
        "milvus://h:1/c?timeout=3",
        "milvus://h:1/c?ef_search=0",
        "milvus://h:1/c?ef=64",
        "milvus://h:1/c?nprobe=many",
        "/data/index",
    ],
)
def test_bad_locations_say_what_is_wanted(text: str) -> None:
    with pytest.raises(ValueError, match="milvus|consistency|option"):
        MilvusLocation.parse(text)


def test_filters_become_typed_term_expressions() -> None:
    """Terms keep True and 1 apart and 38 and 38.0 together; a number alone is also kept for ranges;
    every field present is listed for `exists`. Text goes in raw, only quotes, backslashes and the
    control characters metadata may hold escaped (Milvus refuses \\u escapes)."""
    assert filter_terms({"sale": True, "n": 1, "size": 38.0, "tags": ["a", 2], "deep": {"x": 1}}) == {
        "t": {"sale": ["b:True"], "n": ["n:1.0"], "size": ["n:38.0"], "tags": ["s:a", "n:2.0"], "deep": []},
        "n": {"n": 1.0, "size": 38.0},
        "k": ["sale", "n", "size", "tags", "deep"],
    }
    assert filter_expression(parse_filters({"sale": True, "c": ["x", "y"]})) == (
        '(json_contains_any(terms["t"]["sale"], ["b:True"])) and (json_contains_any(terms["t"]["c"], ["s:x", "s:y"]))'
    )
    assert filter_expression(
        parse_filters({"p": {"gte": 1, "lt": 2.5}, "b": {"exists": False}, "c": {"not": "é"}})
    ) == (
        '(terms["n"]["p"] >= 1.0 and terms["n"]["p"] < 2.5) and (not json_contains(terms["k"], "b")) and '
        '(not json_contains_any(terms["t"]["c"], ["s:é"]))'
    )
    assert (
        filter_expression(parse_filters({'a"\\b': 'q"\\\n'}))
        == '(json_contains_any(terms["t"]["a\\"\\\\b"], ["s:q\\"\\\\\\n"]))'
    )
    assert (
        filter_expression(parse_filters({"c": []})) == '(id == "")'
        and filter_expression(parse_filters(None)) == ""
    )


def test_a_bounded_tuned_location_serves_reads(tmp_path: Path) -> None:
    from asen_search.index.milvus import MilvusCatalogue

    catalogue = MilvusCatalogue.create(
        f"milvus-lite:{tmp_path}/b.db#b?consistency=Bounded&ef_search=64", ["a"], 4, "fp", index_type="HNSW"
    )
    try:
        catalogue.add(["x"], np.ones((1, 1, 4), np.float32))
        assert catalogue.location.consistency == "Bounded" and "x" in catalogue
        assert catalogue.search_params() == {"ef_search": 64}
        assert [h.id for h in catalogue.search(np.ones(4, np.float32), "a", 1)] == ["x"]
    finally:
        catalogue.close()

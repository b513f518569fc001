"""What users send, on every engine (the `make` fixture: FAISS, Milvus Lite in both layouts, and with the
slow tests the embedded Milvus server): ids and values in many scripts, quotes, backslashes, `%` and
whitespace; text no engine can store (lone surrogates, control characters) refused with the same error
and code everywhere, nothing written; numbers at the edges; the filter language against its reference
(`Filter.matches`); two writers at once, with the writer lease that makes Milvus's add-if-absent hold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from asen_search.index import FaissCatalogue, InvalidInput, ItemExists, parse_filters
from tests.helpers.engines import ATTRIBUTES, DIM, Make, clustered

IDS = [
    "café",
    "a'b\"c",
    "back\\slash",
    "日本語の服",
    "emoji😀👗",
    "per%cent%20",
    " spaced id ",
    "ключ",
    "עברית",
    "ٱلْعَرَبِيَّة",
    "a/b/../c",
    "semi;colon",
    "brace{}[]()",
    "sep\u2028zero\u200bwidth",
    "x" * 512,
]
VALUES = [
    "écru",
    'quote " double',
    "single ' quote",
    "back\\slash\\",
    "漢字",
    "🧵 thread",
    "50%",
    "  padded  ",
    "line\nbreak\ttab\r",
    "",
    "\\u00e9 literally",
    'json {"a": [1]}',
]


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return clustered(np.random.default_rng(seed), n)


def _refused(code: str, call: Callable[[], object]) -> None:
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.code == code, (code, caught.value)


def test_ids_and_values_in_every_script_round_trip(make: Make) -> None:
    catalogue = make()
    vectors = _vectors(len(IDS))
    metadata = [
        {"value": VALUES[i % len(VALUES)], "id_again": item_id, "tags": [VALUES[(i + 1) % len(VALUES)], i]}
        for i, item_id in enumerate(IDS)
    ]
    catalogue.add(IDS, vectors, metadata)
    assert sorted(catalogue.ids()) == sorted(IDS) and len(catalogue) == len(IDS)
    for i, item_id in enumerate(IDS):
        assert item_id in catalogue and catalogue.get(item_id).metadata == metadata[i]
        np.testing.assert_allclose(catalogue.vector(item_id, "sleeve"), vectors[i, 1], atol=1e-6)
        found = catalogue.search(vectors[i, 0], "colour", len(IDS), filters={"id_again": item_id})
        assert [h.id for h in found] == [item_id] and found[0].metadata == metadata[i]
    for value in VALUES:
        want = {item_id for item_id, meta in zip(IDS, metadata) if value in (meta["value"], meta["tags"][0])}
        assert {
            h.id for h in catalogue.search(vectors[0, 0], "colour", len(IDS), filters={"value": value})
        } | {
            h.id for h in catalogue.search(vectors[0, 0], "colour", len(IDS), filters={"tags": value})
        } == want, value
        hits = catalogue.search(vectors[0, 0], "colour", len(IDS), filters={"value": {"not": value}})
        assert {h.id for h in hits} == {i for i, m in zip(IDS, metadata) if m["value"] != value}
    everything = catalogue.search(vectors[3, 2], "neckline", len(IDS), exclude=IDS[:5])
    assert {h.id for h in everything} == set(IDS[5:])
    scores = catalogue.score_ids(vectors[0, 0], "colour", IDS)
    np.testing.assert_allclose([scores[i] for i in IDS], vectors[:, 0] @ vectors[0, 0], atol=1e-5)
    seen = {i for ids, _, _ in catalogue.iter_items(batch_size=4) for i in ids}
    assert seen == set(IDS)
    assert catalogue.remove(IDS[::2]).removed == IDS[::2]
    assert sorted(catalogue.ids()) == sorted(IDS[1::2])
    catalogue.upsert([IDS[1]], vectors[:1], [{"value": VALUES[4]}])
    assert catalogue.get(IDS[1]).metadata == {"value": VALUES[4]}


REFUSED_IDS = [
    ("\ud800", "lone surrogate"),
    ("a\x00b", "NUL"),
    ("line\nbreak", "newline"),
    ("tab\there", "tab"),
    ("", "empty"),
    ("x" * 513, "too long"),
    ("bell\x07", "control"),
]
REFUSED_METADATA = [
    {"k": "\udfff"},
    {"\ud800": 1},
    {"k": "nul\x00"},
    {"k": ["esc\x1b"]},
    {"": 1},
    {"\n": 1},
    {"n": 2**63},
    {"n": -(2**63)},
    {"n": float("nan")},
    {"n": float("inf")},
    {"n": 1e19},
    {"n": -9.223372036854776e18},
    {"n": [1, 1.7976931348623157e308]},
    {"n": [0, "x", -(2**64)]},
    {"n": {"inner": [1e300]}},
    {"big": "x" * 70_000},
    {"deep": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]},
    {"k": object()},
    {1: "non-string key"},
]
REFUSED_FILTERS = [
    {"k": "\ud800"},
    {"k": ["ok", "\x00"]},
    {"\ud800": 1},
    {"": 1},
    {"k": {"between": [1, 2]}},
    {"k": {}},
    {"k": {"gte": True}},
    {"k": {"gt": 1, "gte": 2}},
    {"k": {"lt": "10"}},
    {"k": {"exists": "yes"}},
    {"k": {"in": "not-a-list"}},
    {"k": {"eq": [1]}},
    {"k": 2**64},
    {"k": 1e19},
    {"k": [1, -(2**63)]},
    {"k": {"lt": 1e308}},
    {"k": {"not_in": [9.3e18]}},
    {"k": {"nested": 1}},
    ["k"],
]


def test_what_no_engine_can_store_is_refused_the_same_everywhere(make: Make) -> None:
    catalogue = make()
    catalogue.add(["kept"], _vectors(1), [{"k": "v"}])
    one = _vectors(1, 1)
    for bad_id, why in REFUSED_IDS:
        _refused("invalid_item_id", lambda i=bad_id: catalogue.add([i], one))
        _refused("invalid_item_id", lambda i=bad_id: catalogue.upsert([i], one))
        _refused("invalid_item_id", lambda i=bad_id: catalogue.get(i))
        _refused("invalid_item_id", lambda i=bad_id: catalogue.remove([i]))
        _refused("invalid_item_id", lambda i=bad_id: catalogue.vector(i, "colour"))
        _refused("invalid_item_id", lambda i=bad_id: catalogue.search(one[0, 0], "colour", 3, exclude=[i]))
        assert bad_id not in catalogue, why
    for meta in REFUSED_METADATA:
        _refused("invalid_metadata", lambda m=meta: catalogue.add(["new"], one, [m]))
        _refused("invalid_metadata", lambda m=meta: catalogue.upsert(["kept"], one, [m]))
    for filters in REFUSED_FILTERS:
        _refused("invalid_filters", lambda f=filters: catalogue.search(one[0, 0], "colour", 3, filters=f))
        _refused(
            "invalid_filters",
            lambda f=filters: catalogue.search_range(one[0, 0], "colour", 0.0, 3, filters=f),
        )
    _refused(
        "invalid_vectors",
        lambda: catalogue.add(["new"], np.full((1, len(ATTRIBUTES), DIM), np.nan, np.float32)),
    )
    _refused("invalid_vectors", lambda: catalogue.add(["new"], np.ones((1, 2, DIM), np.float32)))
    _refused("unknown_attribute", lambda: catalogue.search(one[0, 0], "pattern", 3))
    assert catalogue.ids() == ["kept"] and catalogue.get("kept").metadata == {"k": "v"}
    np.testing.assert_allclose(catalogue.vector("kept", "colour"), _vectors(1)[0, 0], atol=1e-6)


EDGES = [
    2**63 - 1,
    -(2**63 - 1),
    2**53,
    2**53 + 1,
    9.223372036854775e18,
    -9.223372036854775e18,
    5e-324,
    -0.0,
    0,
    0.1,
    1,
    1.0,
    True,
    False,
    None,
    "1",
    [1, "1", True],
]
RANGES = [
    {"gte": 0},
    {"lt": 0},
    {"gt": 2**53},
    {"lte": 5e-324},
    {"gt": -9.2e18, "lt": 9.2e18},
    {"gte": 1, "lte": 1},
    {"gt": 0, "lt": 1},
    {"lt": -1e18},
]


def _reference(metadata: list[dict[str, Any]], ids: list[str], filters: dict[str, Any]) -> set[str]:
    parsed = parse_filters(filters)
    return {item_id for item_id, meta in zip(ids, metadata) if parsed.matches(meta)}


def test_numbers_at_the_edges_are_stored_and_filtered_alike(make: Make) -> None:
    catalogue = make()
    ids = [f"n{i}" for i in range(len(EDGES))] + ["absent"]
    metadata: list[dict[str, Any]] = [{"v": v} for v in EDGES] + [{}]
    catalogue.add(ids, _vectors(len(ids)), metadata)
    for item_id, meta in zip(ids, metadata):
        got = catalogue.get(item_id).metadata
        assert got == meta and [type(x) for x in got.values()] == [type(x) for x in meta.values()], item_id
    query = _vectors(1, 5)[0, 0]

    def found(filters: dict[str, Any]) -> set[str]:
        return {h.id for h in catalogue.search(query, "colour", len(ids), filters=filters)}

    for value in EDGES[:-1]:
        assert found({"v": value}) == _reference(metadata, ids, {"v": value}), value
    for bounds in RANGES:
        assert found({"v": bounds}) == _reference(metadata, ids, {"v": bounds}), bounds
    assert found({"v": 2**53 + 1}) == {"n2", "n3"}  # numbers compare as 64-bit floats
    assert found({"v": True}) == {"n12", "n16"} and found({"v": 1}) == {"n10", "n11", "n16"}  # True is not 1
    assert found({"v": {"gte": 1, "lte": 1}}) == {"n10", "n11"}  # a range never matches a bool or a list
    assert found({"v": {"exists": False}}) == {"absent"} and found({"v": None}) == {"n14"}


BEYOND = [2**63, -(2**63), 1e19, -1e19, 9.223372036854776e18, 1.7976931348623157e308, 10**40]
WITHIN = [2**63 - 1, -(2**63 - 1), 9.223372036854775e18, -9.223372036854775e18, 4.7e16, 1e15 + 1]


def test_one_number_bound_for_every_place_a_number_sits(make: Make) -> None:
    """A number lies strictly within +-2**63 however it is written (10**19 and 1e19 alike) and wherever
    it sits: a value, an element of a list, deeper in an object; in add, upsert, a metadata change and
    a filter. Nothing beyond is written; everything within round-trips exactly."""
    catalogue = make()
    catalogue.add(["kept"], _vectors(1), [{"k": 1}])
    one = _vectors(1, 1)
    for number in BEYOND:
        for meta in ({"n": number}, {"n": [1, "x", number]}, {"n": {"deep": [number]}}):
            _refused("invalid_metadata", lambda m=meta: catalogue.add(["new"], one, [m]))
            _refused("invalid_metadata", lambda m=meta: catalogue.upsert(["kept"], one, [m]))
            _refused("invalid_metadata", lambda m=meta: catalogue.update_metadata("kept", m))
        for filters in (
            {"n": number},
            {"n": [0, number]},
            {"n": {"gte": number}},
            {"n": {"not_in": [number]}},
        ):
            _refused("invalid_filters", lambda f=filters: catalogue.search(one[0, 0], "colour", 3, filters=f))
    assert catalogue.ids() == ["kept"] and catalogue.get("kept").metadata == {"k": 1}
    metadata = {"n": WITHIN, "first": WITHIN[0], "deep": {"list": WITHIN[::-1]}}
    catalogue.add(["edges"], one, [metadata])
    assert catalogue.get("edges").metadata == metadata
    assert [h.id for h in catalogue.search(one[0, 0], "colour", 3, filters={"first": WITHIN[0]})] == ["edges"]


def _random_metadata(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    colours, out = ["red", "blue", "écru", 'q"uote', None], []
    for i in range(n):
        meta: dict[str, Any] = {}
        if rng.random() < 0.85:
            meta["colour"] = colours[int(rng.integers(len(colours)))]
        if rng.random() < 0.8:
            meta["price"] = [int(rng.integers(0, 100)), float(rng.uniform(0, 100)), True][
                int(rng.integers(3))
            ]
        if rng.random() < 0.6:
            meta["tags"] = [
                str(t) for t in rng.choice(["a", "b", "c", "d"], int(rng.integers(0, 3)), replace=False)
            ]
        meta["sale"] = bool(i % 3 == 0) if i % 5 else None
        out.append(meta)
    return out


FILTERS: list[dict[str, Any]] = [
    {"colour": "red"},
    {"colour": ["blue", "écru"]},
    {"colour": {"not": "red"}},
    {"colour": {"not_in": ["red", None]}},
    {"colour": None},
    {"colour": {"exists": False}},
    {"colour": {"exists": True}, "sale": True},
    {"price": {"gte": 50}},
    {"price": {"gt": 10.5, "lt": 20}},
    {"price": {"lte": 1}},
    {"price": 1},
    {"tags": "a"},
    {"tags": {"not": "a"}},
    {"tags": ["b", "c"], "price": {"lt": 50}},
    {"sale": False},
    {"sale": {"not": True}, "colour": {"in": ['q"uote', "red"]}},
    {"tags": {"exists": False}, "price": {"exists": True}},
    {"colour": {"eq": "red", "not": "blue"}},
    {"colour": {"in": []}},
    {"colour": {"not_in": []}},
]


def test_the_filter_language_equals_its_reference(make: Make) -> None:
    catalogue = make()
    n = 120
    ids, metadata = [f"f{i}" for i in range(n)], _random_metadata(np.random.default_rng(3), n)
    vectors = _vectors(n, 4)
    catalogue.add(ids, vectors, metadata)
    query = vectors[0, 1]
    for filters in FILTERS:
        want = _reference(metadata, ids, filters)
        assert {h.id for h in catalogue.search(query, "sleeve", n, filters=filters)} == want, filters
        hits, truncated = catalogue.search_range(query, "sleeve", -1.0, n, filters=filters)
        assert {h.id for h in hits} == want and not truncated, filters


def _second_handle(catalogue: Any) -> Any:
    """Another writer of the same catalogue: another client of the collection (a second replica) on
    Milvus; on the FAISS directory, the same object (one writer per directory: its threads)."""
    if isinstance(catalogue, FaissCatalogue):
        return catalogue
    from asen_search.index.milvus import MilvusCatalogue

    return MilvusCatalogue.load(catalogue.location)


def _slow_presence_checks(*catalogues: Any) -> None:
    """Widen the window between checking that an id is absent and writing it, so that two writers
    without a common rule would both pass the check."""
    for catalogue in catalogues:
        if not isinstance(catalogue, FaissCatalogue):
            looked_up = catalogue._metas

            def slow(ids: Any, strong: bool = False, looked_up: Any = looked_up) -> Any:
                found = looked_up(ids, strong)
                time.sleep(0.15)
                return found

            catalogue._metas = slow


def _in_threads(work: Callable[[int, Any], None], writers: list[Any]) -> None:
    """`work(n, writer)` in one thread per writer, started together; an error in any is raised here."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(writers))

    def run(n: int, catalogue: Any) -> None:
        start.wait()
        try:
            work(n, catalogue)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, c)) for n, c in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]


def _race(writers: list[Any], contested: list[str]) -> dict[str, list[str]]:
    """Each writer adds every contested id and ids of its own; which writer each contested id went to."""
    won: dict[str, list[str]] = {i: [] for i in contested}
    lock = threading.Lock()

    def write(n: int, catalogue: Any) -> None:
        for item_id in contested:
            try:
                catalogue.add([item_id], _vectors(1, 100 + n), [{"by": n}])
            except ItemExists:
                continue
            with lock:
                won[item_id].append(f"writer-{n}")
        catalogue.add([f"own-{n}-{j}" for j in range(3)], _vectors(3, 200 + n), [{"by": n}] * 3)

    _in_threads(write, writers)
    return won


def test_two_writers_at_once_never_both_add_one_id(make: Make) -> None:
    first = make()
    second = _second_handle(first)
    try:
        _slow_presence_checks(first, second)
        contested = ["same-0", "same-é", 'same-"1"']
        won = _race([first, second], contested)
        assert all(len(winners) == 1 for winners in won.values()), won
        for item_id, winners in won.items():
            assert first.get(item_id).metadata == {"by": int(winners[0][-1])}
        assert len(first) == len(contested) + 6 and len(second) == len(first)
        assert {f"own-{n}-{j}" for n in range(2) for j in range(3)} <= set(first.ids())
    finally:
        if second is not first:
            second.close()


def test_concurrent_replacements_of_one_item_are_never_mixed(make: Make) -> None:
    """Every attribute's vector and the metadata of an item come from one write, whatever the writers."""
    first = make()
    second = _second_handle(first)
    try:
        first.add(["shared"], _vectors(1), [{"by": -1}])
        versions = {n: _vectors(1, 300 + n) for n in range(2)}

        def replace(n: int, catalogue: Any) -> None:
            for _ in range(6):
                catalogue.upsert(["shared"], versions[n], [{"by": n}])

        _in_threads(replace, [first, second])
        by = first.get("shared").metadata["by"]
        for a, attribute in enumerate(ATTRIBUTES):
            np.testing.assert_allclose(first.vector("shared", attribute), versions[by][0, a], atol=1e-6)
        assert len(first) == 1
    finally:
        if second is not first:
            second.close()


@contextmanager
def _no_lease() -> Any:
    yield


@pytest.mark.parametrize(
    "engine",
    ["milvus-lite", "milvus-lite-rows", pytest.param("milvus-server", marks=pytest.mark.slow)],
    indirect=True,
)
def test_without_the_writer_lease_two_milvus_writers_both_add_one_id(make: Make) -> None:
    """The mechanism is what the race test relies on: with the lease replaced by nothing, the same race
    acknowledges both adds of one id on Milvus (so the race test above can fail)."""
    first = make()
    second = _second_handle(first)
    try:
        _slow_presence_checks(first, second)
        for catalogue in (first, second):
            catalogue._lease.held, catalogue._lease.check = _no_lease, lambda: None
        won = _race([first, second], ["same-0"])
        assert len(won["same-0"]) == 2, won
    finally:
        second.close()

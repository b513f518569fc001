from __future__ import annotations

import pytest

from asen_search.index.ids import MAX_ID_LENGTH, IdMap, validate_id


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        ("x" * (MAX_ID_LENGTH + 1), "maximum"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("tab\there", "control"),
        ("del\x7f", "control"),
    ],
)
def test_invalid_ids_say_why(bad: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_id(bad)


def test_non_string_id_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        validate_id(17)


def test_valid_ids_pass() -> None:
    for good in ["sku-1", "x" * MAX_ID_LENGTH, "ünïcødé/ドレス 42", "a b"]:
        assert validate_id(good) == good


def test_keys_are_never_reused_after_release() -> None:
    ids = IdMap()
    first = ids.assign("a")
    ids.release("a")
    assert ids.assign("a") != first
    assert ids.assign("b") not in (first,)
    assert ids.next_key == 3


def test_round_trip_keeps_counter() -> None:
    ids = IdMap()
    for name in "abc":
        ids.assign(name)
    ids.release("c")
    again = IdMap(ids.pairs(), ids.next_key)
    assert list(again) == ["a", "b"] and again.assign("d") == 3

"""The load test's metadata check (bench/load_test.py `metadata_differences`): an added item must hold
exactly the metadata sent plus, with a tagging checkpoint, exactly the documented predicted tags."""

from __future__ import annotations

from typing import Any

import pytest

from bench.load_test import metadata_differences, promised_tags

ATTRIBUTES = [
    {
        "name": "neckline",
        "values": ["round", "v_neck", "square"],
        "value_search": ["round", "v_neck", "square"],
    },
    {"name": "colour", "values": ["red", "blue"], "value_search": ["red", "blue"]},
]
TAGS = {"neckline": ["round", "v_neck", "square"], "colour": ["red", "blue"]}
SENT = {"source": "load", "client": 3, "n": 0, "category": "dress"}
PREDICTED = {
    "predicted.neckline": "v_neck",
    "predicted.neckline.confidence": 0.8123,
    "predicted.colour": "red",
    "predicted.colour.confidence": 1.0,
}
WITH_TAGS = {**SENT, **PREDICTED}


def test_the_promised_tags_come_from_the_attributes_answer() -> None:
    assert promised_tags(ATTRIBUTES) == TAGS
    assert promised_tags([{**a, "value_search": []} for a in ATTRIBUTES]) is None  # no prototypes: no tags
    only_some = [ATTRIBUTES[0], {"name": "colour", "values": ["red", "blue"], "value_search": ["blue"]}]
    assert promised_tags(only_some) == {"neckline": TAGS["neckline"], "colour": ["blue"]}


def test_sent_metadata_plus_the_promised_tags_pass() -> None:
    assert metadata_differences(WITH_TAGS, SENT, TAGS) == []
    assert metadata_differences({**WITH_TAGS, "predicted.colour.confidence": 0}, SENT, TAGS) == []
    assert metadata_differences(dict(SENT), SENT, None) == []  # a checkpoint without prototypes adds nothing


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in WITH_TAGS.items() if k != key}


@pytest.mark.parametrize(
    ("got", "named"),
    [
        pytest.param(_without("category"), "'category'", id="sent-field-dropped"),
        pytest.param({**WITH_TAGS, "category": "coat"}, "'category'", id="sent-value-changed"),
        pytest.param({**WITH_TAGS, "client": "3"}, "'client'", id="sent-number-became-a-string"),
        pytest.param({**WITH_TAGS, "client": 3.0}, "'client'", id="sent-int-became-a-float"),
        pytest.param({**WITH_TAGS, "colour": "red"}, "'colour'", id="extra-key"),
        pytest.param(
            {**WITH_TAGS, "predicted.pattern": "dots"}, "'predicted.pattern'", id="tag-of-no-attribute"
        ),
        pytest.param(
            {**WITH_TAGS, "predicted.neckline.margin": 0.2}, "'predicted.neckline.margin'", id="extra-tag-key"
        ),
        pytest.param(
            {**WITH_TAGS, "predicted.neckline": "crew"}, "'predicted.neckline'", id="tag-not-a-value"
        ),
        pytest.param(
            {**WITH_TAGS, "predicted.neckline": "red"},
            "'predicted.neckline'",
            id="tag-another-attributes-value",
        ),
        pytest.param({**WITH_TAGS, "predicted.colour": ["red"]}, "'predicted.colour'", id="tag-not-a-string"),
        pytest.param(
            {**WITH_TAGS, "predicted.colour.confidence": 1.2},
            "'predicted.colour.confidence'",
            id="confidence-over-1",
        ),
        pytest.param(
            {**WITH_TAGS, "predicted.colour.confidence": "0.9"},
            "'predicted.colour.confidence'",
            id="confidence-a-string",
        ),
        pytest.param(
            {**WITH_TAGS, "predicted.colour.confidence": True},
            "'predicted.colour.confidence'",
            id="confidence-a-boolean",
        ),
        pytest.param(_without("predicted.colour"), "'predicted.colour'", id="tag-missing"),
        pytest.param(
            _without("predicted.neckline.confidence"),
            "'predicted.neckline.confidence'",
            id="confidence-missing",
        ),
    ],
)
def test_any_other_difference_is_found_and_named(got: dict[str, Any], named: str) -> None:
    problems = metadata_differences(got, SENT, TAGS)
    assert len(problems) == 1 and named in problems[0], problems


def test_tags_where_none_are_promised_are_extra_keys() -> None:
    problems = metadata_differences(WITH_TAGS, SENT, None)
    assert len(problems) == len(PREDICTED) and all("unexpected key" in p for p in problems)


def test_metadata_that_is_not_an_object_is_a_difference() -> None:
    assert metadata_differences(None, SENT, TAGS) != []
    assert metadata_differences([SENT], SENT, None) != []

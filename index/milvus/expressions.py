"""Milvus boolean expressions, built from checked values only (index/validation.py,
index/filters.py): string literals escaped by Milvus's own rules, id lists, and the filter language
compiled against the `terms` JSON field written beside each item's metadata.

Why a `terms` field and not the metadata itself: Milvus's JSON comparisons treat `true` as `1` and
cannot compare with null, and its array functions cannot test a range. So each item carries

    terms = {"t": {field: ["s:red", "n:38.0", "b:True", "z:"]},   typed terms of a scalar or a list
             "n": {field: 38.0},                                  a field holding one number
             "k": [field, ...]}                                   the fields present

Collections made before this layout (property `asen.terms` absent) hold `terms = {field: [...]}`
and answer equality filters only.

Literals: Milvus parses a double-quoted string with C-style escapes, and refuses `\\u` escapes, so
text goes in raw (UTF-8) with only `\\`, `"` and the control characters metadata may hold escaped.
pymilvus's own `get(ids=...)`, `delete(ids=...)` and query iterator quote ids without escaping (an
id holding a quote or a backslash breaks them): this module's expressions are used instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import InvalidFilters
from ..filters import Condition, Filter, Scalar, number_of, terms_of

TERMS_VERSION = "2"
NOTHING = 'id == ""'  # true of no row (no id is empty); Milvus 2.3 has no `false` literal
ID_CHUNK_CHARS = 65_536  # characters of ids in one `in [...]` expression
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def literal(text: str) -> str:
    """`text` as a Milvus string literal."""
    return '"' + "".join(_ESCAPES.get(char, char) for char in text) + '"'


def number(value: float) -> str:
    """A finite float as a Milvus numeric literal."""
    return repr(float(value))


def literal_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(literal(v) for v in values) + "]"


def chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    """`ids` in runs short enough for one expression each."""
    run: list[str] = []
    size = 0
    for item_id in ids:
        if run and size + len(item_id) > ID_CHUNK_CHARS:
            yield run
            run, size = [], 0
        run.append(item_id)
        size += len(item_id) + 4
    if run:
        yield run


def token(value: Scalar) -> str:
    """A scalar's typed term as a string: `True` and `1` stay apart, `38` and `38.0` meet."""
    kind, scalar = terms_of(value)[0]
    return f"{kind}:" if scalar is None else f"{kind}:{scalar!r}" if kind == "n" else f"{kind}:{scalar}"


def filter_terms(metadata: Mapping[str, Any], version: str | None = TERMS_VERSION) -> dict[str, Any]:
    """What filters are evaluated on (module docstring), for one item's metadata."""
    tokens = {field: [token(v) for v in _scalars(value)] for field, value in metadata.items()}
    if version is None:
        return tokens
    numbers = {field: n for field, value in metadata.items() if (n := number_of(value)) is not None}
    return {"t": tokens, "n": numbers, "k": list(metadata)}


def _scalars(value: Any) -> list[Scalar]:
    if isinstance(value, list):
        return [v for v in value if v is None or isinstance(v, str | int | float | bool)]
    return [value] if value is None or isinstance(value, str | int | float | bool) else []


def _condition(condition: Condition, version: str | None) -> str:
    field = literal(condition.field)
    if version is None and condition.op != "in":
        raise InvalidFilters(
            f"filter {condition.field!r}: this Milvus collection was made by an older version of "
            "asen-search and answers equality filters only; copy it again (`asen index copy`) to "
            "filter by not / range / exists"
        )
    if condition.op in ("in", "not_in") and not condition.values:
        return NOTHING if condition.op == "in" else ""
    if condition.op in ("in", "not_in"):
        path = f"terms[{field}]" if version is None else f'terms["t"][{field}]'
        test = f"json_contains_any({path}, {literal_list(sorted({token(v) for v in condition.values}))})"
        return test if condition.op == "in" else f"not {test}"
    if condition.op == "exists":
        test = f'json_contains(terms["k"], {field})'
        return test if condition.present else f"not {test}"
    path = f'terms["n"][{field}]'
    bounds = []
    if condition.low is not None:
        bounds.append(f"{path} {'>' if condition.low_open else '>='} {number(condition.low)}")
    if condition.high is not None:
        bounds.append(f"{path} {'<' if condition.high_open else '<='} {number(condition.high)}")
    return " and ".join(bounds)


def filter_expression(filters: Filter, version: str | None = TERMS_VERSION) -> str:
    """The expression for a parsed filter ("" for none)."""
    return join(*(_condition(c, version) for c in filters.conditions))


def join(*clauses: str) -> str:
    """Clauses combined with AND, empty ones left out."""
    return " and ".join(f"({c})" for c in clauses if c)

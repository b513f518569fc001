"""The filter language of every catalogue engine: which items a search, a listing or a threshold
search may return, judged on each item's metadata. One parser (`parse_filters`) checks a filter once,
in the catalogue front; each engine then evaluates the parsed `Filter` its own way (the FAISS
directory with its inverted index, index/metadata.py; Milvus with an expression,
index/milvus/expressions.py), and `Filter.matches` is the reference both are tested against.

    {"category": "dress"}                      the field equals the value
    {"colour": ["red", "blue"]}                one of the values               (also {"in": [...]})
    {"colour": {"not": "red"}}                 anything but the value          (also {"not_in": [...]})
    {"price": {"gte": 10, "lt": 50}}           a number in the range           (gt, gte, lt, lte)
    {"brand": {"exists": true}}                the field is present            (false: absent)

Fields combine with AND, and so do the operators of one field. Rules, the same on every engine:
- a field holding a list matches `eq`/`in` when any element does, and `not`/`not_in` when none does;
- numbers compare as numbers (1 == 1.0, as 64-bit floats), a bool is not a number (True != 1), null
  matches null;
- `not`/`not_in` match items without the field too; an empty `in` list matches nothing, an empty
  `not_in` list everything; a range matches only a field holding one number
  (not a bool, not a list); `exists` counts a field whatever its value, null included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidFilters
from .validation import check_key, check_number, check_text

Scalar = str | int | float | bool | None
FilterValue = Scalar | list[Scalar] | tuple[Scalar, ...] | set[Scalar] | Mapping[str, Any]
Term = tuple[str, Scalar]

OPERATORS = ("eq", "in", "not", "not_in", "gt", "gte", "lt", "lte", "exists")
MAX_FIELDS = 64  # fields in one filter
MAX_VALUES = 1024  # values in one `in` / `not_in` list
MAX_TEXT = 4096  # characters of one string value


def term(value: Scalar) -> Term:
    """What equality compares: the kind and the value, numbers as floats (1 == 1.0, True != 1)."""
    if value is None:
        return ("z", None)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", float(value) + 0.0)  # + 0.0: -0.0 and 0.0 are one term (and one token on Milvus)
    return ("s", value)


def terms_of(value: Any) -> list[Term]:
    """The terms of a metadata value: a scalar's own, each scalar element's of a list, none else."""
    if isinstance(value, list):
        return [term(v) for v in value if v is None or isinstance(v, str | int | float | bool)]
    if value is None or isinstance(value, str | int | float | bool):
        return [term(value)]
    return []


def number_of(value: Any) -> float | None:
    """The number a range compares: a field holding one number (not a bool), as a float."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) + 0.0
    return None


@dataclass(frozen=True)
class Condition:
    """One test on one field. `op` is `in` (any of `values`), `not_in` (none of them), `range`
    (`low`/`high` bounds, open or closed, None for unbounded) or `exists` (`present`)."""

    field: str
    op: str
    values: tuple[Scalar, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    present: bool = True

    @property
    def terms(self) -> frozenset[Term]:
        return frozenset(term(v) for v in self.values)

    @property
    def negative(self) -> bool:
        """True for the conditions an item without the field can meet (evaluated last)."""
        return self.op == "not_in" or (self.op == "exists" and not self.present)

    def in_range(self, number: float) -> bool:
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return False
        return not (
            self.high is not None and (number > self.high or (self.high_open and number == self.high))
        )

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """The reference semantics (module docstring) on one item's metadata."""
        if self.op == "exists":
            return (self.field in metadata) == self.present
        if self.op == "range":
            number = number_of(metadata.get(self.field))
            return self.field in metadata and number is not None and self.in_range(number)
        found = self.field in metadata and not self.terms.isdisjoint(terms_of(metadata[self.field]))
        return found if self.op == "in" else not found


@dataclass(frozen=True)
class Filter:
    """Conditions that must all hold; empty: every item."""

    conditions: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return all(condition.matches(metadata) for condition in self.conditions)

    def ordered(self) -> list[Condition]:
        """Conditions that narrow first, those that exclude last."""
        return sorted(self.conditions, key=lambda c: c.negative)


NO_FILTER = Filter()


def _scalar(value: object, where: str) -> Scalar:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return check_number(value, where, InvalidFilters)
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise InvalidFilters(
                f"{where}: a string value is at most {MAX_TEXT} characters, got {len(value)}"
            )
        return check_text(value, where, controls=True, error=InvalidFilters)
    raise InvalidFilters(f"{where}: values are str, number, bool or null, got {_show(value)}")


def _values(value: object, where: str) -> tuple[Scalar, ...]:
    """A list of values; empty is allowed (`in` [] matches nothing, `not_in` [] everything)."""
    if not isinstance(value, list | tuple | set | frozenset):
        raise InvalidFilters(f"{where} must be a list of values, got {_show(value)}")
    if len(value) > MAX_VALUES:
        raise InvalidFilters(f"{where} has {len(value)} values; at most {MAX_VALUES}")
    return tuple(_scalar(v, where) for v in value)


def _bound(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFilters(f"{where} must be a number, got {_show(value)}")
    check_number(value, where, InvalidFilters)
    bound = float(value)
    if not math.isfinite(bound):
        raise InvalidFilters(f"{where} must be a finite number, got {value!r}")
    return bound


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _operators(field: str, spec: Mapping[Any, Any]) -> list[Condition]:
    unknown = [k for k in spec if k not in OPERATORS]
    if unknown or not spec:
        raise InvalidFilters(
            f"filter {field!r}: unknown operator {unknown[0]!r} (the operators are {', '.join(OPERATORS)})"
            if unknown
            else f"filter {field!r}: an empty operator object; give one of {', '.join(OPERATORS)}"
        )
    out: list[Condition] = []
    where = f"filter {field!r}"
    if "eq" in spec:
        out.append(Condition(field, "in", (_scalar(spec["eq"], f"{where} eq"),)))
    if "in" in spec:
        out.append(Condition(field, "in", _values(spec["in"], f"{where} in")))
    if "not" in spec:
        out.append(Condition(field, "not_in", (_scalar(spec["not"], f"{where} not"),)))
    if "not_in" in spec:
        out.append(Condition(field, "not_in", _values(spec["not_in"], f"{where} not_in")))
    if "gt" in spec and "gte" in spec or "lt" in spec and "lte" in spec:
        raise InvalidFilters(f"{where}: give one lower bound (gt or gte) and one upper bound (lt or lte)")
    low_key = "gt" if "gt" in spec else "gte" if "gte" in spec else None
    high_key = "lt" if "lt" in spec else "lte" if "lte" in spec else None
    if low_key or high_key:
        low = None if low_key is None else _bound(spec[low_key], f"{where} {low_key}")
        high = None if high_key is None else _bound(spec[high_key], f"{where} {high_key}")
        out.append(
            Condition(
                field, "range", low=low, low_open=low_key == "gt", high=high, high_open=high_key == "lt"
            )
        )
    if "exists" in spec:
        if not isinstance(spec["exists"], bool):
            raise InvalidFilters(f"{where} exists must be true or false, got {_show(spec['exists'])}")
        out.append(Condition(field, "exists", present=spec["exists"]))
    return out


def parse_filters(filters: object) -> Filter:
    """The parsed filter of `{field: value | [values] | {operator: ...}}` (module docstring); None or
    {} is no filter. InvalidFilters names the field and what is wrong."""
    if filters is None:
        return NO_FILTER
    if isinstance(filters, Filter):
        return filters
    if not isinstance(filters, Mapping):
        raise InvalidFilters(
            f"filters must be a JSON object of field -> value(s), got {type(filters).__name__}"
        )
    if len(filters) > MAX_FIELDS:
        raise InvalidFilters(f"filters name {len(filters)} fields; at most {MAX_FIELDS}")
    conditions: list[Condition] = []
    for field, spec in filters.items():
        name = check_key(field, "filter fields", InvalidFilters)
        if isinstance(spec, Mapping):
            conditions += _operators(name, spec)
        elif isinstance(spec, list | tuple | set | frozenset):
            conditions.append(Condition(name, "in", _values(spec, f"filter {name!r}")))
        else:
            conditions.append(Condition(name, "in", (_scalar(spec, f"filter {name!r}"),)))
    return Filter(tuple(conditions))

"""The vocabulary of the OpenAPI schema's values (service/api/openapi.py): what ids, keys and texts
may hold, a number's bound, the filter language and metadata as JSON Schema, each with the limits
the catalogue checks (index/filters.py, index/validation.py), so that what the schema admits the
catalogue takes, and the other way round.
"""

from __future__ import annotations

from typing import Any

from asen_search.index.filters import MAX_FIELDS, MAX_TEXT, MAX_VALUES
from asen_search.index.validation import MAX_KEY_LENGTH, MAX_METADATA_BYTES, MAX_METADATA_DEPTH, NUMBER_BOUND

# text without control characters (C0, DEL, C1): what ids, keys and field names may hold
ID_PATTERN = KEY_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
USER_KEY_PATTERN = "^(?!_image$)(?!predicted\\.)[^\\x00-\\x1f\\x7f-\\x9f]+$"  # not the service's own keys
FILTER_KEY_PATTERN = (
    "^(?!_image$)[^\\x00-\\x1f\\x7f-\\x9f]+$"  # filters may name predicted tags, not the image
)
TEXT_PATTERN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"  # values: tab, newline, return allowed
# a metadata or filter number (index/validation.py): strictly within +-2**63, however it is written
NUMBER = {"type": "number", "exclusiveMinimum": -NUMBER_BOUND, "exclusiveMaximum": NUMBER_BOUND}
KEY = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": KEY_PATTERN}
METADATA_VALUE = "MetadataValue"  # components/schemas/MetadataValue: a metadata value (recursive)


def _scalar(text_limit: int | None = None) -> dict[str, Any]:
    """A JSON scalar as metadata and filters hold it: text (no control characters but tab, newline and
    return), a number within the bound, a boolean, null."""
    text: dict[str, Any] = {"type": "string", "pattern": TEXT_PATTERN}
    if text_limit is not None:
        text["maxLength"] = text_limit
    return {"anyOf": [text, dict(NUMBER), {"type": "boolean"}, {"type": "null"}]}


def filters_schema() -> dict[str, Any]:
    """The filter language (index/filters.py) as a schema, with its limits."""
    scalar = _scalar(MAX_TEXT)
    values = {"type": "array", "items": scalar, "maxItems": MAX_VALUES}
    operators = {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "eq": scalar,
            "in": values,
            "not": scalar,
            "not_in": values,
            "gt": NUMBER,
            "gte": NUMBER,
            "lt": NUMBER,
            "lte": NUMBER,
            "exists": {"type": "boolean"},
        },
        "allOf": [absent_with("gt", "gte"), absent_with("lt", "lte")],
    }
    return {
        "type": "object",
        "maxProperties": MAX_FIELDS,
        "propertyNames": {"pattern": FILTER_KEY_PATTERN, "minLength": 1, "maxLength": MAX_KEY_LENGTH},
        "additionalProperties": {"anyOf": [scalar, values, operators]},
        "description": "every field must match: a value, a list of values (any of them), or operators; the "
        "field `_image` is the service's and refused",
    }


def metadata_components() -> dict[str, Any]:
    """A metadata value: a scalar, or a list or an object of values (keys below the top are any keys,
    index/validation.py), nested at most MAX_METADATA_DEPTH deep (which a recursive schema cannot
    count: the description says it)."""
    inner = {"$ref": f"#/components/schemas/{METADATA_VALUE}"}
    return {
        METADATA_VALUE: {
            "anyOf": [
                *_scalar()["anyOf"],
                {"type": "array", "items": inner},
                {"type": "object", "propertyNames": KEY, "additionalProperties": inner},
            ],
            "description": f"a JSON value; lists and objects nest at most {MAX_METADATA_DEPTH} deep",
        }
    }


def metadata_schema() -> dict[str, Any]:
    """Metadata a user may send: a JSON object, keys of the service's own (`_image`, `predicted.*`)
    refused, values nested at most MAX_METADATA_DEPTH deep (at most 64 KiB as compact JSON, which no
    schema can say)."""
    return {
        "type": "object",
        "propertyNames": {"pattern": USER_KEY_PATTERN, "minLength": 1, "maxLength": MAX_KEY_LENGTH},
        "additionalProperties": {"$ref": f"#/components/schemas/{METADATA_VALUE}"},
        "description": "a JSON object; the keys `_image` and `predicted.*` are the service's and refused; at "
        f"most {MAX_METADATA_BYTES // 1024} KiB as compact JSON",
    }


def absent_with(field: str, *others: str) -> dict[str, Any]:
    """`others` absent where `field` is present (`false` property schemas: spelled out, where a `not`
    over `required` is more than the generators of test tools take)."""
    return {"if": {"required": [field]}, "then": {"properties": dict.fromkeys(others, False)}}

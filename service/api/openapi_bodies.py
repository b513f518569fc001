"""The request bodies of the OpenAPI schema (service/api/openapi.py): each body endpoint's fields,
in JSON and as a form (the same fields; files for images), with the ranges that come from the
settings and the loaded model (`ModelFacts`), and the rules between fields as `required` and absent
(`false`) properties.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from asen_search.service.api.bodies import BodySpec
from asen_search.service.api.openapi_values import (
    ID_PATTERN,
    KEY,
    absent_with,
    filters_schema,
    metadata_schema,
)
from asen_search.service.api.requests import CURSOR_PATTERN, ItemFields
from asen_search.service.api.settings import Settings
from asen_search.service.operations.checks import MAX_SELECTED_FIELDS
from asen_search.service.operations.items import VECTOR_BOUND
from asen_search.service.operations.queries import MAX_QUERY_PARTS

CURSOR_FORMAT = "asen-cursor"  # a cursor: the `next_cursor` of an answer (base64url of the next page's place)
COPIES_CURSOR_FORMAT = "asen-copies-cursor"  # the `next_cursor` of a /copies answer
IMAGE_FORMAT = (
    "image-base64"  # a base64 image (schemathesis: tests/helpers/schemathesis_hooks.py generates real ones)
)
IMAGE_MEDIA = "image/png, image/jpeg"
SCORE_BOUND = float(MAX_QUERY_PARTS)  # a composed score lies within +- the sum of |weight| <= parts


def _part(attributes: dict[str, list[str]], form: bool) -> dict[str, Any]:
    """A composed query's part: its attribute, one source, a weight. In JSON an image part holds its
    image (base64); a form's parts name file fields, which a schema cannot tie to the files sent, so
    the form's schema describes the parts by item or by value (docs/service.md shows image parts)."""
    value_of = [
        {"properties": {"attribute": {"const": name}, "value": {"enum": values}}}
        for name, values in attributes.items()
        if values
    ]
    by_value = (
        {"required": ["value"], "anyOf": value_of} if value_of else {"required": ["value"], "anyOf": [False]}
    )
    attribute = {"enum": list(attributes)} if attributes else {"type": "string", "minLength": 1}
    properties: dict[str, Any] = {
        "attribute": attribute,
        "item_id": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": ID_PATTERN},
        "value": {"type": "string", "minLength": 1},
        "weight": {"type": "number", "minimum": -1, "maximum": 1},
    }
    names = ["item_id", "value"] if form else ["image", "item_id", "value"]
    if not form:
        properties["image"] = {
            "type": "string",
            "minLength": 1,
            "format": IMAGE_FORMAT,
            "contentEncoding": "base64",
        }
    # one source: each branch names its own and holds none of the others (a value outside its
    # attribute's values must not pass as "an item_id part")
    sources: list[dict[str, Any]] = []
    for name in names:
        branch: dict[str, Any] = dict(by_value) if name == "value" else {"required": [name]}
        branch["properties"] = dict.fromkeys([other for other in names if other != name], False)
        sources.append(branch)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["attribute"],
        "properties": properties,
        "oneOf": sources,
    }


def _parts(attributes: dict[str, list[str]], form: bool) -> dict[str, Any]:
    """A composed query: 1 to MAX_QUERY_PARTS parts, one part an attribute (`maxContains`), not every
    weight 0 (some part without a weight, or with one that is not 0)."""
    weighted = {
        "anyOf": [
            {"properties": {"weight": False}},
            {
                "required": ["weight"],
                "properties": {
                    "weight": {
                        "anyOf": [
                            {"type": "number", "exclusiveMinimum": 0},
                            {"type": "number", "exclusiveMaximum": 0},
                        ]
                    }
                },
            },
        ]
    }
    rules: list[dict[str, Any]] = [{"contains": weighted}]
    rules += [
        {
            "contains": {"required": ["attribute"], "properties": {"attribute": {"const": name}}},
            "minContains": 0,
            "maxContains": 1,
        }
        for name in attributes
    ]
    return {
        "type": "array",
        "items": _part(attributes, form),
        "minItems": 1,
        "maxItems": MAX_QUERY_PARTS,
        "allOf": rules,
    }


@dataclass(frozen=True)
class ModelFacts:
    """What the loaded model lets a request name: each attribute's searchable values, the attributes
    with precision curves, the catalogue's fingerprint, the vectors' shape, and the `modified` its copy
    scores were calibrated for (None: no copy calibration) with the lowest rate it measures."""

    attributes: dict[str, list[str]] = field(default_factory=dict)
    curved: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    dim: int = 0
    copy_modified: int | None = None
    copy_rate_floor: float = 0.0  # the lowest false-match rate the copy calibration can measure


def _vectors(facts: ModelFacts) -> dict[str, Any]:
    row: dict[str, Any] = {
        "type": "array",
        "items": {"type": "number", "minimum": -VECTOR_BOUND, "maximum": VECTOR_BOUND},
    }
    if facts.dim:
        row.update(minItems=facts.dim, maxItems=facts.dim)
    schema: dict[str, Any] = {"type": "array", "items": row}
    if facts.attributes:
        schema.update(minItems=len(facts.attributes), maxItems=len(facts.attributes))
    return schema


def _properties(spec: BodySpec, settings: Settings, facts: ModelFacts, form: bool) -> dict[str, Any]:
    """Each field's schema (see the module docstring)."""
    attributes = facts.attributes
    image = (
        {"type": "string", "format": "binary"}
        if form
        else {
            "type": "string",
            "minLength": 1,
            "format": IMAGE_FORMAT,
            "contentEncoding": "base64",
            "contentMediaType": "image/png",
        }
    )
    item_id = {"type": "string", "minLength": 1, "maxLength": 512, "pattern": ID_PATTERN}
    attribute = {"enum": list(attributes)} if attributes else {"type": "string", "minLength": 1}
    # rerank candidates are any ids (those not in the catalogue come back in `unknown`); a form sends
    # one id a field, so there an id holds no comma (and, as every form field, is not empty)
    candidate = {"type": "string", "minLength": 1, "pattern": "^[^,]+$"} if form else {"type": "string"}
    known: dict[str, dict[str, Any]] = {
        "attribute": attribute,
        "image": image,
        "item_id": item_id,
        "id": item_id,
        "value": {"type": "string", "minLength": 1},
        "query": _parts(attributes, form),
        "filters": filters_schema(),
        "top_k": {"type": "integer", "minimum": 1, "maximum": settings.max_top_k},
        "offset": {"type": "integer", "minimum": 0, "maximum": settings.max_search_depth - 1},
        "cursor": {"type": "string", "format": CURSOR_FORMAT, "pattern": CURSOR_PATTERN},
        "group_by": dict(KEY),
        "min_score": {"type": "number", "minimum": -SCORE_BOUND, "maximum": SCORE_BOUND},
        "min_precision": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "max_results": {"type": "integer", "minimum": 1, "maximum": settings.max_results},
        "include_metadata": {"type": "boolean"},
        "verify": {"type": "boolean"},
        "fields": {"type": "array", "items": dict(KEY), "maxItems": MAX_SELECTED_FIELDS},
        "candidates": {
            "type": "array",
            "items": candidate,
            "minItems": 1,
            "maxItems": settings.max_candidates,
        },
        "weight": {"type": "number", "minimum": 0, "maximum": 1},
        "metadata": metadata_schema(),
        "replace": {"type": "boolean"},
        "fingerprint": {"const": facts.fingerprint}
        if facts.fingerprint
        else {"type": "string", "minLength": 1},
        "vectors": _vectors(facts),
    }
    out: dict[str, Any] = {}
    for name, declared in spec.model.model_fields.items():
        schema: dict[str, Any] = copy.deepcopy(known.get(name, {"type": "string"}))
        if declared.description:
            schema["description"] = declared.description
        out[name] = schema
    return out


ITEM_SOURCE = [
    {"required": ["image"], "properties": {"vectors": False, "fingerprint": False}},
    {"required": ["vectors", "fingerprint"], "properties": {"image": False}},
]


def body_schema(spec: BodySpec, settings: Settings, facts: ModelFacts, form: bool) -> dict[str, Any]:
    """A request body's schema (JSON, or a form: the same fields; files for images; in a form every
    field is non-empty, as the server refuses an empty one)."""
    properties = _properties(spec, settings, facts, form)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    rules: list[dict[str, Any]] = []
    name = spec.model.__name__
    if name in ("SearchRequest", "RerankRequest"):
        rules += _query_rules(name == "SearchRequest", facts)
        if name == "RerankRequest":
            schema["required"] = ["candidates"]
    elif name == "CopiesRequest":
        _copies_properties(properties, facts)
        schema["anyOf"] = [{"required": ["image"]}, {"required": ["item_id"]}]
        rules += [absent_with("image", "item_id"), absent_with("item_id", "image"), *_copies_rules(facts)]
    elif name in ("TagRequest", "ExplainRequest"):
        schema["anyOf"] = [{"required": ["image"]}, {"required": ["item_id"]}]
        rules += [absent_with("image", "item_id"), absent_with("item_id", "image")]
        if name == "ExplainRequest":
            schema["required"] = ["attribute"]
    elif name == "ItemRequest":
        schema["required"] = ["id"]
        schema["oneOf"] = ITEM_SOURCE
    elif name == "BatchRequest":
        properties["items"] = {**properties["items"], **_batch_items(settings, facts, form)}
        schema["required"] = ["items"]
    elif name == "PatchRequest":
        schema["required"] = ["metadata"]
    if rules:
        schema["allOf"] = rules
    return schema


def _copies_properties(properties: dict[str, Any], facts: ModelFacts) -> None:
    """/copies' ranges: a score, a rate the calibration can measure, a cursor, `modified` below the
    number of attributes."""
    properties["min_score"] = {**properties["min_score"], "minimum": -1, "maximum": 1}
    rate: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
    if facts.copy_modified is not None and facts.copy_rate_floor > 0:
        rate["minimum"] = facts.copy_rate_floor  # below it the calibration cannot measure a rate
    properties["max_false_match_rate"] = {**properties["max_false_match_rate"], **rate}
    properties["cursor"] = {**properties["cursor"], "format": COPIES_CURSOR_FORMAT}
    modified: dict[str, Any] = {"type": "integer", "minimum": 0}
    if facts.attributes:
        modified["maximum"] = len(facts.attributes) - 1
    properties["modified"] = {**properties["modified"], **modified}


def _batch_items(settings: Settings, facts: ModelFacts, form: bool) -> dict[str, Any]:
    """The `items` array of a batch. An item that is not what this describes refuses the whole batch
    (422, nothing written); an image that cannot be read, an id already there or sent twice is its
    own item's result."""
    item = _properties(BodySpec(ItemFields), settings, facts, form=False)
    source: list[dict[str, Any]] = copy.deepcopy(ITEM_SOURCE)
    if form:  # a form's items name their file fields: the schema describes the vectors-only form
        item.pop("image")
        source = [{"required": ["vectors", "fingerprint"]}]
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": settings.max_batch_items,
        "items": {
            "type": "object",
            "properties": item,
            "additionalProperties": False,
            "required": ["id"],
            "oneOf": source,
        },
    }


def _query_rules(search: bool, facts: ModelFacts) -> list[dict[str, Any]]:
    """The rules between fields, as `required` and absent (`false`) properties: one query source
    (`attribute` with one of image, item_id, value; or a composed `query`); top_k or a threshold, and
    the rules between them."""
    sources = ("image", "item_id", "value")
    everything = (*sources, "query")
    values: list[Any] = [
        {"properties": {"attribute": {"const": name}, "value": {"enum": vals}}}
        for name, vals in facts.attributes.items()
        if vals
    ]
    by_value = {"required": ["attribute", "value"], "oneOf": values or [False]}  # a value of that attribute
    rules: list[dict[str, Any]] = [
        {
            "anyOf": [
                {"required": ["attribute", "image"]},
                {"required": ["attribute", "item_id"]},
                by_value,
                {"required": ["query"]},
            ]
        },
        *[absent_with(name, *[other for other in everything if other != name]) for name in everything],
        absent_with("query", "attribute"),
    ]
    if search:
        threshold = [{"required": ["min_score"]}, {"required": ["min_precision"]}]
        rules += [
            absent_with("min_score", "min_precision", "top_k", "group_by"),
            absent_with("min_precision", "top_k", "group_by", "query"),
            absent_with("cursor", "offset"),
            {"if": {"required": ["max_results"]}, "then": {"anyOf": threshold}},
            {
                "if": {"required": ["min_precision"]},
                "then": {"properties": {"attribute": {"enum": facts.curved}}},
            },
        ]
    return rules


def _copies_rules(facts: ModelFacts) -> list[dict[str, Any]]:
    """/copies: top_k or one threshold; max_results with a threshold; a cursor or an offset; a
    false-match rate only with a copy calibration, for the `modified` it was made for."""
    threshold = [{"required": ["min_score"]}, {"required": ["max_false_match_rate"]}]
    rules: list[dict[str, Any]] = [
        absent_with("min_score", "max_false_match_rate", "top_k"),
        absent_with("max_false_match_rate", "top_k"),
        absent_with("cursor", "offset"),
        {"if": {"required": ["max_results"]}, "then": {"anyOf": threshold}},
    ]
    if facts.copy_modified is None:
        rules.append({"properties": {"max_false_match_rate": False}})
    else:
        rules.append(
            {
                "if": {"required": ["max_false_match_rate"]},
                "then": {"properties": {"modified": {"const": facts.copy_modified}}},
            }
        )
    return rules

"""The OpenAPI schema describes the server as it is: each body endpoint takes JSON and a form, with
the same fields; the ranges that come from the settings (top_k, max_results, the paging depth,
candidates); the attributes and values of the loaded model; the rules between fields (one query
source; top_k or a threshold; ...). What the schema allows the server takes, and the other way
round: schemathesis runs against it in CI (tests/service/test_schemathesis.py).

Bodies are read by service/api/bodies.py from the request itself (one reader for both transports),
so FastAPI does not see them: routes carry a mark (`routes/common.py` BODY_MARK) and `install`
writes their request bodies into the generated schema.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from asen_search.service.api.bodies import BodySpec
from asen_search.service.api.requests import ItemFields
from asen_search.service.api.routes.common import BODIES, BODY_MARK
from asen_search.service.api.settings import Settings
from asen_search.service.operations.items import VECTOR_BOUND
from asen_search.service.operations.queries import MAX_QUERY_PARTS

# text without control characters (C0, DEL, C1): what ids, keys and field names may hold
ID_PATTERN = KEY_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
USER_KEY_PATTERN = "^(?!_image$)(?!predicted\\.)[^\\x00-\\x1f\\x7f-\\x9f]+$"   # not the service's own keys
TEXT_PATTERN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"   # values: tab, newline, return allowed
CURSOR_FORMAT = "asen-cursor"       # a cursor: the `next_cursor` of an answer (base64url of the next page's place)
COPIES_CURSOR_FORMAT = "asen-copies-cursor"   # the `next_cursor` of a /copies answer
IMAGE_FORMAT = "image-base64"       # a base64 image (schemathesis: tests/schemathesis_hooks.py generates real ones)
IMAGE_MEDIA = "image/png, image/jpeg"
SCORE_BOUND = float(MAX_QUERY_PARTS)  # a composed score lies within +- the sum of |weight| <= parts


def _scalar(text: bool = True) -> dict[str, Any]:
    kinds: list[dict[str, Any]] = [{"type": "number", "minimum": -1e15, "maximum": 1e15}, {"type": "boolean"},
                                   {"type": "null"}]
    return {"anyOf": [{"type": "string", "maxLength": 200, "pattern": TEXT_PATTERN}, *kinds] if text else kinds}


def filters_schema() -> dict[str, Any]:
    """The filter language (index/filters.py) as a schema."""
    number = {"type": "number", "minimum": -1e15, "maximum": 1e15}
    values = {"type": "array", "items": _scalar(), "maxItems": 20}
    operators = {"type": "object", "additionalProperties": False, "minProperties": 1,
                 "properties": {"eq": _scalar(), "in": values, "not": _scalar(), "not_in": values, "gt": number,
                                "gte": number, "lt": number, "lte": number, "exists": {"type": "boolean"}},
                 "allOf": [absent_with("gt", "gte"), absent_with("lt", "lte")]}
    return {"type": "object", "maxProperties": 8, "propertyNames": {"pattern": KEY_PATTERN, "minLength": 1,
                                                                    "maxLength": 64},
            "additionalProperties": {"anyOf": [_scalar(), values, operators]},
            "description": "every field must match: a value, a list of values (any of them), or operators; the "
                           "field `_image` is the service's and refused"}


def metadata_schema() -> dict[str, Any]:
    """Metadata a user may send: a JSON object, keys of the service's own (`_image`, `predicted.*`) refused."""
    leaf = {"anyOf": [{"type": "string", "pattern": TEXT_PATTERN},
                      {"type": "number", "minimum": -1e15, "maximum": 1e15}, {"type": "boolean"}, {"type": "null"}]}
    return {"type": "object", "propertyNames": {"pattern": USER_KEY_PATTERN, "minLength": 1, "maxLength": 256},
            "additionalProperties": {"anyOf": [leaf, {"type": "array", "items": leaf}]},
            "description": "a JSON object; the keys `_image` and `predicted.*` are the service's and refused"}


def absent_with(field: str, *others: str) -> dict[str, Any]:
    """`others` absent where `field` is present (`false` property schemas: spelled out, where a `not`
    over `required` is more than the generators of test tools take)."""
    return {"if": {"required": [field]}, "then": {"properties": dict.fromkeys(others, False)}}


def exactly_one(*names: str) -> dict[str, Any]:
    """One of `names` present, never two."""
    return {"anyOf": [{"required": [name]} for name in names],
            "allOf": [absent_with(name, *[other for other in names if other != name]) for name in names]}


def _part(attributes: dict[str, list[str]], form: bool) -> dict[str, Any]:
    """A composed query's part: its attribute, one source, a weight. In JSON an image part holds its
    image (base64); a form's parts name file fields, which a schema cannot tie to the files sent, so
    the form's schema describes the parts by item or by value (docs/service.md shows image parts)."""
    value_of = [{"properties": {"attribute": {"const": name}, "value": {"enum": values}}} for name, values in
                attributes.items() if values]
    by_value = {"required": ["value"], "anyOf": value_of} if value_of else {"required": ["value"], "anyOf": [False]}
    attribute = {"enum": list(attributes)} if attributes else {"type": "string"}
    properties: dict[str, Any] = {
        "attribute": attribute, "item_id": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": ID_PATTERN},
        "value": {"type": "string", "minLength": 1}, "weight": {"type": "number", "minimum": -1, "maximum": 1}}
    sources = [{"required": ["item_id"]}, by_value]
    if not form:
        properties["image"] = {"type": "string", "format": IMAGE_FORMAT, "contentEncoding": "base64"}
        sources.insert(0, {"required": ["image"]})
    return {"type": "object", "additionalProperties": False, "required": ["attribute"], "properties": properties,
            "oneOf": sources}


@dataclass(frozen=True)
class ModelFacts:
    """What the loaded model lets a request name: each attribute's searchable values, the attributes
    with precision curves, the catalogue's fingerprint, the vectors' shape, and the `modified` its copy
    scores were calibrated for (None: no copy calibration)."""

    attributes: dict[str, list[str]] = field(default_factory=dict)
    curved: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    dim: int = 0
    copy_modified: int | None = None


def _vectors(facts: ModelFacts) -> dict[str, Any]:
    row: dict[str, Any] = {"type": "array", "items": {"type": "number", "minimum": -VECTOR_BOUND,
                                                      "maximum": VECTOR_BOUND}}
    if facts.dim:
        row.update(minItems=facts.dim, maxItems=facts.dim)
    schema: dict[str, Any] = {"type": "array", "items": row}
    if facts.attributes:
        schema.update(minItems=len(facts.attributes), maxItems=len(facts.attributes))
    return schema


def _properties(spec: BodySpec, settings: Settings, facts: ModelFacts, form: bool) -> dict[str, Any]:
    """Each field's schema (see the module docstring)."""
    attributes = facts.attributes
    image = {"type": "string", "format": "binary"} if form else \
        {"type": "string", "format": IMAGE_FORMAT, "contentEncoding": "base64", "contentMediaType": "image/png"}
    item_id = {"type": "string", "minLength": 1, "maxLength": 512, "pattern": ID_PATTERN}
    parts = {"type": "array", "items": _part(attributes, form), "minItems": 1, "maxItems": MAX_QUERY_PARTS}
    attribute = {"enum": list(attributes)} if attributes else {"type": "string", "minLength": 1}
    known: dict[str, dict[str, Any]] = {
        "attribute": attribute, "image": image, "item_id": item_id, "id": item_id,
        "value": {"type": "string", "minLength": 1}, "query": parts, "filters": filters_schema(),
        "top_k": {"type": "integer", "minimum": 1, "maximum": settings.max_top_k},
        "offset": {"type": "integer", "minimum": 0, "maximum": settings.max_search_depth - settings.max_top_k},
        "cursor": {"type": "string", "format": CURSOR_FORMAT, "pattern": "^[A-Za-z0-9_-]+$"},
        "group_by": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": KEY_PATTERN},
        "min_score": {"type": "number", "minimum": -SCORE_BOUND, "maximum": SCORE_BOUND},
        "min_precision": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "max_results": {"type": "integer", "minimum": 1, "maximum": min(settings.max_results,
                                                                        settings.max_search_depth)},
        "include_metadata": {"type": "boolean"},
        "fields": {"type": "array", "items": {"type": "string", "minLength": 1, "pattern": KEY_PATTERN},
                   "maxItems": 16},
        "candidates": {"type": "array", "items": {**item_id, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f,]+$"},
                       "minItems": 1, "maxItems": settings.max_candidates},
        "weight": {"type": "number", "minimum": 0, "maximum": 1},
        "metadata": metadata_schema(), "replace": {"type": "boolean"},
        "fingerprint": {"const": facts.fingerprint} if facts.fingerprint else {"type": "string"},
        "vectors": _vectors(facts),
    }
    out: dict[str, Any] = {}
    for name, declared in spec.model.model_fields.items():
        schema: dict[str, Any] = copy.deepcopy(known.get(name, {"type": "string"}))
        if declared.description:
            schema["description"] = declared.description
        out[name] = schema
    return out


ITEM_SOURCE = [{"required": ["image"], "properties": {"vectors": False, "fingerprint": False}},
               {"required": ["vectors", "fingerprint"], "properties": {"image": False}}]


def body_schema(spec: BodySpec, settings: Settings, facts: ModelFacts, form: bool) -> dict[str, Any]:
    properties = _properties(spec, settings, facts, form)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    name = spec.model.__name__
    if name in ("SearchRequest", "RerankRequest"):
        schema["allOf"] = _query_rules(name == "SearchRequest", facts)
        if name == "RerankRequest":
            schema["required"] = ["candidates"]
    elif name == "CopiesRequest":
        properties["min_score"] = {**properties["min_score"], "minimum": -1, "maximum": 1}
        properties["max_false_match_rate"] = {**properties["max_false_match_rate"], "type": "number", "minimum": 0,
                                              "maximum": 1}
        properties["cursor"] = {**properties["cursor"], "format": COPIES_CURSOR_FORMAT}
        modified: dict[str, Any] = {"type": "integer", "minimum": 0}
        if facts.attributes:
            modified["maximum"] = len(facts.attributes) - 1
        properties["modified"] = {**properties["modified"], **modified}
        schema.update(exactly_one("image", "item_id"))
        schema["allOf"] = _copies_rules(facts)
    elif name in ("TagRequest", "ExplainRequest"):
        schema.update(exactly_one("image", "item_id"))
        schema["required"] = ["attribute"] if name == "ExplainRequest" else []
    elif name == "ItemRequest":
        schema["required"] = ["id"]
        schema["oneOf"] = ITEM_SOURCE
    elif name == "BatchRequest":
        item = _properties(BodySpec(ItemFields), settings, facts, form=False)
        if form:   # a form's items name their file fields: the schema describes the vectors-only form
            item.pop("image")
        # each item is judged on its own (its result says `created`, `replaced` or `error` with a code),
        # so the request takes any items with an id
        properties["items"] = {"type": "array", "minItems": 1, "maxItems": settings.max_batch_items,
                               "items": {"type": "object", "properties": item, "additionalProperties": False,
                                         "required": ["id"]}}
        schema["required"] = ["items"]
    elif name == "PatchRequest":
        schema["required"] = ["metadata"]
    return schema


def _query_rules(search: bool, facts: ModelFacts) -> list[dict[str, Any]]:
    """The rules between fields, as `required` and absent (`false`) properties: one query source
    (`attribute` with one of image, item_id, value; or a composed `query`); top_k or a threshold, and
    the rules between them."""
    sources = ("image", "item_id", "value")
    everything = (*sources, "query")
    values: list[Any] = [{"properties": {"attribute": {"const": name}, "value": {"enum": vals}}}
                         for name, vals in facts.attributes.items() if vals]
    by_value = {"required": ["attribute", "value"], "oneOf": values or [False]}   # a value of that attribute
    rules: list[dict[str, Any]] = [
        {"anyOf": [{"required": ["attribute", "image"]}, {"required": ["attribute", "item_id"]}, by_value,
                   {"required": ["query"]}]},
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
            {"if": {"required": ["min_precision"]}, "then": {"properties": {"attribute": {"enum": facts.curved}}}},
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
        rules.append({"if": {"required": ["max_false_match_rate"]},
                      "then": {"properties": {"modified": {"const": facts.copy_modified}}}})
    return rules


def install(app: FastAPI, settings: Settings) -> None:
    """`app.openapi()` with the bodies filled in, from the loaded model once it is loaded; the write
    endpoints' API key declared only where the server has one (without it, writes take no key)."""

    def openapi() -> dict[str, Any]:
        runtime = getattr(app.state, "runtime", None)
        if app.openapi_schema is not None and runtime is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        facts = ModelFacts() if runtime is None else _facts(runtime)
        for operations in schema["paths"].values():
            for operation in operations.values():
                name = operation.pop(BODY_MARK, None)
                if name is None:
                    continue
                spec = BODIES[name]
                content = {"application/json": {"schema": body_schema(spec, settings, facts, form=False)}}
                content["multipart/form-data"] = {"schema": body_schema(spec, settings, facts, form=True)}
                if "image" in spec.files:
                    content["multipart/form-data"]["encoding"] = {"image": {"contentType": IMAGE_MEDIA}}
                operation["requestBody"] = {"required": True, "content": content}
        if settings.api_key is None:
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
            schema.get("components", {}).pop("securitySchemes", None)
        if runtime is not None:
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _facts(runtime: Any) -> ModelFacts:
    encoder = runtime.encoder
    curves = encoder.thresholds.curves if encoder.thresholds is not None else {}
    copies = encoder.copy_calibration
    return ModelFacts({a.name: _searchable(runtime, a.name, list(a.values)) for a in encoder.attributes},
                      [a.name for a in encoder.attributes if a.name in curves], runtime.catalogue.fingerprint,
                      runtime.catalogue.dim, None if copies is None else copies.modified)


def _searchable(runtime: Any, name: str, values: list[str]) -> list[str]:
    """The values a query can name (those with a prototype; none without prototypes)."""
    prototypes = runtime.encoder.prototypes
    if prototypes is None:
        return []
    import numpy as np

    known = np.isfinite(prototypes.vectors[name]).all(axis=1)
    return [v for v, ok in zip(values, known.tolist()) if ok]

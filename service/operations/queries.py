"""What a query asks for, and its vectors. Two forms, one shape inside:

- one attribute: `attribute` with exactly one source, an `image`, a catalogue `item_id` or a `value`
  (the value's prototype);
- a composed query: `query`, a list of parts, each an attribute, one source and a weight in [-1, 1]:

    [{"attribute": "neckline", "image": "front"},                 # a named image of the request
     {"attribute": "colour", "item_id": "sku-7", "weight": 0.5},  # a catalogue item's vector
     {"attribute": "pattern", "value": "striped", "weight": -1}]  # the value's prototype

The score of an item is the weighted sum of its per-attribute cosine similarities (index/composed.py).
Every problem is a ServiceError with its own code, found before any image is encoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from asen_search.index import Part, validate_id
from asen_search.index.errors import InvalidItemId
from asen_search.model.prototypes import NoPrototype
from asen_search.service.operations import images
from asen_search.service.operations.context import Service, Stages
from asen_search.service.operations.errors import ServiceError

MAX_QUERY_PARTS = 16
SOURCES = ("image", "item_id", "value")
SINGLE_IMAGE = "image"  # the name the single-attribute form's image goes by


@dataclass(frozen=True)
class PartSpec:
    """One part: its attribute, which source (`image`, `item_id` or `value`) with what, its weight."""

    attribute: str
    source: str
    ref: str
    weight: float

    def describe(self) -> dict[str, Any]:
        return {"attribute": self.attribute, self.source: self.ref, "weight": self.weight}


@dataclass(frozen=True)
class QueryInput:
    """A query as a request sends it (any transport): the single-attribute fields, or `parts`; the
    images it carries by name (the single form's is `image`)."""

    attribute: str | None = None
    item_id: str | None = None
    value: str | None = None
    parts: object = None
    images: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryPlan:
    """A checked query: its parts, whether it was sent as a composed query, the images it uses."""

    specs: list[PartSpec]
    composed: bool

    @property
    def exclude(self) -> list[str]:
        """Catalogue items the query is made of: never returned as results."""
        return list(dict.fromkeys(p.ref for p in self.specs if p.source == "item_id"))

    @property
    def attribute(self) -> str | None:
        return None if self.composed else self.specs[0].attribute

    def described(self) -> list[dict[str, Any]] | None:
        return [p.describe() for p in self.specs] if self.composed else None


def _invalid(detail: str, code: str = "invalid_query") -> ServiceError:
    return ServiceError(code, detail)


def _item_id(ref: str) -> str:
    try:
        return validate_id(ref)
    except InvalidItemId as exc:
        raise ServiceError("invalid_item_id", str(exc)) from None


def plan_query(query: QueryInput, attributes: list[str]) -> QueryPlan:
    """The parts of a query, checked (the single form is a composed query of one part of weight 1)."""
    single = {name: getattr(query, name) for name in ("item_id", "value")}
    if SINGLE_IMAGE in query.images and query.parts is None:
        single["image"] = SINGLE_IMAGE
    sources = [name for name, ref in single.items() if ref is not None]
    if query.parts is None:
        unnamed = sorted(set(query.images) - {SINGLE_IMAGE})
        if unnamed:
            raise ServiceError(
                "unknown_field",
                f"the request sends images named {unnamed}: a single-attribute query "
                "takes one `image` (named images are for the parts of a composed `query`)",
            )
        if query.attribute is None:
            raise ServiceError(
                "attribute_required" if sources else "query_required",
                "send `attribute` (see GET /attributes) with one of `image`, `item_id` or `value`, "
                "or a composed `query`",
            )
        if len(sources) != 1:
            raise ServiceError(
                "query_required",
                "send exactly one of `image`, `item_id` or `value` with `attribute` "
                f"(got {', '.join(sources) or 'none'})",
            )
        source = sources[0]
        spec = _parse_part(0, {"attribute": query.attribute, source: single[source]}, attributes, single=True)
        return QueryPlan([spec], composed=False)
    if query.attribute is not None or sources:
        raise ServiceError(
            "ambiguous_query",
            "send either a composed `query` or `attribute` with `image`, `item_id` "
            "or `value`, not both (a composed query names each part's attribute and source)",
        )
    return QueryPlan(_parse_parts(query.parts, attributes), composed=True)


def _parse_parts(raw: object, attributes: list[str]) -> list[PartSpec]:
    if not isinstance(raw, list) or not raw:
        raise _invalid(
            'query must be a non-empty JSON list of parts, e.g. [{"attribute": "neckline", "image": '
            '"image"}, {"attribute": "colour", "item_id": "sku-7", "weight": 0.5}]'
        )
    if len(raw) > MAX_QUERY_PARTS:
        raise _invalid(f"query has {len(raw)} parts; at most {MAX_QUERY_PARTS}")
    parts = [_parse_part(n, part, attributes) for n, part in enumerate(raw)]
    seen: dict[str, int] = {}
    for n, part in enumerate(parts):
        if part.attribute in seen:
            raise _invalid(
                f"parts {seen[part.attribute]} and {n} are both about {part.attribute!r}: give each "
                "attribute one part",
                "duplicate_attribute",
            )
        seen[part.attribute] = n
    if all(p.weight == 0 for p in parts):
        raise _invalid("every part has weight 0: give at least one part a non-zero weight", "zero_weights")
    return parts


def _parse_part(n: int, part: object, attributes: list[str], single: bool = False) -> PartSpec:
    if not isinstance(part, dict):
        raise _invalid(f"part {n} must be a JSON object, got {json.dumps(part)[:80]}")
    unknown = sorted(set(part) - {"attribute", "weight", *SOURCES})
    if unknown:
        raise _invalid(
            f"part {n} has unknown keys {unknown}; a part has 'attribute', one of 'image', "
            "'item_id' or 'value', and optionally 'weight'"
        )
    attribute = part.get("attribute")
    if not isinstance(attribute, str):
        raise _invalid(f"part {n} needs 'attribute', an attribute name (see GET /attributes)")
    if attribute not in attributes:
        where = "" if single else f"part {n}: "
        raise _invalid(
            f"{where}unknown attribute {attribute!r}; known attributes: {', '.join(attributes)}",
            "unknown_attribute",
        )
    sources = [s for s in SOURCES if s in part]
    if len(sources) != 1:
        raise _invalid(
            f"part {n} ({attribute}) needs exactly one of 'image' (the name of an image of the "
            f"request), 'item_id' or 'value', got {sources or 'none'}"
        )
    ref = part[sources[0]]
    if not isinstance(ref, str) or not ref:
        raise _invalid(f"part {n} ({attribute}): {sources[0]!r} must be a non-empty string")
    if sources[0] == "item_id":
        ref = _item_id(ref)
    weight = part.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not -1.0 <= weight <= 1.0:
        raise _invalid(
            f"part {n} ({attribute}): weight must be a number in [-1, 1], got {json.dumps(weight)}",
            "weight_out_of_range",
        )
    return PartSpec(attribute, sources[0], ref, float(weight))


def check_images(plan: QueryPlan, names: set[str]) -> None:
    """Every image a part names was sent, and every image sent is named by a part."""
    named = {p.ref for p in plan.specs if p.source == "image"}
    for n, part in enumerate(plan.specs):
        if part.source == "image" and part.ref not in names:
            raise _invalid(
                f"part {n} ({part.attribute}) names the image {part.ref!r}, but the request has no image "
                f"under that name (it has: {sorted(names) or 'none'})",
                "image_not_uploaded",
            )
    unused = sorted(names - named)
    if unused:
        raise ServiceError(
            "unknown_field",
            f"the request sends images no query part names: {unused} (a part names "
            'an image by its field name: {"attribute": ..., "image": "NAME"})',
        )


async def resolve(service: Service, plan: QueryPlan, sent: dict[str, bytes], timer: Stages) -> list[Part]:
    """The query vector of every part: value prototypes, catalogue items' vectors, and images (each
    decoded once and encoded once for all the attributes that use it)."""
    check_images(plan, set(sent))
    vectors: dict[int, np.ndarray] = {}
    for n, part in enumerate(plan.specs):
        if part.source == "value":
            vectors[n] = _prototype(service, n, part, plan.composed)
    catalogue = service.catalogue
    for n, part in enumerate(plan.specs):
        if part.source == "item_id":  # UnknownItem: 404 `unknown_item`
            vectors[n] = await anyio.to_thread.run_sync(catalogue.vector, part.ref, part.attribute)
    for name in dict.fromkeys(p.ref for p in plan.specs if p.source == "image"):
        users = [n for n, p in enumerate(plan.specs) if p.source == "image" and p.ref == name]
        picture = await images.decode(service, sent[name], timer)
        encoded = await images.encode(
            service, picture, [service.encoder.attribute_id(plan.specs[n].attribute) for n in users], timer
        )
        for row, n in enumerate(users):
            vectors[n] = encoded[row]
    return [Part(p.attribute, vectors[n], p.weight) for n, p in enumerate(plan.specs)]


def _prototype(service: Service, n: int, part: PartSpec, composed: bool) -> np.ndarray:
    prototypes = service.encoder.prototypes
    where = f"part {n} ({part.attribute})" if composed else part.attribute
    if prototypes is None:
        raise _invalid(
            f"{where} asks for the value {part.ref!r}, but this model's checkpoint has no value "
            "prototypes (trained before they existed, or imported): add them with "
            "`asen prototypes --checkpoint CKPT --data DATASET`",
            "no_prototypes",
        )
    try:
        return prototypes.vector(part.attribute, part.ref)
    except NoPrototype as exc:
        raise _invalid(f"{where}: {exc}", "unknown_value") from None

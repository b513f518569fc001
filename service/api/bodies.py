"""Reading a request body, JSON or form, into one request model (service/api/requests.py).

- `application/json`: a JSON object; images as base64 strings. Parsed by `parse_json` (the one JSON
  parser of the service: depth and size limits, no NaN/Infinity, no 4,300-digit integers; everything
  it refuses is 422 `invalid_json`, never a 500) and validated strictly (a number sent as a string is
  refused, as the schema says).
- `multipart/form-data` (or `application/x-www-form-urlencoded`): the same fields as form fields;
  images as files; fields holding JSON (a composed `query`, `filters`, `metadata`) as JSON text, each
  through `parse_json`; list fields (`candidates`, `fields`) repeated once per value. An empty field
  is refused (422 `invalid_request`: leave the field out instead), as JSON refuses `null`: an empty
  id, attribute or number is no value, and a form says what JSON says.

A whole number is an integer however it is written (`5`, `5.0`, in a form also `5e0`), as in the
OpenAPI schema (JSON Schema's integers are the numbers without a fraction).

Either way a field the endpoint does not take is 422 `unknown_field`, naming the closest one it
takes; a scalar field sent twice is 422 `invalid_request`.
"""

from __future__ import annotations

import difflib
import json
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from asen_search.service.operations.errors import ServiceError

M = TypeVar("M", bound=BaseModel)
MAX_JSON_DEPTH = 32
JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class InvalidFields(ServiceError):
    """422 `invalid_request` with FastAPI's list of problems."""

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid_request", detail)
        self.errors = errors


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str | bytes, what: str) -> Any:
    """`text` as JSON; 422 `invalid_json` saying why for anything else, however it is malformed."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ServiceError("invalid_json", f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (
        ValueError,
        UnicodeDecodeError,
    ) as exc:  # JSONDecodeError, an integer of too many digits, bad UTF-8
        raise ServiceError("invalid_json", f"{what} is not valid JSON: {str(exc)[:200]}") from None
    _check_depth(value, what)
    return value


def _check_depth(value: Any, what: str) -> None:
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ServiceError("invalid_json", f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


@dataclass(frozen=True)
class BodySpec:
    """What an endpoint's body holds: its model's fields, which of them are lists (repeated form
    fields), which hold JSON in a form, which are files; whether other file fields are images a
    composed query names."""

    model: type[BaseModel]
    lists: frozenset[str] = frozenset()
    json_fields: frozenset[str] = frozenset()
    files: frozenset[str] = frozenset()
    named_images: bool = False

    @property
    def names(self) -> list[str]:
        return list(self.model.model_fields)


@dataclass
class Body:
    """A request's fields (model-ready) and the files it uploaded, read to bytes."""

    fields: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    form: bool = False


def closest(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f": did you mean `{match[0]}`?" if match else ""


def unknown_field(name: str, known: Iterable[str]) -> ServiceError:
    known = sorted(known)
    return ServiceError(
        "unknown_field",
        f"`{name}` is not a field of this endpoint{closest(name, known)} (its fields: {', '.join(known)})",
    )


async def read_body(request: Request, spec: BodySpec, max_file_bytes: int, max_fields: int = 1000) -> Body:
    """The body as fields and files; 415 for a body that is neither JSON nor a form."""
    for name in request.query_params:  # `?top_k=3` on a POST would be silently ignored
        raise ServiceError(
            "unknown_field",
            f"`{name}` is sent in the URL: this endpoint reads its fields from the body (JSON or a form)",
        )
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in JSON_TYPES or media.endswith("+json"):
        data = parse_json(await request.body(), "the JSON body")
        if not isinstance(data, dict):
            raise ServiceError(
                "invalid_json", f"the JSON body must be an object of fields, got {type(data).__name__}"
            )
        for name, value in data.items():
            if name not in spec.names:
                raise unknown_field(name, spec.names)
            if value is None:  # the schema has no null field: leave a field out to not send it
                raise ServiceError("invalid_request", f"`{name}` is null: leave the field out instead")
        return Body(data)
    if media in FORM_TYPES:
        return await _read_form(request, spec, max_file_bytes, max_fields)
    if not media and not await request.body():
        return Body({}, form=True)
    raise ServiceError(
        "unsupported_media_type",
        f"the body is {media or 'of no declared type'}: send JSON "
        "(Content-Type: application/json) or a form (multipart/form-data, with files)",
    )


async def _read_form(request: Request, spec: BodySpec, max_file_bytes: int, max_fields: int) -> Body:
    form = await request.form(max_fields=max_fields, max_files=max(16, max_fields // 10))
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for name in dict.fromkeys(form.keys()):
        values = form.getlist(name)
        uploads = [v for v in values if isinstance(v, UploadFile)]
        if uploads:
            if name not in spec.files and not spec.named_images:
                raise unknown_field(name, spec.names)
            if len(values) > 1:
                raise ServiceError("invalid_request", f"the file field `{name}` is sent {len(values)} times")
            files[name] = await _read_file(uploads[0], name, max_file_bytes)
            continue
        texts = [str(v) for v in values]
        if name not in spec.names or name in spec.files:
            raise unknown_field(name, spec.names)
        if "" in texts:
            raise ServiceError(
                "invalid_request",
                f"`{name}` is sent empty: leave the field out instead"
                + (
                    " (a list field is repeated once per value, each non-empty)" if name in spec.lists else ""
                ),
            )
        if name in spec.lists:
            fields[name] = texts
        elif len(texts) > 1:
            raise ServiceError(
                "invalid_request",
                f"`{name}` is sent {len(texts)} times; it takes one value"
                + (" (a list field is repeated once per value)" if spec.lists else ""),
            )
        else:
            fields[name] = parse_json(texts[0], f"`{name}`") if name in spec.json_fields else texts[0]
    return Body(fields, files, form=True)


async def _read_file(upload: UploadFile, name: str, max_bytes: int) -> bytes:
    from asen_search.model.image_input import ImageTooLarge

    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the file `{name}` is over the limit of {max_bytes} bytes")
    return data


def _form_booleans(model: type[BaseModel], fields: dict[str, Any]) -> dict[str, Any]:
    """A form's booleans as the schema spells them (`true` / `false`), not every word pydantic would take."""
    out = dict(fields)
    for name, declared in model.model_fields.items():
        if declared.annotation is bool and isinstance(out.get(name), str):
            text = out[name].strip().lower()
            if text not in ("true", "false"):
                raise ServiceError("invalid_request", f"`{name}` is true or false, got {out[name][:40]!r}")
            out[name] = text == "true"
    return out


def _is_integer_field(annotation: Any) -> bool:
    return annotation is int or (
        typing.get_origin(annotation) in (types.UnionType, typing.Union)
        and int in typing.get_args(annotation)
    )


def _whole_numbers(model: type[BaseModel], fields: dict[str, Any]) -> dict[str, Any]:
    """Integer fields given a whole number written with a fraction or an exponent (JSON `5.0`, a form's
    `5.0` or `5e0`) as that integer: JSON Schema's integers are the numbers without a fraction, and
    the OpenAPI schema says `integer`. A fraction stays, and is refused as not an integer."""
    out = dict(fields)
    for name, declared in model.model_fields.items():
        value = out.get(name)
        if not _is_integer_field(declared.annotation) or isinstance(value, bool) or value is None:
            continue
        number = value
        if isinstance(value, str):
            try:
                number = (
                    float(value)
                    if value.strip().lower()
                    not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity")
                    else value
                )
            except ValueError:
                continue
            if isinstance(number, float) and "." not in value and "e" not in value.lower():
                continue  # a plain integer text: pydantic reads it exactly
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            out[name] = int(number)
    return out


def _errors(exc: ValidationError) -> list[Any]:
    return list(exc.errors(include_url=False, include_input=False, include_context=False))


def _invalid(errors: list[Any]) -> InvalidFields:
    """422 `invalid_request` listing each problem (`errors`), summed up in the detail."""
    problems = jsonable_encoder(errors)
    summary = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in problems)
    return InvalidFields(summary, problems)


def _strict(model: type[BaseModel], name: str, value: Any) -> None:
    """A form field holding JSON validated as strictly as in a JSON body (`true` is no number); its
    problems located under the field's name."""
    try:
        TypeAdapter(model.model_fields[name].annotation or Any).validate_python(value, strict=True)
    except ValidationError as exc:
        raise _invalid([{**e, "loc": (name, *e["loc"])} for e in _errors(exc)]) from None


def _no_nulls(value: object, path: str) -> None:
    """No field of a request model is sent as null, however deep (a batch's items): the schema has no
    null field; a field left out is how a request does not send it. JSON values inside a field
    (metadata, filters) are the field's own and may hold null."""
    if isinstance(value, BaseModel):
        for name in value.model_fields_set:
            held = getattr(value, name)
            if held is None:
                raise ServiceError("invalid_request", f"`{path}{name}` is null: leave the field out instead")
            _no_nulls(held, f"{path}{name}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            if isinstance(item, BaseModel):
                _no_nulls(item, f"{path}[{n}].")


def validate(spec: BodySpec, body: Body, model: type[M]) -> M:
    """The body's fields as `model`: strict for JSON (the types of the schema), lax for forms (whose
    values are text; their booleans `true`/`false`); 422 `invalid_request` listing each problem, or
    naming a (nested) field sent as null."""
    try:
        if body.form:
            for name in spec.json_fields & body.fields.keys():  # JSON in a form is read as JSON is
                _strict(model, name, body.fields[name])
            asked = model.model_validate(_form_booleans(model, _whole_numbers(model, body.fields)))
        else:
            asked = model.model_validate(_whole_numbers(model, body.fields), strict=True)
    except ValidationError as exc:
        raise _invalid(_errors(exc)) from None
    _no_nulls(asked, "")
    return asked


async def read_request(
    request: Request, spec: BodySpec, model: type[M], max_file_bytes: int, max_fields: int = 1000
) -> tuple[M, Body]:
    body = await read_body(request, spec, max_file_bytes, max_fields)
    return validate(spec, body, model), body

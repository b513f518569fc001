"""What schemathesis cannot know from a JSON schema, given as strategies (loaded with
SCHEMATHESIS_HOOKS=tests.helpers.schemathesis_hooks): an image field holds a real image (PNG or JPEG, as a
file or base64), and a cursor is one the service issues (the place of a next page). And for a form
carrying a file, which schemathesis cannot validate, each case's label (valid or invalid) checked
against the schema itself (`filter_case`, below)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import schemathesis
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from PIL import Image
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transforms import to_wire_text
from schemathesis.transport.serialization import Binary


@st.composite
def _image(draw: st.DrawFn, kind: str) -> bytes:
    width, height = draw(st.integers(8, 96)), draw(st.integers(8, 96))
    colour = tuple(draw(st.integers(0, 255)) for _ in range(3))
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, kind)
    return buffer.getvalue()


# Named functions, not lambdas: Hypothesis describes a lambda by parsing its source, which is not safe
# in the parallel workers schemathesis runs.
def _cursor(kind: str, position: object) -> str:
    text = json.dumps({"k": kind, "p": position}, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _search_cursor(offset: int) -> str:
    return _cursor("search", offset)


def _copies_cursor(offset: int) -> str:
    return _cursor("copies", offset)


def _items_cursor(after: str) -> str:
    return _cursor("items", after)


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


schemathesis.openapi.media_type("image/png", _image("PNG"))
schemathesis.openapi.media_type("image/jpeg", _image("JPEG"))
schemathesis.openapi.format("image-base64", _image("PNG").map(_base64))
schemathesis.openapi.format("asen-cursor", st.integers(0, 900).map(_search_cursor))
schemathesis.openapi.format("asen-copies-cursor", st.integers(0, 900).map(_copies_cursor))
_ID_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)
schemathesis.openapi.format("asen-items-cursor", _ID_TEXT.map(_items_cursor))
_VALUES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=10),
    st.integers(-1000, 1000),
    st.booleans(),
    st.none(),
)
schemathesis.openapi.format(
    "json-filters",
    st.dictionaries(st.sampled_from(["split", "colour", "predicted.colour"]), _VALUES, max_size=2).map(
        json.dumps
    ),
)


# A form that carries a file is a body schemathesis cannot validate (its validator raises on the
# file), and then it labels cases by how they were drawn, not by what they are: the coverage phase's
# "Multipart body with custom encoding" example fills every required field with "" (an `attribute`
# or `id` of "") and is called positive; the resource pool adds an `item_id` from an earlier POST
# /items to a body that holds an `image` (its check of the whole body passes, as it raised); a file
# part holds any of its sample files (a PDF), whatever media types the part's `encoding` declares;
# and a case called negative may send a valid form (its invalid field an empty list, which sends no
# part at all), where its own check of the form as sent fails on the file. A check of what the server
# must take or refuse judges each such case by its label, so here the label is checked instead,
# against the operation's schema, for a body holding a file: a "positive" case whose body the schema
# refuses (or whose file is not one of its part's declared media types) is no positive case, and a
# "negative" one, negative only in a body that the schema admits as sent, is no negative case; both
# are dropped. Every other case is left as drawn.
def _file_bytes(value: object) -> bytes | None:
    if isinstance(value, Binary):
        return value.data
    return value if isinstance(value, bytes) else None


def _is_file_field(schema: object) -> bool:
    return isinstance(schema, dict) and schema.get("format") == "binary"


def _types(schema: object) -> list[str]:
    if not isinstance(schema, dict):
        return []
    declared = schema.get("type")
    if declared is None and isinstance(schema.get("enum"), list):
        return sorted({"string" if isinstance(v, str) else "other" for v in schema["enum"]})
    return declared if isinstance(declared, list) else [declared] if isinstance(declared, str) else []


def _as_sent(body: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """A multipart body as the server reads it: a file part as its field's string; a list as one part
    per item (an empty list sends none, a list of one a single field); a field the schema types as
    text as the text sent (a number 5 arrives as "5"); other fields as generated (the server parses
    their text back)."""
    sent: dict[str, Any] = {}
    for name, value in body.items():
        schema = properties.get(name, {})
        if isinstance(value, list) and _types(schema) != ["array"] and len(value) < 2:
            if not value:
                continue  # no part at all
            value = value[0]  # one part: the field sent once (several: sent several times, refused)
        if _file_bytes(value) is not None and _is_file_field(schema):
            sent[name] = "file"
        elif _types(schema) == ["string"] and not isinstance(value, (str, bytes, list)):
            sent[name] = to_wire_text(value)
        elif (
            _types(schema) == ["array"]
            and isinstance(value, list)
            and _types(schema.get("items")) == ["string"]
        ):
            if value:
                sent[name] = [v if isinstance(v, (str, bytes)) else to_wire_text(v) for v in value]
        else:
            sent[name] = value
    return sent


def _media_type(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as picture:
            return Image.MIME.get(picture.format or "")
    except Exception:  # not an image PIL identifies
        return None


def _files_as_declared(body: dict[str, Any], encoding: dict[str, Any]) -> bool:
    for name, value in body.items():
        data = _file_bytes(value)
        declared = encoding.get(name, {}).get("contentType")
        if data is not None and isinstance(declared, str):
            if _media_type(data) not in {media.strip() for media in declared.split(",")}:
                return False
    return True


def _only_the_body_negative(case: schemathesis.Case) -> bool:
    components = case.meta.components if case.meta is not None else {}
    body = components.get(ParameterLocation.BODY)
    return (
        body is not None
        and body.mode.is_negative
        and not any(
            info.mode.is_negative
            for location, info in components.items()
            if location != ParameterLocation.BODY
        )
    )


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    meta, body = case.meta, case.body
    if (
        meta is None
        or not isinstance(body, dict)
        or not any(_file_bytes(v) is not None for v in body.values())
    ):
        return True
    content = case.operation.definition.raw.get("requestBody", {}).get("content", {}).get(case.media_type, {})
    declared = content.get("schema")
    if not isinstance(declared, dict):
        return True
    # the body's schema as a document of its own, with the components its `$ref`s name
    validator = Draft202012Validator(
        {**declared, "components": case.operation.schema.raw_schema.get("components", {})}
    )
    sent = _as_sent(body, declared.get("properties", {}))
    if meta.generation.mode.is_positive:
        return validator.is_valid(sent) and _files_as_declared(body, content.get("encoding", {}))
    return not (_only_the_body_negative(case) and validator.is_valid(sent))

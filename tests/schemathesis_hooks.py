"""What schemathesis cannot know from a JSON schema, given as strategies (loaded with
SCHEMATHESIS_HOOKS=tests.schemathesis_hooks): an image field holds a real image (PNG or JPEG, as a
file or base64), and a cursor is one the service issues (the place of a next page)."""
from __future__ import annotations

import base64
import io
import json

import schemathesis
from hypothesis import strategies as st
from PIL import Image


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
_VALUES = st.one_of(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=10), st.integers(-1000, 1000),
                    st.booleans(), st.none())
schemathesis.openapi.format("json-filters", st.dictionaries(st.sampled_from(["split", "colour", "predicted.colour"]),
                                                            _VALUES, max_size=2).map(json.dumps))

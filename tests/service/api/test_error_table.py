"""One error table feeds everything: the docs' table is generated from `ERRORS`, every code the
code can answer is in it with the status the handlers give it, and each route's OpenAPI responses
name exactly codes of the table, under their status."""

from __future__ import annotations

import re
from pathlib import Path

from asen_search.index import errors as index_errors
from asen_search.model import image_input
from asen_search.service.api.app import create_app
from asen_search.service.api.errors import ERRORS, markdown_table
from asen_search.service.api.settings import Settings
from tests.helpers.serving import ROOT


def test_the_docs_table_is_the_codes_table() -> None:
    text = (ROOT / "docs" / "service.md").read_text()
    documented = text.split("<!-- errors:start -->\n")[1].split("\n<!-- errors:end -->")[0]
    assert documented == markdown_table(), "docs/service.md's error table differs from ERRORS: regenerate it"


def test_every_code_the_service_raises_is_in_the_table() -> None:
    raised: set[str] = set()
    for path in (ROOT / "service").rglob("*.py"):
        text = path.read_text()
        raised |= set(re.findall(r'ServiceError\(\s*"([a-z_]+)"', text))
        raised |= set(re.findall(r'error_(?:body|response)\(\s*"([a-z_]+)"', text))
    raised |= {"invalid_metadata", "invalid_filters"}  # f"invalid_{what}" in operations/checks.py
    for module in (index_errors, image_input):
        raised |= {
            kind.code
            for kind in vars(module).values()
            if isinstance(kind, type) and hasattr(kind, "code") and isinstance(kind.code, str)
        }
    missing = sorted(code for code in raised if code not in ERRORS)
    assert not missing, f"codes raised but not in ERRORS: {missing}"


def test_each_routes_responses_name_codes_of_the_table_under_their_status(tiny_checkpoint: Path) -> None:
    schema = create_app(Settings(checkpoint=tiny_checkpoint, index=Path("unused"))).openapi()
    components = schema["components"]["schemas"]
    checked = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                ref = (
                    response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                )
                model = components.get(ref.rsplit("/", 1)[-1], {})
                codes = model.get("properties", {}).get("error", {}).get("enum")
                if codes is None:
                    continue
                for code in codes:
                    assert code in ERRORS and str(ERRORS[code][0]) == status, (method, path, status, code)
                    assert f"`{code}`" in response["description"], (method, path, code)
                checked += 1
    assert checked > 30

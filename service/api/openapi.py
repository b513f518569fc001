"""The OpenAPI schema describes the server as it is: each body endpoint takes JSON and a form, with
the same fields; the ranges that come from the settings (top_k, max_results, the paging depth,
candidates); the attributes and values of the loaded model; the rules between fields (one query
source; top_k or a threshold; ...). What the schema allows the server takes, and the other way
round: schemathesis runs against it in CI (tests/service/e2e/test_schemathesis.py).

Bodies are read by service/api/bodies.py from the request itself (one reader for both transports),
so FastAPI does not see them: routes carry a mark (`routes/common.py` BODY_MARK) and `install`
writes their request bodies into the generated schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from asen_search.service.api.openapi_bodies import IMAGE_MEDIA, ModelFacts, body_schema
from asen_search.service.api.openapi_values import metadata_components
from asen_search.service.api.routes.common import BODIES, BODY_MARK
from asen_search.service.api.settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """`app.openapi()` with the bodies filled in, from the loaded model once it is loaded; the write
    endpoints' API key declared only where the server has one (without it, writes take no key)."""

    def openapi() -> dict[str, Any]:
        state = getattr(app.state, "service_state", None)
        if app.openapi_schema is not None and state is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        facts = ModelFacts() if state is None else _facts(state)
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
        schema.setdefault("components", {}).setdefault("schemas", {}).update(metadata_components())
        if settings.api_key is None:
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
            schema.get("components", {}).pop("securitySchemes", None)
        if state is not None:
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _facts(state: Any) -> ModelFacts:
    encoder = state.encoder
    curves = encoder.thresholds.curves if encoder.thresholds is not None else {}
    copies = encoder.copy_calibration
    return ModelFacts(
        {a.name: _searchable(state, a.name, list(a.values)) for a in encoder.attributes},
        [a.name for a in encoder.attributes if a.name in curves],
        state.catalogue.fingerprint,
        state.catalogue.dim,
        None if copies is None else copies.modified,
        0.0 if copies is None else 1.0 / copies.lookalike_pairs,
    )


def _searchable(state: Any, name: str, values: list[str]) -> list[str]:
    """The values a query can name (those with a prototype; none without prototypes)."""
    prototypes = state.encoder.prototypes
    if prototypes is None:
        return []
    import numpy as np

    known = np.isfinite(prototypes.vectors[name]).all(axis=1)
    return [v for v, ok in zip(values, known.tolist()) if ok]

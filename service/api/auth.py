"""The optional API key of the write endpoints (`ASEN_API_KEY`), compared in constant time."""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Security
from fastapi.security import APIKeyHeader

from asen_search.service.api.errors import ApiError
from asen_search.service.api.state import RuntimeDep

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="needed by write endpoints when "
                        "the service has an API key (ASEN_API_KEY)")


def require_api_key(runtime: RuntimeDep, key: Annotated[str | None, Security(_api_key)]) -> None:
    """Write endpoints: 401 unless the configured key (if any) is sent in `X-API-Key`."""
    expected = runtime.settings.api_key
    if expected is None:
        return
    challenge = {"WWW-Authenticate": API_KEY_HEADER}
    if not key:
        raise ApiError(401, "missing_api_key", f"this endpoint needs the {API_KEY_HEADER} header", challenge)
    if not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise ApiError(401, "wrong_api_key", f"the {API_KEY_HEADER} header is wrong", challenge)

"""Who may write: the optional API key of the write endpoints (`ASEN_API_KEY`), compared in constant
time, and the secure default when there is none.

Without a key, writes are open only on a server bound to loopback (127.0.0.0/8, ::1, localhost: the
default `127.0.0.1`, `make serve`), where only this machine reaches them. A server bound to anything
else (`0.0.0.0` in the Docker image and compose file, a LAN address, a host name) refuses them with
403 `writes_disabled` until `ASEN_API_KEY` is set, or `ASEN_ALLOW_OPEN_WRITES=1` (`asen serve
--allow-open-writes`) accepts writes from anyone who can reach the port. Searches are unaffected."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated, Any

from fastapi import Security
from fastapi.security import APIKeyHeader

from asen_search.service.api.errors import responses_for
from asen_search.service.api.settings import Settings
from asen_search.service.api.state import ServiceStateDep
from asen_search.service.operations.errors import ServiceError

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="needed by write endpoints when the service has an API key (ASEN_API_KEY)",
)

WRITES_DISABLED = "writes_disabled"
WRITES_DISABLED_DETAIL = (
    "writes are disabled: this server listens beyond loopback and has no API key. To enable them, set "
    f"ASEN_API_KEY on the server and restart it, then send the key in the {API_KEY_HEADER} header; or set "
    "ASEN_ALLOW_OPEN_WRITES=1 (asen serve --allow-open-writes) to accept writes from anyone who can reach "
    "the port"
)
# What every write endpoint may also answer: who may write.
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = responses_for(
    ("missing_api_key", "wrong_api_key", WRITES_DISABLED)
)


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only: 127.0.0.0/8, ::1 (also as
    ::ffff:127.x.y.z) or the name `localhost`. Any other name may resolve anywhere: not loopback."""
    name = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def writes_refused(settings: Settings) -> bool:
    """No API key, no explicit `allow_open_writes`, and a bind address beyond loopback."""
    return settings.api_key is None and not settings.allow_open_writes and not is_loopback(settings.host)


def require_api_key(state: ServiceStateDep, key: Annotated[str | None, Security(_api_key)]) -> None:
    """Write endpoints: 401 unless the configured key (if any) is sent in `X-API-Key`; without a
    key, 403 `writes_disabled` on a server that listens beyond loopback (unless open writes are
    allowed explicitly)."""
    expected = state.settings.api_key
    if expected is None:
        if writes_refused(state.settings):
            raise ServiceError(WRITES_DISABLED, WRITES_DISABLED_DETAIL)
        return
    challenge = {"WWW-Authenticate": API_KEY_HEADER}
    if not key:
        raise ServiceError("missing_api_key", f"this endpoint needs the {API_KEY_HEADER} header", challenge)
    if not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise ServiceError("wrong_api_key", f"the {API_KEY_HEADER} header is wrong", challenge)

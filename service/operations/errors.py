"""The one error the service layer (and the HTTP layer above it) refuses a request with: a stable
`code`, a `detail` for a person, optional headers (`Retry-After`, ...). Its HTTP status, and the
one-line meaning of every code, are in one table: `ERRORS` in service/api/errors.py."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses: `code` (a key of the error table), `detail` (what was wrong)."""

    def __init__(self, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code, self.detail, self.headers = code, detail, headers

"""A small typed Python client of the asen-search HTTP service (docs/service.md, "Python client").

Every method sends one JSON request (images as base64) and answers a frozen dataclass; every error
answer raises an `AsenError` (a subclass per family: `NotFound`, `Conflict`, `InvalidRequest`,
`Unauthorized`, `RateLimited`, `Unavailable`, `ServerError`) carrying the service's `code` and
`detail` (service/api/errors.py, `ERRORS`). Network failures raise httpx's own `httpx.TransportError`.

    from pathlib import Path
    from asen_search.client import Client, NotFound, QueryPart

    with Client("http://127.0.0.1:8000", api_key="secret") as asen:
        page = asen.search("neckline", image=Path("shirt.jpg"), top_k=5, filters={"pattern": ["solid", "dots"]})
        for hit in page.results:
            print(hit.id, round(hit.score, 3), hit.metadata)
        more = asen.search("neckline", image=Path("shirt.jpg"), top_k=5, cursor=page.next_cursor)

        # this neckline, the colour of test-00007 at half weight, but not dotted
        composed = asen.search_composed(
            [QueryPart("neckline", image="front"), QueryPart("colour", item_id="test-00007", weight=0.5),
             QueryPart("pattern", value="dots", weight=-1)],
            images={"front": Path("shirt.jpg")}, top_k=5)

        everything_similar = list(asen.iter_search("colour", item_id="test-00042", min_score=0.8))
        tags = asen.tag(item_id="test-00042").by_attribute()
        copies = asen.copies(image=Path("design.jpg"), min_score=0.9)   # design protection: whole-design copies

        asen.add_item("sku-1", image=Path("new.jpg"), metadata={"brand": "x"})
        asen.patch_item("sku-1", {"brand": None, "price": 12})   # null removes a key
        for item in asen.iter_items(filters={"brand": "x"}):
            print(item.id)
        try:
            asen.get_item("nope")
        except NotFound as error:
            print(error.code, error.detail)        # unknown_item ...

`transport` takes any httpx transport: a sync one (`httpx.HTTPTransport`, `httpx.MockTransport`) or
an async one such as `httpx.ASGITransport(app=app)`, which is driven from a private event loop
thread (note that `ASGITransport` does not run the app's lifespan).
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

__all__ = [
    "API_KEY_HEADER",
    "AsenError",
    "Attribute",
    "Client",
    "Conflict",
    "CopiesPage",
    "CopyHit",
    "CopyThreshold",
    "Explanation",
    "Hit",
    "InvalidRequest",
    "Item",
    "ItemResult",
    "ItemsPage",
    "NewItem",
    "NotFound",
    "QueryPart",
    "RateLimited",
    "Readiness",
    "RerankHit",
    "RerankResult",
    "SearchPage",
    "ServerError",
    "Tag",
    "TagResult",
    "Threshold",
    "Unauthorized",
    "Unavailable",
]

API_KEY_HEADER = "X-API-Key"
# An image: its bytes, or the path of its file (a `str` is refused: a path or base64 cannot be told apart).
ImageInput = bytes | bytearray | memoryview | os.PathLike[str]
Filters = Mapping[str, Any]


# ------------------------------------------------------------------------------------------- errors


class AsenError(Exception):
    """An error answer of the service: its HTTP `status`, its `code` (service/api/errors.py,
    `ERRORS`; `http_error` when the answer is not the service's JSON, e.g. a proxy's page) and
    `detail`. `errors` lists each field's problem of an `invalid_request`; `retry_after` is the
    `Retry-After` header in seconds where one was sent (429, 503)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors: tuple[Mapping[str, Any], ...] | None = None if errors is None else tuple(errors)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (kwargs included), e.g. across processes
        return (
            _rebuild_error,
            (type(self), self.status, self.code, self.detail, self.errors, self.retry_after),
        )


def _rebuild_error(
    kind: type[AsenError],
    status: int,
    code: str,
    detail: str,
    errors: Sequence[Mapping[str, Any]] | None,
    retry_after: float | None,
) -> AsenError:
    return kind(status, code, detail, errors=errors, retry_after=retry_after)


class InvalidRequest(AsenError):
    """The request cannot be served as sent: 422 (a field's value or type, an unknown attribute,
    item id or field, a bad cursor, filter or query...), 400 (an image that is no image, bad base64),
    413 (too large), 415 (an image format that is not decoded)."""


class Unauthorized(AsenError):
    """A write refused: 401 `missing_api_key` / `wrong_api_key`, or 403 `writes_disabled` (a server
    beyond loopback without an API key; the detail says how to enable writes)."""


class NotFound(AsenError):
    """404: `unknown_item` (no item with this id), `no_image`, or `not_found` (no such route: check
    the base URL)."""


class Conflict(AsenError):
    """409: `item_exists` (add with replace=True to replace it) or `read_only` (a memory-mapped
    catalogue)."""


class RateLimited(AsenError):
    """429 `rate_limited`: more requests than the server's ASEN_RATE_LIMIT from this client; wait
    `retry_after` seconds."""


class ServerError(AsenError):
    """5xx: `internal_error` (a bug, logged by the server), `insufficient_storage` (507), and the
    retryable `Unavailable`."""


class Unavailable(ServerError):
    """503 (`not_ready`, `catalogue_unavailable`, `overloaded`, `storage_unavailable`, `busy`) or 504
    `timeout`: the service could not answer now; retry, after `retry_after` seconds when given."""


_BY_STATUS: dict[int, type[AsenError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
    504: Unavailable,
}


def error_class(status: int) -> type[AsenError]:
    """The exception class of an error answer with this HTTP status."""
    return _BY_STATUS.get(status, ServerError if status >= 500 else AsenError)


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: a number, or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code, detail = body["error"], str(body.get("detail", ""))
        errors = body.get("errors") if isinstance(body.get("errors"), list) else None
    else:
        code, detail, errors = "http_error", response.text[:1000] or response.reason_phrase, None
    raise error_class(response.status_code)(
        response.status_code,
        code,
        detail,
        errors=errors,
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class QueryPart:
    """One part of a composed query: an attribute and exactly one source, `image` (the name of an
    image of `images`: the client sends it in the part), `item_id` or `value` (GET /attributes:
    value_search), weighted in [-1, 1]."""

    attribute: str
    image: str | None = None
    item_id: str | None = None
    value: str | None = None
    weight: float = 1.0

    def to_json(self) -> dict[str, Any]:
        sources = {"image": self.image, "item_id": self.item_id, "value": self.value}
        return {
            "attribute": self.attribute,
            **{k: v for k, v in sources.items() if v is not None},
            "weight": self.weight,
        }


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result: `score` is the cosine similarity under the attribute (a composed query: the
    weighted sum); `metadata` None with include_metadata=False; `precision` in threshold searches
    with precision curves."""

    id: str
    score: float
    metadata: dict[str, Any] | None = None
    precision: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Hit:
        return cls(data["id"], data["score"], data.get("metadata"), data.get("precision"))


@dataclass(frozen=True, slots=True)
class Threshold:
    """A threshold search as run: the `min_score` used (also when translated from `min_precision`),
    `max_results` a page; `unreachable` says why no item can pass, if so."""

    min_score: float
    min_precision: float | None
    max_results: int
    unreachable: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Threshold:
        return cls(data["min_score"], data.get("min_precision"), data["max_results"], data.get("unreachable"))


@dataclass(frozen=True, slots=True)
class SearchPage:
    """A page of a search, best first. `next_cursor`: pass it as `cursor` (with the same query) for
    the next page (None: the last page). `total` and `truncated` only for threshold searches."""

    results: tuple[Hit, ...]
    attribute: str | None = None
    query: tuple[dict[str, Any], ...] | None = None
    offset: int = 0
    next_cursor: str | None = None
    threshold: Threshold | None = None
    truncated: bool | None = None
    total: int | None = None

    @property
    def ids(self) -> list[str]:
        return [hit.id for hit in self.results]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchPage:
        threshold = data.get("threshold")
        query = data.get("query")
        return cls(
            tuple(Hit.from_json(h) for h in data["results"]),
            data.get("attribute"),
            None if query is None else tuple(query),
            data.get("offset", 0),
            data.get("next_cursor"),
            None if threshold is None else Threshold.from_json(threshold),
            data.get("truncated"),
            data.get("total"),
        )


@dataclass(frozen=True, slots=True)
class CopyHit:
    """A copy of the design: `score` is its copy score (the mean of its best attributes - modified
    attribute scores), `scores` every attribute's similarity, `modified` the attributes judged
    modified (empty without a copy calibration), `false_match_rate` the calibration's estimate for
    everything scoring at least this (None without one for this `modified`). With `verify`, `score`
    adds the geometric verification, `copy_score` is the score before it and `inliers` its matches."""

    id: str
    score: float
    scores: dict[str, float]
    modified: tuple[str, ...] = ()
    false_match_rate: float | None = None
    metadata: dict[str, Any] | None = None
    copy_score: float | None = None
    inliers: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CopyHit:
        return cls(
            data["id"],
            data["score"],
            dict(data["scores"]),
            tuple(data.get("modified") or ()),
            data.get("false_match_rate"),
            data.get("metadata"),
            data.get("copy_score"),
            data.get("inliers"),
        )


@dataclass(frozen=True, slots=True)
class CopyThreshold:
    """A threshold copy search as run: the `min_score` used (also when translated from
    `max_false_match_rate`), the estimated `false_match_rate` at it (None without a calibration),
    `max_results` a page."""

    min_score: float
    max_false_match_rate: float | None
    false_match_rate: float | None
    max_results: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CopyThreshold:
        return cls(
            data["min_score"],
            data.get("max_false_match_rate"),
            data.get("false_match_rate"),
            data["max_results"],
        )


@dataclass(frozen=True, slots=True)
class CopiesPage:
    """A page of a design's copies, best first. `modified_allowed`: how many attributes a copy may
    modify; `calibrated`: whether the model's copy scores are calibrated (else nothing is judged
    modified); `verified`: re-ranked by geometric verification. `next_cursor`, `total` and
    `truncated` as in `SearchPage`."""

    results: tuple[CopyHit, ...]
    modified_allowed: int
    calibrated: bool
    offset: int = 0
    next_cursor: str | None = None
    threshold: CopyThreshold | None = None
    truncated: bool | None = None
    total: int | None = None
    verified: bool = False

    @property
    def ids(self) -> list[str]:
        return [hit.id for hit in self.results]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CopiesPage:
        threshold = data.get("threshold")
        return cls(
            tuple(CopyHit.from_json(h) for h in data["results"]),
            data["modified_allowed"],
            data["calibrated"],
            data.get("offset", 0),
            data.get("next_cursor"),
            None if threshold is None else CopyThreshold.from_json(threshold),
            data.get("truncated"),
            data.get("total"),
            bool(data.get("verified", False)),
        )


@dataclass(frozen=True, slots=True)
class RerankHit:
    """A reranked candidate: `score = weight * similarity + (1 - weight) * prior`; `position` is its
    0-based position among the candidates sent."""

    id: str
    score: float
    similarity: float
    position: int
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RerankHit:
        return cls(data["id"], data["score"], data["similarity"], data["position"], data.get("metadata"))


@dataclass(frozen=True, slots=True)
class RerankResult:
    """The known candidates best first; `unknown`: ids not in the catalogue; `duplicates`: ids sent
    more than once (ranked once)."""

    results: tuple[RerankHit, ...]
    weight: float
    unknown: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    attribute: str | None = None
    query: tuple[dict[str, Any], ...] | None = None

    @property
    def ids(self) -> list[str]:
        return [hit.id for hit in self.results]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RerankResult:
        query = data.get("query")
        return cls(
            tuple(RerankHit.from_json(h) for h in data["results"]),
            data["weight"],
            tuple(data["unknown"]),
            tuple(data["duplicates"]),
            data.get("attribute"),
            None if query is None else tuple(query),
        )


@dataclass(frozen=True, slots=True)
class Tag:
    """An attribute's most likely `value`, its calibrated `confidence`, and every value's probability."""

    attribute: str
    value: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tag:
        return cls(data["attribute"], data["value"], data["confidence"], dict(data["probabilities"]))


@dataclass(frozen=True, slots=True)
class TagResult:
    """The tags of an image (`id` None) or of a catalogue item."""

    id: str | None
    tags: tuple[Tag, ...]

    def by_attribute(self) -> dict[str, Tag]:
        return {tag.attribute: tag for tag in self.tags}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TagResult:
        return cls(data.get("id"), tuple(Tag.from_json(t) for t in data["tags"]))


@dataclass(frozen=True, slots=True)
class Explanation:
    """An attribute's attention map (`grid` = (h, w) rows of values in [0, 1]) and the boxes that
    place it and the local branch's region on the image, in image pixels (x0, y0, x1, y1)."""

    attribute: str
    attention: tuple[tuple[float, ...], ...]
    grid: tuple[int, int]
    image_box: tuple[float, float, float, float]
    roi_box: tuple[float, float, float, float] | None
    width: int
    height: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Explanation:
        roi = data.get("roi_box")
        h, w = data["grid"]
        x0, y0, x1, y1 = data["image_box"]
        return cls(
            data["attribute"],
            tuple(tuple(row) for row in data["attention"]),
            (h, w),
            (x0, y0, x1, y1),
            None if roi is None else (roi[0], roi[1], roi[2], roi[3]),
            data["width"],
            data["height"],
        )


@dataclass(frozen=True, slots=True)
class Attribute:
    """An attribute a query can be about: its `values`, those a query can search by (`value_search`),
    and the min_score of precision levels ("0.9", "0.95", "0.99"; None without precision curves)."""

    name: str
    values: tuple[str, ...]
    value_search: tuple[str, ...] = ()
    precision_scores: dict[str, float | None] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Attribute:
        return cls(
            data["name"],
            tuple(data["values"]),
            tuple(data.get("value_search") or ()),
            data.get("precision_scores"),
        )


@dataclass(frozen=True, slots=True)
class Item:
    """A catalogue item: its id and metadata (None when not asked for)."""

    id: str
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Item:
        return cls(data["id"], data.get("metadata"))


@dataclass(frozen=True, slots=True)
class ItemsPage:
    """A page of the catalogue in id order; `next_cursor` None on the last page."""

    items: tuple[Item, ...]
    next_cursor: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemsPage:
        return cls(tuple(Item.from_json(i) for i in data["items"]), data.get("next_cursor"))


@dataclass(frozen=True, slots=True)
class NewItem:
    """An item to add (`add_items`): an `image`, or `vectors` (one per attribute, in GET /attributes'
    order) with the `fingerprint` of the model that made them (GET /readyz)."""

    id: str
    image: ImageInput | None = None
    vectors: Iterable[Iterable[float]] | None = None
    fingerprint: str | None = None
    metadata: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return _item_body(self.id, self.image, self.vectors, self.fingerprint, self.metadata)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item's result in a batch: `status` `created`, `replaced` or `error` (with the error `code`
    of service/api/errors.py in `error`, and `detail`)."""

    id: str
    status: str
    metadata: dict[str, Any] | None = None
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "error"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemResult:
        return cls(data["id"], data["status"], data.get("metadata"), data.get("error"), data.get("detail"))


@dataclass(frozen=True, slots=True)
class Readiness:
    """GET /readyz: the model and catalogue are loaded (`fingerprint`: the model's, for vectors)."""

    status: str
    items: int
    attributes: tuple[str, ...]
    dim: int
    fingerprint: str
    read_only: bool
    writes_refused: str | None = None
    log_bytes: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Readiness:
        return cls(
            data["status"],
            data["items"],
            tuple(data["attributes"]),
            data["dim"],
            data["fingerprint"],
            data["read_only"],
            data.get("writes_refused"),
            data.get("log_bytes", 0),
        )


# ------------------------------------------------------------------------------------------ bodies


def _image_b64(image: ImageInput) -> str:
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
    elif isinstance(image, os.PathLike):
        data = Path(image).read_bytes()
    else:
        raise TypeError(f"an image is bytes or a path (pathlib.Path), not {type(image).__name__}")
    return base64.b64encode(data).decode("ascii")


def _vectors(vectors: Iterable[Iterable[float]]) -> list[list[float]]:
    return [[float(x) for x in row] for row in vectors]


def _item_body(
    item_id: str,
    image: ImageInput | None,
    vectors: Iterable[Iterable[float]] | None,
    fingerprint: str | None,
    metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": item_id}
    if image is not None:
        body["image"] = _image_b64(image)
    if vectors is not None:
        body["vectors"] = _vectors(vectors)
    if fingerprint is not None:
        body["fingerprint"] = fingerprint
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return body


def _compact(**fields: Any) -> dict[str, Any]:
    """The fields that are set (None: the server's default)."""
    return {k: v for k, v in fields.items() if v is not None}


def _query_body(
    attribute: str | None,
    image: ImageInput | None,
    item_id: str | None,
    value: str | None,
    parts: Sequence[QueryPart] | None,
    images: Mapping[str, ImageInput] | None,
    include_metadata: bool,
    fields: Sequence[str] | None,
) -> dict[str, Any]:
    sent = {name: _image_b64(data) for name, data in (images or {}).items()}
    query = None
    if parts is not None:  # on the wire (JSON) a part holds its image itself
        query = [{**p.to_json(), **({"image": sent[p.image]} if p.image is not None else {})} for p in parts]
        missing = [p.image for p in parts if p.image is not None and p.image not in sent]
        if missing:
            raise ValueError(f"parts name images that `images` does not hold: {missing}")
    body = _compact(
        attribute=attribute,
        item_id=item_id,
        value=value,
        image=None if image is None else _image_b64(image),
        query=query,
        fields=None if fields is None else list(fields),
    )
    if not include_metadata:
        body["include_metadata"] = False
    return body


def _item_path(item_id: str) -> str:
    """An id as one path segment: `/` and every other reserved character escaped; `.` and `..`
    escaped too (else they would be read as dot segments)."""
    segment = quote(item_id, safe="")
    return "/" + (segment.replace(".", "%2E") if item_id in (".", "..") else segment)


# ------------------------------------------------------------------------------------------- client


class _AsyncTransportAdapter(httpx.BaseTransport):
    """An async httpx transport (e.g. `httpx.ASGITransport`) driven from a sync client: each request
    runs on one event loop kept in a private thread for the client's lifetime."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        from anyio.from_thread import start_blocking_portal

        self._transport = transport
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(start_blocking_portal())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._portal.call(self._send, request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        if response.is_stream_consumed:  # already read (made from bytes): usable as it is
            return response
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=raw,
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        try:
            self._portal.call(self._transport.aclose)
        finally:
            self._stack.close()


class Client:
    """The asen-search HTTP API (docs/service.md). `api_key` is sent as `X-API-Key` (writes need it
    on a server with ASEN_API_KEY). A context manager; or call `close()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 30.0,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "asen-search-client", "Accept": "application/json"}
        if api_key is not None:
            headers[API_KEY_HEADER] = api_key
        if isinstance(transport, httpx.AsyncBaseTransport) and not isinstance(transport, httpx.BaseTransport):
            transport = _AsyncTransportAdapter(transport)
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        content = (
            None
            if json_body is None
            else json.dumps(json_body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        )
        headers = None if content is None else {"Content-Type": "application/json"}
        response = self._http.request(method, path, content=content, headers=headers, params=params)
        _raise_for(response)
        return response

    def _json(
        self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        response = self._request(method, path, json_body=json_body, params=params)
        try:
            return response.json()
        except ValueError:
            raise AsenError(
                response.status_code, "invalid_response", f"not JSON: {response.text[:200]!r}"
            ) from None

    # ------------------------------------------------------------------------------------- search

    def search(
        self,
        attribute: str,
        *,
        image: ImageInput | None = None,
        item_id: str | None = None,
        value: str | None = None,
        top_k: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
        filters: Filters | None = None,
        group_by: str | None = None,
        min_score: float | None = None,
        min_precision: float | None = None,
        max_results: int | None = None,
        include_metadata: bool = True,
        fields: Sequence[str] | None = None,
    ) -> SearchPage:
        """The items most similar under `attribute` to one of `image`, `item_id` (never returned
        itself) or `value` (its prototype): the `top_k` best (default the server's), or every item
        scoring at least `min_score` (or the score of `min_precision`), `max_results` a page. Page on
        with `cursor=page.next_cursor` (or `offset`); `filters` as docs/service.md, Filters."""
        body = _query_body(attribute, image, item_id, value, None, None, include_metadata, fields)
        return self._search(
            body,
            top_k=top_k,
            offset=offset,
            cursor=cursor,
            filters=filters,
            group_by=group_by,
            min_score=min_score,
            min_precision=min_precision,
            max_results=max_results,
        )

    def search_composed(
        self,
        parts: Sequence[QueryPart],
        images: Mapping[str, ImageInput] | None = None,
        *,
        top_k: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
        filters: Filters | None = None,
        group_by: str | None = None,
        min_score: float | None = None,
        max_results: int | None = None,
        include_metadata: bool = True,
        fields: Sequence[str] | None = None,
    ) -> SearchPage:
        """A composed query: an item's score is the weighted sum of its similarities to each part;
        `images` holds the images the parts name (`QueryPart(image="front")`)."""
        body = _query_body(None, None, None, None, parts, images, include_metadata, fields)
        return self._search(
            body,
            top_k=top_k,
            offset=offset,
            cursor=cursor,
            filters=filters,
            group_by=group_by,
            min_score=min_score,
            min_precision=None,
            max_results=max_results,
        )

    def _search(self, body: dict[str, Any], **options: Any) -> SearchPage:
        if options.get("filters") is not None:
            options["filters"] = dict(options["filters"])
        return SearchPage.from_json(self._json("POST", "/search", json_body={**body, **_compact(**options)}))

    def iter_search(
        self,
        attribute: str | None = None,
        *,
        image: ImageInput | None = None,
        item_id: str | None = None,
        value: str | None = None,
        parts: Sequence[QueryPart] | None = None,
        images: Mapping[str, ImageInput] | None = None,
        page_size: int | None = None,
        filters: Filters | None = None,
        group_by: str | None = None,
        min_score: float | None = None,
        min_precision: float | None = None,
        include_metadata: bool = True,
        fields: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> Iterator[Hit]:
        """Every result of a search, best first, a page (`page_size`: top_k, or max_results for a
        threshold search) at a time, following `next_cursor` until the last page (a top-k search ends
        at the server's ASEN_MAX_SEARCH_DEPTH) or `limit` results. A single-attribute query
        (`attribute` with `image`, `item_id` or `value`) or a composed one (`parts`, `images`)."""
        body = _query_body(attribute, image, item_id, value, parts, images, include_metadata, fields)
        threshold = min_score is not None or min_precision is not None
        options: dict[str, Any] = {
            "filters": filters,
            "group_by": group_by,
            "min_score": min_score,
            "min_precision": min_precision,
            "max_results" if threshold else "top_k": page_size,
        }
        cursor: str | None = None
        sent = 0
        while limit is None or sent < limit:
            page = self._search(body, cursor=cursor, **options)
            for hit in page.results:
                if limit is not None and sent >= limit:
                    return
                sent += 1
                yield hit
            if page.next_cursor is None or not page.results:
                return
            cursor = page.next_cursor

    def rerank(
        self,
        candidates: Sequence[str],
        *,
        attribute: str | None = None,
        image: ImageInput | None = None,
        item_id: str | None = None,
        value: str | None = None,
        parts: Sequence[QueryPart] | None = None,
        images: Mapping[str, ImageInput] | None = None,
        weight: float = 1.0,
        include_metadata: bool = True,
        fields: Sequence[str] | None = None,
    ) -> RerankResult:
        """Reorder `candidates` (e.g. a text search's results) by similarity to the query (as
        `search`, or composed with `parts`); `weight` 1: similarity only, 0: the original order."""
        body = _query_body(attribute, image, item_id, value, parts, images, include_metadata, fields)
        body.update(candidates=list(candidates), weight=weight)
        return RerankResult.from_json(self._json("POST", "/rerank", json_body=body))

    def copies(
        self,
        *,
        image: ImageInput | None = None,
        item_id: str | None = None,
        modified: int | None = None,
        top_k: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
        min_score: float | None = None,
        max_false_match_rate: float | None = None,
        max_results: int | None = None,
        filters: Filters | None = None,
        include_metadata: bool = True,
        fields: Sequence[str] | None = None,
        verify: bool = False,
    ) -> CopiesPage:
        """The catalogue items that copy a design (`image`, or a catalogue `item_id`, never returned
        itself) over every attribute at once, allowing `modified` attributes changed (default the
        server's calibration's, else 2): the `top_k` best, or every item whose copy score is at least
        `min_score` (or the score of `max_false_match_rate`, which needs `asen calibrate-copies` on the
        server's checkpoint: else `InvalidRequest` `no_copy_calibration`), `max_results` a page.
        `verify` re-ranks the best 50 copies by geometric verification of their pictures."""
        body = _compact(
            image=None if image is None else _image_b64(image),
            item_id=item_id,
            modified=modified,
            top_k=top_k,
            offset=offset,
            cursor=cursor,
            min_score=min_score,
            max_false_match_rate=max_false_match_rate,
            max_results=max_results,
            filters=None if filters is None else dict(filters),
            fields=None if fields is None else list(fields),
        )
        if not include_metadata:
            body["include_metadata"] = False
        if verify:
            body["verify"] = True
        return CopiesPage.from_json(self._json("POST", "/copies", json_body=body))

    def iter_copies(
        self,
        *,
        image: ImageInput | None = None,
        item_id: str | None = None,
        modified: int | None = None,
        page_size: int | None = None,
        min_score: float | None = None,
        max_false_match_rate: float | None = None,
        filters: Filters | None = None,
        include_metadata: bool = True,
        fields: Sequence[str] | None = None,
        limit: int | None = None,
        verify: bool = False,
    ) -> Iterator[CopyHit]:
        """Every copy of a design, best first, a page (`page_size`: top_k, or max_results with a
        threshold) at a time, following `next_cursor` to the last page or `limit` copies."""
        threshold = min_score is not None or max_false_match_rate is not None
        sizes = {"max_results": page_size} if threshold else {"top_k": page_size}
        cursor: str | None = None
        sent = 0
        while limit is None or sent < limit:
            page = self.copies(
                image=image,
                item_id=item_id,
                modified=modified,
                cursor=cursor,
                min_score=min_score,
                max_false_match_rate=max_false_match_rate,
                filters=filters,
                include_metadata=include_metadata,
                fields=fields,
                verify=verify,
                **sizes,
            )
            for hit in page.results:
                if limit is not None and sent >= limit:
                    return
                sent += 1
                yield hit
            if page.next_cursor is None or not page.results:
                return
            cursor = page.next_cursor

    def tag(self, *, image: ImageInput | None = None, item_id: str | None = None) -> TagResult:
        """Every attribute's most likely value, with its calibrated confidence, for an image or an item."""
        body = _compact(image=None if image is None else _image_b64(image), item_id=item_id)
        return TagResult.from_json(self._json("POST", "/tag", json_body=body))

    def explain(
        self, attribute: str, *, image: ImageInput | None = None, item_id: str | None = None
    ) -> Explanation:
        """The attribute's attention map over an image or an item's stored image, and the RoI box."""
        body = _compact(
            attribute=attribute, image=None if image is None else _image_b64(image), item_id=item_id
        )
        return Explanation.from_json(self._json("POST", "/explain", json_body=body))

    def attributes(self) -> list[Attribute]:
        """The attributes a query can be about, their values and the values a query can search by."""
        return [Attribute.from_json(a) for a in self._json("GET", "/attributes")["attributes"]]

    # -------------------------------------------------------------------------------------- items

    def get_item(self, item_id: str) -> Item:
        """An item's metadata; `NotFound` (`unknown_item`) when there is none with this id."""
        return Item.from_json(self._json("GET", "/items" + _item_path(item_id)))

    def add_item(
        self,
        item_id: str,
        image: ImageInput | None = None,
        *,
        vectors: Iterable[Iterable[float]] | None = None,
        fingerprint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> Item:
        """Add an item from its `image`, or from `vectors` with the model's `fingerprint`; `Conflict`
        (`item_exists`) when the id exists, unless `replace` (which keeps the item's metadata when
        none is given). Durable when this returns."""
        body = _item_body(item_id, image, vectors, fingerprint, metadata)
        if replace:
            body["replace"] = True
        return Item.from_json(self._json("POST", "/items", json_body=body))

    def add_items(self, items: Sequence[NewItem], replace: bool = False) -> list[ItemResult]:
        """Many items in one request, each with its own result (an item's error does not raise: see
        `ItemResult.error`); the ones that can be written are written together."""
        body: dict[str, Any] = {"items": [item.to_json() for item in items]}
        if replace:
            body["replace"] = True
        return [
            ItemResult.from_json(r) for r in self._json("POST", "/items:batch", json_body=body)["results"]
        ]

    def patch_item(self, item_id: str, metadata: Mapping[str, Any]) -> Item:
        """Set these metadata keys of an item (a key set to None is removed); vectors and image stay."""
        return Item.from_json(
            self._json("PATCH", "/items" + _item_path(item_id), json_body={"metadata": dict(metadata)})
        )

    def delete_item(self, item_id: str) -> None:
        """Remove an item; `NotFound` (`unknown_item`) when there is none with this id."""
        self._json("DELETE", "/items" + _item_path(item_id))

    def list_items(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        filters: Filters | None = None,
        include_metadata: bool = True,
        fields: Sequence[str] | None = None,
    ) -> ItemsPage:
        """A page of the catalogue in id order (`limit` items, default the server's 100), filtered like
        a search; `cursor=page.next_cursor` for the next one."""
        params: dict[str, Any] = _compact(
            limit=limit,
            cursor=cursor,
            filters=None if filters is None else json.dumps(dict(filters)),
            fields=None if fields is None else list(fields),
        )
        if not include_metadata:
            params["include_metadata"] = "false"
        return ItemsPage.from_json(self._json("GET", "/items", params=params))

    def iter_items(
        self,
        *,
        page_size: int | None = None,
        filters: Filters | None = None,
        include_metadata: bool = True,
        fields: Sequence[str] | None = None,
    ) -> Iterator[Item]:
        """Every item (that matches `filters`), in id order, a page at a time: each item that exists
        throughout is returned exactly once, whatever is added or deleted meanwhile."""
        cursor: str | None = None
        while True:
            page = self.list_items(
                limit=page_size,
                cursor=cursor,
                filters=filters,
                include_metadata=include_metadata,
                fields=fields,
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get_image(self, item_id: str, size: int | None = None) -> bytes:
        """An item's stored image file, or a JPEG at most `size` pixels a side; `NotFound`
        (`no_image`) when it has none."""
        return self._request("GET", "/images" + _item_path(item_id), params=_compact(size=size)).content

    # --------------------------------------------------------------------------------- operations

    def health(self) -> str:
        """`"ok"` when the process answers (touches neither the model nor the catalogue)."""
        return str(self._json("GET", "/healthz")["status"])

    def ready(self) -> Readiness:
        """The loaded model and catalogue; `Unavailable` (`not_ready`, `catalogue_unavailable`) until
        they answer."""
        return Readiness.from_json(self._json("GET", "/readyz"))

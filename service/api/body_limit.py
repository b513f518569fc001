"""The hard limit on request body size (decoding an image: `model/image_input.py`)."""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asen_search.service.api.errors import error_body
from asen_search.service.operations.errors import ServiceError


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413: at once when Content-Length says so (the body
    is never read), else as soon as the streamed body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        # isascii: str.isdigit() also holds for "²" (latin-1 header bytes), which int() refuses.
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > self.max_bytes
        ):
            await self._refuse(send, int(declared))
            return
        received, exceeded, app_started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise ServiceError("request_too_large", "request body over the limit")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_started
            if exceeded and not app_started:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            app_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or app_started:
                raise
        if exceeded and not app_started:
            await self._refuse(send, received)

    async def _refuse(self, send: Send, size: int) -> None:
        body = json.dumps(
            error_body(
                "request_too_large",
                f"the request body has at least {size} bytes; the limit is {self.max_bytes}",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

"""Request body size limit, enforced before and while the body streams in.

A ``Content-Length`` over the limit is refused at once, without reading anything.
Otherwise (chunked uploads, lying lengths) the bytes are counted as they arrive and
the request is refused as soon as the count passes the limit: nothing unbounded is
ever held in memory.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailvet.api import wire

__all__ = ["BodyLimitMiddleware", "BodyTooLarge"]


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _refuse(send, wire.BAD_FORMAT, 400)
                    return
                if declared > limit:
                    await _refuse(send, wire.BODY_TOO_LARGE, 413)
                    return
                break

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _refuse(send, wire.BODY_TOO_LARGE, 413)


async def _refuse(send: Send, message: str, status: int) -> None:
    response = wire.error_response(message, status, {"connection": "close"})
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})

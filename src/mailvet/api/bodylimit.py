"""Request body size and time limits, enforced before and while the body streams in.

A ``Content-Length`` over the limit is refused at once, without reading anything.
Otherwise (chunked uploads, lying lengths) the bytes are counted as they arrive and
the request is refused as soon as the count passes the limit: nothing unbounded is
ever held in memory.

The whole body must also arrive within ``body_timeout`` seconds of the request
reaching the app: a client that stalls half-way gets 408 and the connection is
closed, instead of holding a connection and a task forever. Only reads of the
body are timed: once it is complete, ``receive`` (which then waits for the client
to go away, e.g. while a download streams) is passed through untouched. A body the
app never reads is bounded by the server protocol (``mailvet.api.server``).

``paths`` gives some paths limits of their own (the dashboard's file upload: larger and
slower than an API call). On those the route answers an over-long ``Content-Length``
itself (with a page a person can read) and catches ``BodyTooLarge`` from its own reads;
should it not, the refusal is the same as everywhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailvet.api import wire

__all__ = ["BODY_TIMEOUT", "BodyLimitMiddleware", "BodyTimeout", "BodyTooLarge"]

BODY_TIMEOUT = "The body provided did not arrive in time."


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


class BodyTimeout(Exception):
    """Raised from ``receive`` when the body is not complete by the deadline."""


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout: float | None = None,
        paths: Mapping[str, tuple[int, float | None]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.paths = dict(paths or {})  # path -> (max_bytes, timeout) of its own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        own = self.paths.get(scope["path"]) if scope["type"] == "http" else None
        max_bytes, timeout = own if own is not None else (self.max_bytes, self.timeout)
        if scope["type"] != "http" or (max_bytes <= 0 and timeout is None):
            await self.app(scope, receive, send)
            return
        limit = max_bytes if max_bytes > 0 else None
        deadline = None
        if timeout is not None:
            deadline = asyncio.get_running_loop().time() + timeout
        for name, value in scope["headers"] if own is None else ():
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _refuse(send, wire.BAD_FORMAT, 400)
                    return
                if limit is not None and declared > limit:
                    await _refuse(send, wire.BODY_TOO_LARGE, 413)
                    return
                break

        received = 0
        started = False
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done or deadline is None:
                message = await receive()
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    raise BodyTimeout from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if limit is not None and received > limit:
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
        except BodyTimeout:
            if started:
                raise
            await _refuse(send, BODY_TIMEOUT, 408)


async def _refuse(send: Send, message: str, status: int) -> None:
    response = wire.error_response(message, status, {"connection": "close"})
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})

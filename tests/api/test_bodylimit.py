"""The body limits (mailvet.api.bodylimit): a body must arrive in time, not just fit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.types import Message, Receive, Scope, Send

from mailvet.api.bodylimit import BodyLimitMiddleware

from .kit import make_settings, running_api


async def test_a_stalled_body_is_answered_408() -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield b'{"emails": ["a@deliverable.test",'
        await asyncio.sleep(3600)  # the rest never comes
        yield b"]}"

    async with running_api(make_settings(body_timeout=0.3)) as api:
        r = await asyncio.wait_for(
            api.client.post(
                "/v1/batch",
                content=stalls(),
                headers={**api.h(), "content-type": "application/json"},
            ),
            10,
        )
    assert r.status_code == 408
    assert r.json() == {"data": None, "error": "The body provided did not arrive in time."}
    assert r.headers["connection"] == "close"


async def test_only_the_body_is_timed_not_the_wait_for_a_disconnect() -> None:
    """Once the body is complete, ``receive`` waits for the client to go (a streaming
    download listens for that): the body deadline must not cut it."""
    sent: list[Message] = []
    second: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        assert first["body"] == b"{}" and not first["more_body"]
        second.append(await receive())  # arrives long after the body deadline
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages: list[Message] = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(0.3)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    await BodyLimitMiddleware(app, max_bytes=100, timeout=0.05)(scope, receive, send)
    assert second == [{"type": "http.disconnect"}]
    assert sent[0]["status"] == 200


async def test_a_path_with_limits_of_its_own() -> None:
    """``paths``: a larger limit for one path, whose route answers an over-long
    Content-Length itself; every other path keeps the default."""
    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        seen.append(len(body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = BodyLimitMiddleware(app, max_bytes=10, timeout=5, paths={"/upload": (100, 5)})

    async def run(path: str, body: bytes, length: int | None = None) -> int:
        sent: list[Message] = []
        headers = [] if length is None else [(b"content-length", str(length).encode())]
        messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Message:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        await limited(scope, receive, send)
        status: int = sent[0]["status"]
        return status

    assert await run("/upload", b"x" * 50) == 200
    assert await run("/other", b"x" * 50) == 413
    # a declared length over the limit reaches the route (which answers it) ...
    assert await run("/upload", b"x" * 50, length=1000) == 200
    assert await run("/other", b"x" * 5, length=1000) == 413  # ... elsewhere refused at once
    assert await run("/upload", b"x" * 101) == 413  # the route did not catch it: refused
    assert seen == [50, 50]

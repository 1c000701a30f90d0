"""The server protocol (mailvet.api.server) inside the test's own loop: the cases that
need a second request on a kept-alive connection, and the open-file limit."""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI

from mailvet.api.server import ensure_fd_limit, uvicorn_options
from mailvet.settings import Settings

from .kit import serve


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


@asynccontextmanager
async def guarded(settings: Settings) -> AsyncIterator[int]:
    """A uvicorn server with mailvet's protocol on a loopback port; yields the port."""
    options = {**uvicorn_options(settings), "log_level": "warning", "lifespan": "off"}
    async with serve(_app(), **options) as url:
        yield int(url.rpartition(":")[2])


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    got = b""
    while chunk := await reader.read(65536):
        got += chunk
    return got


PING = b"GET /ping HTTP/1.1\r\nhost: t\r\n\r\n"


async def test_a_second_request_on_a_kept_alive_connection_has_the_header_bound_too() -> None:
    # the keep-alive timer is long: only the header bound can close this connection
    settings = Settings(header_timeout=0.3, keepalive_timeout=60)
    async with guarded(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PING)
        first = await asyncio.wait_for(reader.readuntil(b'{"pong":"yes"}'), 10)
        assert first.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.5)  # idle past the header bound: kept alive, that is allowed
        writer.write(b"GET /ping HTTP/1.1\r\nhost")  # ... then half a request, and silence
        rest = await asyncio.wait_for(_read_until_closed(reader), 10)
        writer.close()
    assert rest.startswith(b"HTTP/1.1 408 Request Timeout")


async def test_an_idle_kept_alive_connection_is_closed() -> None:
    settings = Settings(header_timeout=60, keepalive_timeout=1)
    options = uvicorn_options(settings)
    assert options["timeout_keep_alive"] == 1  # uvicorn's own timer does this one
    assert options["limit_concurrency"] == settings.max_connections + 1
    assert options["access_log"] is False  # request lines carry ?email=
    async with guarded(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PING)
        got = await asyncio.wait_for(_read_until_closed(reader), 10)
        writer.close()
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b'{"pong":"yes"}')


async def test_pipelined_requests_are_all_answered() -> None:
    settings = Settings(header_timeout=0.3, body_timeout=0.3)
    async with guarded(settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PING * 3)
        got = b""
        while got.count(b'{"pong":"yes"}') < 3:
            got += await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
    assert got.count(b"HTTP/1.1 200") == 3


def test_the_open_file_limit_is_raised_towards_what_the_cap_needs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 600:
        pytest.skip("the hard open-file limit is too low to try")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert ensure_fd_limit(512) == 512
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 512
        assert not caplog.records
        beyond = hard + 1 if hard != resource.RLIM_INFINITY else None
        if beyond is not None:
            with caplog.at_level(logging.WARNING, logger="mailvet"):
                assert ensure_fd_limit(beyond) == hard
            assert "lower MAILVET_MAX_CONNECTIONS" in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

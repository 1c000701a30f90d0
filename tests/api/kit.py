"""Helpers for the HTTP API tests: an app on a MemoryStore, keys, and a scripted engine.

``FakeEngine`` (shipped in ``mailvet.testing.engine``) decides by domain without any
network, so route behaviour is tested apart from the pipeline; tests that need the real
engine on the simulated internet build it themselves (see test_clevertap.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from mailvet.api.app import create_app
from mailvet.settings import Settings
from mailvet.storage.base import Plan
from mailvet.storage.memory import MemoryStore
from mailvet.testing.engine import FakeEngine as FakeEngine  # re-exported for the tests


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": "sqlite:///:memory:",
        "rate_limit_per_minute": 100_000,
        "deadline": 1.0,
        "batch_concurrency": 4,
    }
    base.update(overrides)
    return Settings(**base)


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    store: MemoryStore
    engine: FakeEngine
    paid: str  # secrets
    free: str
    other: str  # a second paid key

    def h(self, secret: str | None = None) -> dict[str, str]:
        return {"x-mails-api-key": self.paid if secret is None else secret}


@asynccontextmanager
async def running_api(
    settings: Settings | None = None, engine: FakeEngine | None = None
) -> AsyncIterator[Api]:
    """The app with its lifespan running, an ASGI client, a paid, a free and another key."""
    store = MemoryStore()
    engine = engine or FakeEngine()
    _, paid = await store.create_key("paid", Plan.PAID)
    _, free = await store.create_key("free", Plan.FREE)
    _, other = await store.create_key("other", Plan.PAID)
    app = create_app(settings or make_settings(), store=store, engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mailvet.test") as client:
            yield Api(app, client, store, engine, paid, free, other)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: FastAPI, **options: Any) -> AsyncIterator[str]:
    """Run ``app`` on a real uvicorn server on loopback; yield its base URL.

    ``options`` go to ``uvicorn.Config`` over the defaults (warnings only, lifespan on)."""
    port = free_port()
    settings: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **options}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, **settings)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task

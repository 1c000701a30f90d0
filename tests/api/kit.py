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
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from mailvet.api.app import create_app
from mailvet.settings import Settings
from mailvet.storage import open_store
from mailvet.storage.base import Plan, Store
from mailvet.storage.memory import MemoryStore
from mailvet.testing.engine import FakeEngine as FakeEngine  # re-exported for the tests

PUBLIC_HOOK_HOST = "hooks.example.com"  # what the fake resolver knows
PUBLIC_HOOK_IP = "93.184.215.14"  # a public address; nothing is ever sent there


async def fake_resolver(host: str, port: int) -> list[str]:
    """No DNS in tests: ``PUBLIC_HOOK_HOST`` is public, ``private.example.com`` private,
    every other name does not resolve."""
    table = {PUBLIC_HOOK_HOST: [PUBLIC_HOOK_IP], "private.example.com": ["10.0.0.7"]}
    if host.lower() in table:
        return table[host.lower()]
    raise OSError(f"{host} does not resolve (fake resolver)")


class HookRecorder:
    """A webhook transport that sends nothing: it records each request and answers 200."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)


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
    store: Store
    engine: FakeEngine
    paid: str  # secrets
    free: str
    other: str  # a second paid key
    hooks: HookRecorder  # webhooks the app sent (never on the network)

    def h(self, secret: str | None = None) -> dict[str, str]:
        return {"x-mails-api-key": self.paid if secret is None else secret}


@asynccontextmanager
async def running_api(
    settings: Settings | None = None,
    engine: FakeEngine | None = None,
    store: Store | None = None,
) -> AsyncIterator[Api]:
    """The app with its lifespan running, an ASGI client, a paid, a free and another key;
    on a MemoryStore unless ``store`` is given (migrated, left open)."""
    store = MemoryStore() if store is None else store
    await store.migrate()
    engine = engine or FakeEngine()
    _, paid = await store.create_key("paid", Plan.PAID)
    _, free = await store.create_key("free", Plan.FREE)
    _, other = await store.create_key("other", Plan.PAID)
    hooks = HookRecorder()
    app = create_app(
        settings or make_settings(),
        store=store,
        engine=engine,
        resolver=fake_resolver,
        webhook_transport=hooks.transport,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mailvet.test") as client:
            yield Api(app, client, store, engine, paid, free, other, hooks)


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


@asynccontextmanager
async def api_on(kind: str, path: Path, settings: Settings | None = None) -> AsyncIterator[Api]:
    """``running_api`` on a ``memory`` store or on a ``sqlite`` file under ``path``."""
    store: Store = MemoryStore() if kind == "memory" else open_store(f"sqlite:///{path / 'api.db'}")
    try:
        async with running_api(settings, store=store) as running:
            yield running
    finally:
        await store.close()

"""Helpers for the HTTP API tests: an app on a MemoryStore, keys, and a scripted engine.

``FakeEngine`` decides by domain without any network, so route behaviour is tested
apart from the pipeline; tests that need the real engine on the simulated internet
build it themselves (see test_clevertap.py).
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
from mailvet.engine.facts import Facts, SyntaxFacts, TranscriptEntry
from mailvet.settings import Settings
from mailvet.storage.base import Plan
from mailvet.storage.memory import MemoryStore
from mailvet.verdict import Reason, Result, Verdict

# domain -> (result, reason, score)
OUTCOMES: dict[str, tuple[Result, Reason, int]] = {
    "deliverable.test": (Result.DELIVERABLE, Reason.ACCEPTED_EMAIL, 100),
    "rejecting.test": (Result.UNDELIVERABLE, Reason.REJECTED_EMAIL, 10),
    "catchall.test": (Result.RISKY, Reason.CATCH_ALL, 80),
}


@dataclass(frozen=True, slots=True)
class FakeChecked:
    verdict: Verdict
    facts: Facts


class FakeEngine:
    """Engine stand-in: ``verify`` decides by domain; ``stall.test`` never answers."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.delay = delay
        self.closed = False
        self.gate: asyncio.Event | None = None  # when set, verify waits for it
        self.in_flight = 0
        self.max_in_flight = 0

    def check_offline(self, raw: str) -> Facts:
        local, at, domain = raw.rpartition("@")
        ok = bool(at and local and "." in domain) and not any(c.isspace() for c in raw)
        syntax = SyntaxFacts(
            ok=ok,
            email=raw if not ok else f"{local}@{domain.lower()}",
            local=local if ok else None,
            domain=domain.lower() if ok else None,
            ascii_domain=domain.lower() if ok else None,
        )
        return Facts(syntax=syntax, offline=True)

    def verdict_offline(self, raw: str) -> Verdict:
        facts = self.check_offline(raw)
        if not facts.syntax.ok:
            return Verdict.make(
                email=raw[:254],
                score=0,
                isv_format=False,
                result=Result.UNDELIVERABLE,
                reason=Reason.INVALID_FORMAT,
            )
        return Verdict.make(
            email=facts.syntax.email,
            username=facts.syntax.local,
            domain=facts.syntax.domain,
            score=50,
            isv_format=True,
            result=Result.UNKNOWN,
            reason=Reason.NOT_CHECKED,
        )

    async def verify(
        self, raw: str, *, offline: bool = False, deadline: float | None = None
    ) -> FakeChecked:
        self.calls.append(raw)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        facts = self.check_offline(raw)
        base = self.verdict_offline(raw)
        if not facts.syntax.ok or offline:
            return FakeChecked(base, facts)
        facts.offline = False
        domain = facts.syntax.domain or ""
        if domain == "stall.test":
            await asyncio.sleep(3600)
        result, reason, score = OUTCOMES.get(domain, (Result.UNKNOWN, Reason.NO_CONNECT, 40))
        facts.transcript = [
            TranscriptEntry(1.0, "dns", f"MX {domain}: mx.{domain}"),
            TranscriptEntry(2.0, "connect", f"mx.{domain}:25", f"mx.{domain}"),
            TranscriptEntry(5.5, "recv", "250 2.1.5 ok", f"mx.{domain}"),
        ]
        verdict = base._replace(
            result=result,
            reason=reason,
            score=score,
            isv_domain=True,
            isv_mx=True,
            mx_record=f"mx.{domain}",
        )
        return FakeChecked(verdict, facts)

    async def close(self) -> None:
        self.closed = True


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
    app = create_app(settings or make_settings(), store=store, engine=engine)  # type: ignore[arg-type]
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
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` on a real uvicorn server on loopback; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
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

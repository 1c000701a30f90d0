"""jobs/webhook.py: batch webhooks delivered to a real receiver on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailvet.jobs.webhook import WebhookSender, callback_allowed, sign
from mailvet.settings import Settings
from mailvet.storage import open_store
from mailvet.storage.base import Plan, Store
from mailvet.storage.common import utcnow

from .kit import PUBLIC_HOOK_HOST, PUBLIC_HOOK_IP, HookRecorder, fake_resolver, make_settings, serve


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(
        "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'w.db'}"
    )
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


@dataclass
class Receiver:
    """A webhook endpoint: answers the scripted statuses in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        self.received.append((await request.body(), dict(request.headers)))
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status)


@asynccontextmanager
async def receiver(statuses: list[int]) -> AsyncIterator[Receiver]:
    rec = Receiver(statuses=list(statuses))
    app = Starlette(routes=[Route("/hook", rec.hook, methods=["POST"])])
    async with serve(app) as base:  # type: ignore[arg-type]
        rec.url = f"{base}/hook"
        yield rec


async def finished_batch(store: Store, url: str) -> tuple[str, str]:
    """A finished batch with ``url`` as its callback; returns (batch id, key secret)."""
    key, secret = await store.create_key("acme", Plan.PAID)
    record = await store.create_batch(key.id, "list", ["a@b.test", "c@d.test"], callback_url=url)
    verdict = {"email": "a@b.test", "result": "deliverable", "reason": "accepted_email"}
    await store.save_results(record.id, [("a@b.test", verdict), ("c@d.test", verdict)])
    await store.finish_batch(record.id)
    return record.id, secret


async def run_rounds(sender: WebhookSender, rounds: int) -> None:
    for _ in range(rounds):
        await sender.run_once()
        await asyncio.sleep(0.03)


def loopback_settings(**overrides: Any) -> Settings:
    return make_settings(**{"allow_private_webhooks": True, "webhook_timeout": 5.0, **overrides})


async def test_delivered_signed_and_retried_after_a_500(store: Store) -> None:
    async with receiver([500]) as rec:
        batch_id, secret = await finished_batch(store, rec.url)
        sender = WebhookSender(store, loopback_settings(), first_delay=0.05)
        try:
            assert await sender.run_once() == 0  # the 500: not delivered, retried later
            assert len(rec.received) == 1
            assert await sender.run_once() == 0  # not due yet: nothing sent
            assert len(rec.received) == 1
            await asyncio.sleep(0.1)
            assert await sender.run_once() == 1
        finally:
            await sender.stop()
    assert len(rec.received) == 2
    body, headers = rec.received[1]
    assert rec.received[0][0] == body  # the same signed body each time
    # what a receiver does: HMAC-SHA256 keyed by the hex SHA-256 of its API key
    key = hashlib.sha256(secret.encode()).hexdigest().encode()
    digest = hmac.new(key, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-mailvet-signature"], f"sha256={digest}")
    assert headers["content-type"] == "application/json"
    assert headers["x-mailvet-batch"] == batch_id
    sent = orjson.loads(body)
    assert sent["id"] == batch_id
    assert sent["status"] == "finished"
    assert sent["counts"]["deliverable"] == 2
    assert "emails" not in sent
    # delivered: never due again
    assert await store.webhooks_due(utcnow() + timedelta(days=1)) == []


async def test_a_loopback_callback_is_not_called_unless_allowed(store: Store) -> None:
    async with receiver([]) as rec:
        batch_id, _ = await finished_batch(store, rec.url)
        sender = WebhookSender(store, make_settings())
        try:
            assert await sender.run_once() == 0
        finally:
            await sender.stop()
    assert rec.received == []
    # a failed attempt: tried again later, not at once
    assert await store.webhooks_due(utcnow()) == []
    [again] = await store.webhooks_due(utcnow() + timedelta(hours=1))
    assert again.id == batch_id


async def test_given_up_after_the_last_attempt(store: Store) -> None:
    async with receiver([500, 502, 503, 500]) as rec:
        await finished_batch(store, rec.url)
        sender = WebhookSender(
            store, loopback_settings(webhook_max_attempts=3), first_delay=0.01, max_delay=0.02
        )
        try:
            await run_rounds(sender, 12)
        finally:
            await sender.stop()
    assert len(rec.received) == 3
    assert await store.webhooks_due(utcnow() + timedelta(days=1)) == []  # given up


async def test_a_receiver_that_does_not_answer_is_a_failed_attempt(store: Store) -> None:
    stalled = asyncio.Event()

    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # read nothing, answer nothing
        stalled.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        batch_id, _ = await finished_batch(store, f"http://127.0.0.1:{port}/hook")
        sender = WebhookSender(store, loopback_settings(webhook_timeout=0.3))
        try:
            assert await sender.run_once() == 0
        finally:
            await sender.stop()
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
    assert stalled.is_set()
    assert await store.webhooks_due(utcnow()) == []
    [again] = await store.webhooks_due(utcnow() + timedelta(hours=1))
    assert again.id == batch_id


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/h", True),
        ("http://hooks.example.com:8080/h?x=1", True),
        ("https://93.184.215.14/h", True),
        ("https://127.0.0.1/h", False),
        ("https://[::ffff:10.0.0.1]/h", False),
        ("https://private.example.com/h", False),
        ("https://unknown.example.com/h", False),
        ("file:///etc/passwd", False),
        ("https://hooks.example.com/\r\nX: y", False),
        ("https://hooks.example.com:0x50/h", False),
    ],
)
async def test_callback_allowed(url: str, allowed: bool) -> None:
    assert await callback_allowed(
        url, allow_private=False, timeout=1.0, resolver=fake_resolver
    ) is (allowed)


def test_sign() -> None:
    assert sign("ab", b"{}") == "sha256=" + hmac.new(b"ab", b"{}", hashlib.sha256).hexdigest()


async def test_the_count_of_tries_survives_a_restart(store: Store) -> None:
    async with receiver([500, 500, 500]) as rec:
        await finished_batch(store, rec.url)
        settings = loopback_settings(webhook_max_attempts=2)
        for _ in range(2):  # one try per sender: a restart between them
            sender = WebhookSender(store, settings, first_delay=0.01, max_delay=0.01)
            try:
                await asyncio.sleep(0.03)
                assert await sender.run_once() == 0
            finally:
                await sender.stop()
    assert len(rec.received) == 2
    assert await store.webhooks_due(utcnow() + timedelta(days=1)) == []  # given up


async def test_the_delivery_goes_to_the_address_that_was_checked(store: Store) -> None:
    # a name that answers public to the check, then private (DNS rebinding): the request
    # must go to the address checked, not to a second look-up's
    answers = iter([[PUBLIC_HOOK_IP]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers, ["10.0.0.7"])

    hooks = HookRecorder()
    await finished_batch(store, f"https://{PUBLIC_HOOK_HOST.upper()}:8443/hook?t=1")
    sender = WebhookSender(store, make_settings(), resolver=rebinding, transport=hooks.transport)
    try:
        assert await sender.run_once() == 1
    finally:
        await sender.stop()
    [request] = hooks.requests
    assert request.url.host == PUBLIC_HOOK_IP
    assert request.url.path == "/hook" and request.url.query == b"t=1"
    assert request.headers["host"] == f"{PUBLIC_HOOK_HOST}:8443"
    assert request.extensions["sni_hostname"] == PUBLIC_HOOK_HOST

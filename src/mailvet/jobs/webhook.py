"""Batch webhooks: ``callback_url`` is called once a batch is finished.

``POST /v1/batch`` may carry a ``callback_url``. ``callback_allowed`` decides whether
the API accepts it: http or https, and (unless ``allow_private_webhooks``) every
address its host resolves to public, by the same rule as an MX (``engine.netpolicy``):
otherwise anyone with a key could make the service call into its own network.

``WebhookSender`` runs next to the batch runner in ``mailvet serve``. It polls the
store for finished batches whose webhook is due (``Store.webhooks_due``) and POSTs
the batch object (without ``emails``) as JSON with

    X-Mailvet-Signature: sha256=<hex HMAC-SHA256 of the body>

keyed by the SHA-256 hex digest of the batch's API key (what the store keeps of the
key; the client computes it from its key). A 2xx answer is a delivery; anything else
(another status, a refused connection, a timeout, a host that now resolves to a
private address) is retried with exponential back-off, ``webhook_max_attempts``
times in all. The store keeps the tries, whether one was delivered and when the next
is due (``Store.webhook_result``), so a restart goes on where it stopped. Logged: batch
ids and outcomes, never the URL (it may carry a token) nor the addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

import mailvet
from mailvet.api import wire  # the one place that knows the wire shape
from mailvet.engine.netpolicy import is_public_address
from mailvet.settings import Settings
from mailvet.storage.base import ApiKey, BatchRecord, Store
from mailvet.storage.common import utcnow

__all__ = [
    "SIGNATURE_HEADER",
    "Resolver",
    "WebhookSender",
    "callback_allowed",
    "sign",
    "signing_key",
    "system_resolver",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Mailvet-Signature"
FIRST_DELAY = 10.0  # seconds before the first retry; doubles after each failure
MAX_DELAY = 3600.0
POLL_INTERVAL = 2.0
MAX_PARALLEL = 8  # deliveries at once


def signing_key(secret_hash: str) -> bytes:
    """The HMAC key of a key's webhooks: the hex SHA-256 of the API key, as ASCII.

    ``secret_hash`` is that digest (what the store keeps); a client computes it as
    ``hashlib.sha256(api_key.encode()).hexdigest()``."""
    return secret_hash.encode("ascii")


def sign(secret_hash: str, body: bytes) -> str:
    """The ``X-Mailvet-Signature`` value for ``body``: ``sha256=<hex>``."""
    digest = hmac.new(signing_key(secret_hash), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _split(url: str) -> tuple[str, int] | None:
    """(host, port) of an http(s) URL with a host, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in url):
        return None
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    return parts.hostname, port


Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``; raises OSError when the name does not resolve."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's own resolver (``getaddrinfo``), as the HTTP client will connect."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _addresses(host: str, port: int, resolver: Resolver, timeout: float) -> list[str]:
    """The addresses ``host`` resolves to (itself when a literal); empty when it does not."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        async with asyncio.timeout(timeout):
            return await resolver(host, port)
    except (OSError, TimeoutError, UnicodeError):
        return []


async def callback_allowed(
    url: str, *, allow_private: bool, timeout: float, resolver: Resolver = system_resolver
) -> bool:
    """Whether ``url`` may be called: http(s), a host that resolves, and every address it
    resolves to public unless ``allow_private``."""
    target = _split(url)
    if target is None:
        return False
    addresses = await _addresses(*target, resolver, timeout)
    if not addresses:
        return False
    return allow_private or all(is_public_address(ip) for ip in addresses)


class WebhookSender:
    """``start()`` it once; ``stop()`` at shutdown; ``run_once()`` does one round."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        poll_interval: float = POLL_INTERVAL,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = system_resolver,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.resolver = resolver
        self.settings = settings
        self.poll_interval = poll_interval
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.max_attempts = max(1, settings.webhook_max_attempts)
        self._clock = clock
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=settings.webhook_timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": f"mailvet/{mailvet.__version__} (webhook)"},
        )
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._loop(), name="mailvet-webhooks")

    def wake(self) -> None:
        """Look for due webhooks now (a batch just finished)."""
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook round failed; trying again in %.0f s", self.poll_interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def run_once(self) -> int:
        """Deliver every due webhook once; return how many were delivered."""
        due = await self.store.webhooks_due(self._clock())
        if not due:
            return 0
        keys = {key.id: key for key in await self.store.list_keys()}
        gate = asyncio.Semaphore(MAX_PARALLEL)

        async def one(record: BatchRecord) -> bool:
            async with gate:
                return await self._deliver(record, keys.get(record.user_id))

        outcomes = await asyncio.gather(*(one(record) for record in due))
        return sum(outcomes)

    async def deliver(self, record: BatchRecord) -> bool:
        """One attempt at one finished batch's webhook (a worker's webhook job); recorded
        in the store like ``run_once``'s. Whether it was delivered."""
        key = next((k for k in await self.store.list_keys() if k.id == record.user_id), None)
        return await self._deliver(record, key)

    async def _deliver(self, record: BatchRecord, key: ApiKey | None) -> bool:
        url = record.callback_url
        secret_hash = await self.store.key_hash(record.user_id)
        if url is None or key is None or secret_hash is None:
            # the key was deleted: nobody can verify a signature any more
            await self.store.webhook_result(record.id, delivered=False, next_at=None)  # give up
            return False
        body = orjson.dumps(
            wire.batch_object(record, key, counts=await self.store.counts(record.id))
        )
        status = await self._post(url, body, secret_hash, record.id)
        attempts = record.webhook_attempts + 1  # this one included
        if status is not None and 200 <= status < 300:
            await self.store.webhook_result(record.id, delivered=True, next_at=None)
            log.info("batch %s webhook delivered (attempt %d)", record.id, attempts)
            return True
        next_at: datetime | None
        if attempts >= self.max_attempts:
            next_at = None  # given up: never due again
            log.warning(
                "batch %s webhook given up after %d attempts (last: %s)",
                record.id,
                attempts,
                status if status is not None else "no answer",
            )
        else:
            delay = min(self.first_delay * 2 ** (attempts - 1), self.max_delay)
            delay *= random.uniform(0.9, 1.1)  # spread the retries of many batches
            next_at = self._clock() + timedelta(seconds=delay)
            log.info(
                "batch %s webhook attempt %d failed (%s); next in %.1f s",
                record.id,
                attempts,
                status if status is not None else "no answer",
                delay,
            )
        await self.store.webhook_result(record.id, delivered=False, next_at=next_at)
        return False

    async def _post(self, url: str, body: bytes, secret_hash: str, batch_id: str) -> int | None:
        """The answer's status, or None when there was none (refused, timeout, private)."""
        target = _split(url)
        if target is None:
            return None
        addresses = await _addresses(*target, self.resolver, self.settings.webhook_timeout)
        allow_private = self.settings.allow_private_webhooks
        if not addresses or not (allow_private or all(is_public_address(ip) for ip in addresses)):
            return None  # resolves elsewhere since it was accepted: not called
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(secret_hash, body),
            "X-Mailvet-Batch": batch_id,
        }
        request_url = httpx.URL(url)
        extensions: dict[str, Any] = {}
        if not allow_private:
            # connect to the address just checked, not to what a second look-up says
            # (a name that answers public, then private, would reach the inside)
            headers["host"] = request_url.netloc.decode("ascii")
            if request_url.scheme == "https":
                extensions["sni_hostname"] = request_url.raw_host.decode("ascii")
            request_url = request_url.copy_with(host=addresses[0])
        try:
            async with asyncio.timeout(self.settings.webhook_timeout):
                response = await self._client.post(
                    request_url, content=body, headers=headers, extensions=extensions
                )
        except (httpx.HTTPError, TimeoutError, OSError):
            return None
        return response.status_code

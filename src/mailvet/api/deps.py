"""What a request needs: the per-app ``Service`` and API key authentication.

Authentication reads ``x-mails-api-key`` (Mails.so's header) or
``Authorization: Bearer <key>``. Look-ups are cached for ``AUTH_CACHE_TTL`` seconds
(hits and misses) so the hot path does not touch storage on every request; a
revoked key therefore keeps working for at most that long on this process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from mailvet.api.cache import CachedResult, SingleFlight, TTLCache, result_cost
from mailvet.api.metrics import Metrics
from mailvet.api.ratelimit import RateLimiter
from mailvet.engine.syntax import SyntaxPolicy
from mailvet.jobs.plan import dedupe_keys
from mailvet.settings import Settings
from mailvet.storage.base import ApiKey, BatchRecord, Store

if TYPE_CHECKING:
    from mailvet.engine import Engine
    from mailvet.jobs.cluster import BatchQueue
    from mailvet.jobs.inprocess import BatchRunner
    from mailvet.jobs.webhook import Resolver, WebhookSender

__all__ = ["AUTH_CACHE_TTL", "Service", "api_key_from", "authenticate", "service"]

AUTH_CACHE_TTL = 10.0
AUTH_CACHE_SIZE = 10_000
RESULT_CACHE_SIZE = 100_000
RESULT_CACHE_BYTES = 256 * 1024 * 1024  # hostile servers make long transcripts: bound bytes too
MAX_SHARED_PROBES = 10_000  # addresses whose running probe concurrent requests may join
MAX_KEY_CHARS = 512


@dataclass(eq=False)
class Service:
    """Everything the routes share; one per app instance, filled in by the lifespan."""

    settings: Settings
    metrics: Metrics
    limiter: RateLimiter
    store: Store | None = None
    engine: Engine | None = None
    runner: BatchRunner | None = None
    queue: BatchQueue | None = None  # PostgreSQL without in-process batch work: enqueue
    webhooks: WebhookSender | None = None
    resolver: Resolver | None = None  # host names of callback URLs (None: the system's)
    results: TTLCache[CachedResult] = field(
        default_factory=lambda: TTLCache(
            RESULT_CACHE_SIZE, cost=result_cost, max_cost=RESULT_CACHE_BYTES
        )
    )
    keys: TTLCache[tuple[ApiKey | None]] = field(default_factory=lambda: TTLCache(AUTH_CACHE_SIZE))
    probes: SingleFlight[CachedResult] = field(
        default_factory=lambda: SingleFlight(MAX_SHARED_PROBES)
    )
    started_at: float = field(default_factory=time.time)

    def require_store(self) -> Store:
        if self.store is None:
            raise RuntimeError("the app is not started (lifespan did not run)")
        return self.store

    async def submit_batch(
        self, key: ApiKey, name: str | None, emails: list[str], callback_url: str | None = None
    ) -> BatchRecord:
        """Store a batch (one probe per normalised address) and hand it to whatever works
        batches. POST /v1/batch and the dashboard's upload both come through here."""
        policy = SyntaxPolicy.from_settings(self.settings)
        # off the loop, which answers /v1/validate too
        keys = await asyncio.to_thread(dedupe_keys, emails, policy)
        record = await self.require_store().create_batch(
            key.id, name, emails, keys=keys, callback_url=callback_url
        )
        await self.batch_changed(record.id)
        return record

    async def batch_changed(self, batch_id: str) -> None:
        """A batch was stored or deleted: tell whatever works batches: the in-process
        runner, or (``MAILVET_INPROCESS_WORKER`` off, PostgreSQL) the workers' queue."""
        if self.runner is not None:
            self.runner.wake()
        if self.queue is not None:
            await self.queue.batch_changed(batch_id)

    def require_engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the app is not started (lifespan did not run)")
        return self.engine


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def api_key_from(request: Request) -> str | None:
    """The secret the client sent, from either header; None when absent or absurd."""
    headers = request.headers
    secret = headers.get("x-mails-api-key")
    if not secret:
        auth = headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer":
                secret = value
    if not secret:
        return None
    secret = secret.strip()
    if not secret or len(secret) > MAX_KEY_CHARS:
        return None
    return secret


async def authenticate(request: Request, svc: Service) -> ApiKey | None:
    """The live key behind the request's secret, or None."""
    secret = api_key_from(request)
    if secret is None:
        return None
    cached = svc.keys.get(secret)
    if cached is not None:
        return cached[0]
    key = await svc.require_store().authenticate(secret)
    svc.keys.set(secret, (key,), AUTH_CACHE_TTL)
    return key

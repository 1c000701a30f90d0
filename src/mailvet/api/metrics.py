"""Prometheus metrics, one ``CollectorRegistry`` per app instance.

- ``mailvet_http_requests_total{method,route,status}``: every HTTP request, by the
  route *template* (``/v1/batch/{batch_id}``), never the raw path (``unmatched`` when
  no route matched), and by method from a fixed set (anything else is ``OTHER``), so
  no request can mint a new series;
- ``mailvet_verdicts_total{result,reason,source}``: verdicts given (api / batch / cache);
- ``mailvet_smtp_duration_seconds``: length of the SMTP conversation of a validation;
- ``mailvet_request_duration_seconds{route}``: wall time of each request;
- on PostgreSQL only, the batch machinery as ``mailvet status`` reads it, at scrape time
  and at most every ``CLUSTER_CACHE_SECONDS`` (``ClusterGauges``):
  ``mailvet_jobs{status}`` (queued, scheduled, running, failed procrastinate jobs),
  ``mailvet_workers_alive``, ``mailvet_workers`` (rows, dead ones too),
  ``mailvet_lane_sessions{mx}`` (the ``MAX_LANE_SERIES`` MX hosts with the most sessions
  held; the rest summed under ``mx="other"``), ``mailvet_lanes_busy``,
  ``mailvet_lanes_paused`` and ``mailvet_batches_unfinished``.

``MetricsMiddleware`` is plain ASGI (no per-request objects beyond a closure) so the
hot path stays cheap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailvet.api.wire import smtp_seconds
from mailvet.engine.facts import Facts
from mailvet.settings import Settings
from mailvet.verdict import Verdict

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from mailvet.storage.base import Store

__all__ = [
    "CLUSTER_CACHE_SECONDS",
    "CONTENT_TYPE_LATEST",
    "MAX_LANE_SERIES",
    "METHODS",
    "ClusterGauges",
    "Metrics",
    "MetricsMiddleware",
    "method_label",
]

log = logging.getLogger(__name__)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED = "unmatched"

_SMTP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CLUSTER_CACHE_SECONDS = 5.0  # a scrape reads the database at most this often
MAX_LANE_SERIES = 20  # mailvet_lane_sessions{mx} series at most (plus mx="other")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mailvet_http_requests",
            "HTTP requests by method, route template and status code",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "mailvet_request_duration_seconds",
            "HTTP request wall time by route template",
            ("route",),
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.verdicts = Counter(
            "mailvet_verdicts",
            "Verdicts given, by result, reason and source (api, cache, batch)",
            ("result", "reason", "source"),
            registry=self.registry,
        )
        self.smtp_seconds = Histogram(
            "mailvet_smtp_duration_seconds",
            "Duration of the SMTP conversation of one validation",
            buckets=_SMTP_BUCKETS,
            registry=self.registry,
        )
        self.cluster: ClusterGauges | None = None  # made on the first PostgreSQL scrape

    async def refresh_cluster(self, store: Store | None, settings: Settings) -> None:
        """Before a scrape: update the cluster gauges when ``store`` is on PostgreSQL."""
        from mailvet.storage.sql import SqlStore

        if not isinstance(store, SqlStore) or store.dialect != "postgresql":
            return
        if self.cluster is None:
            self.cluster = ClusterGauges(self.registry, settings)
        await self.cluster.refresh(store.engine)

    def observe_verdict(self, verdict: Verdict | dict[str, Any], source: str) -> None:
        if isinstance(verdict, Verdict):
            result, reason = verdict.result.value, verdict.reason.value
        else:
            result, reason = str(verdict.get("result")), str(verdict.get("reason"))
        self.verdicts.labels(result, reason, source).inc()

    def observe_facts(self, facts: Facts) -> None:
        seconds = smtp_seconds(facts)
        if seconds is not None:
            self.smtp_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def method_label(method: object) -> str:
    """The request method if it is a standard one, else ``OTHER``."""
    return method if isinstance(method, str) and method in METHODS else "OTHER"


def route_label(scope: Scope) -> str:
    """The matched route's template (a fixed string from the app), else ``unmatched``."""
    template = getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) and template else UNMATCHED


class MetricsMiddleware:
    """Counts every HTTP response by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = route_label(scope)
            self.metrics.requests.labels(method_label(scope["method"]), template, str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(time.perf_counter() - start)


class ClusterGauges:
    """The batch machinery's gauges (jobs, workers, MX lanes, batches), read from the
    database by ``jobs.status.read_status`` when scraped, cached ``cache_seconds``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        settings: Settings,
        *,
        cache_seconds: float = CLUSTER_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        self.jobs = Gauge(
            "mailvet_jobs",
            "procrastinate jobs: queued (due), scheduled (later), running, failed",
            ("status",),
            registry=registry,
        )
        self.workers_alive = Gauge(
            "mailvet_workers_alive",
            "Workers whose heartbeat is at most MAILVET_WORKER_ALIVE_SECONDS old",
            registry=registry,
        )
        self.workers = Gauge(
            "mailvet_workers", "Worker rows in procrastinate_workers", registry=registry
        )
        self.lane_sessions = Gauge(
            "mailvet_lane_sessions",
            f"SMTP sessions held per MX host (top {MAX_LANE_SERIES}; the rest as mx=other)",
            ("mx",),
            registry=registry,
        )
        self.lanes_busy = Gauge(
            "mailvet_lanes_busy",
            "MX lanes with a session held, a pause or recent RCPTs",
            registry=registry,
        )
        self.lanes_paused = Gauge(
            "mailvet_lanes_paused", "MX lanes backing off now", registry=registry
        )
        self.batches_unfinished = Gauge(
            "mailvet_batches_unfinished", "Batches not finished (nor deleted)", registry=registry
        )

    async def refresh(self, engine: AsyncEngine) -> None:
        """Read the database unless it was read less than ``cache_seconds`` ago; a failed
        read keeps the last values (and is logged), the scrape goes on."""
        from mailvet.jobs.status import read_status

        async with self._lock:
            if self._clock() - self._read_at < self.cache_seconds:
                return
            try:
                status = await read_status(engine, self.settings)
            except Exception:
                log.warning("could not read the cluster status for /metrics", exc_info=True)
                return
            finally:
                self._read_at = self._clock()
        jobs = status.jobs
        for name in ("queued", "scheduled", "running", "failed"):
            self.jobs.labels(name).set(getattr(jobs, name) if jobs is not None else 0)
        self.workers_alive.set(status.workers_alive)
        self.workers.set(len(status.workers))
        self.lane_sessions.clear()
        shown = [lane for lane in status.lanes if lane.sessions > 0][:MAX_LANE_SERIES]
        for lane in shown:
            self.lane_sessions.labels(lane.mx).set(lane.sessions)
        other = status.sessions_total - sum(lane.sessions for lane in shown)
        if other > 0:
            self.lane_sessions.labels("other").set(other)
        self.lanes_busy.set(status.lanes_busy)
        self.lanes_paused.set(status.lanes_paused)
        self.batches_unfinished.set(status.batches_unfinished)

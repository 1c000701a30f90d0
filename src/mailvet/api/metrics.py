"""Prometheus metrics, one ``CollectorRegistry`` per app instance.

- ``mailvet_http_requests_total{method,route,status}``: every HTTP request, by the
  route *template* (``/v1/batch/{batch_id}``), never the raw path (``unmatched`` when
  no route matched), and by method from a fixed set (anything else is ``OTHER``), so
  no request can mint a new series;
- ``mailvet_verdicts_total{result,reason,source}``: verdicts given (api / batch / cache);
- ``mailvet_smtp_duration_seconds``: length of the SMTP conversation of a validation;
- ``mailvet_request_duration_seconds{route}``: wall time of each request.

``MetricsMiddleware`` is plain ASGI (no per-request objects beyond a closure) so the
hot path stays cheap.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailvet.api.wire import smtp_seconds
from mailvet.engine.facts import Facts
from mailvet.verdict import Verdict

__all__ = ["CONTENT_TYPE_LATEST", "METHODS", "Metrics", "MetricsMiddleware", "method_label"]

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED = "unmatched"

_SMTP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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

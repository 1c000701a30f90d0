"""Prometheus metrics: per-app registry, requests by route template, verdicts, SMTP time."""

from __future__ import annotations

import contextlib
import uuid

import psycopg
import pytest
from procrastinate import App, PsycopgConnector
from procrastinate.jobs import Status
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mailvet.api.metrics import MAX_LANE_SERIES, ClusterGauges, method_label
from mailvet.jobs.limits import LaneLimits
from mailvet.jobs.limits_pg import PgLimiter, pg_conninfo
from mailvet.storage import open_store
from mailvet.storage.sql import SqlStore

from ..integration import conftest as integration
from .kit import Api, make_settings, running_api

# the throwaway PostgreSQL fixtures of the integration tests
pg_server = integration.pg_server
pg_fresh_url = integration.pg_fresh_url


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_count_requests_verdicts_and_smtp_time(api: Api) -> None:
    for email in ("a@deliverable.test", "a@deliverable.test", "NULL"):
        await api.client.get("/v1/validate", params={"email": email}, headers=api.h())
    await api.client.get("/v1/validate", params={"email": "x@y.test"})
    await api.client.get(f"/v1/batch/{uuid.uuid4()}", headers=api.h())
    await api.client.get("/nowhere")
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)

    def requests(route: str, status: str, method: str = "GET") -> float:
        key = (
            "mailvet_http_requests_total",
            (("method", method), ("route", route), ("status", status)),
        )
        return got.get(key, 0.0)

    assert requests("/v1/validate", "200") == 3
    assert requests("/v1/validate", "401") == 1
    assert requests("/v1/batch/{batch_id}", "404") == 1
    assert requests("unmatched", "404") == 1

    def verdicts(result: str, reason: str, source: str) -> float:
        key = (
            "mailvet_verdicts_total",
            (("reason", reason), ("result", result), ("source", source)),
        )
        return got.get(key, 0.0)

    assert verdicts("deliverable", "accepted_email", "api") == 1
    assert verdicts("deliverable", "accepted_email", "cache") == 1
    assert verdicts("undeliverable", "invalid_format", "api") == 1
    assert got[("mailvet_smtp_duration_seconds_count", ())] == 1
    assert got[("mailvet_smtp_duration_seconds_sum", ())] == 0.0035


async def test_each_app_has_its_own_registry() -> None:
    async with running_api() as first, running_api() as second:
        await first.client.get("/healthz")
        text = (await second.client.get("/metrics")).text
    assert 'route="/healthz"' not in text


async def test_made_up_methods_and_paths_do_not_mint_series(api: Api) -> None:
    for i in range(30):
        await api.client.request(f"FOO{i}", "/v1/validate", headers=api.h())
        await api.client.request(f"BAR{i}", f"/made/up/{i}")
        await api.client.get(f"/made/up/{i}", params={"email": f"{i}@x.test"})
        await api.client.get(f"/v1/batch/{uuid.uuid4()}", headers=api.h())
        await api.client.get(f"/static/docs/nothing-{i}.js")
    got = samples((await api.client.get("/metrics")).text)
    series = [dict(labels) for (name, labels) in got if name == "mailvet_http_requests_total"]
    routes = {labels["route"] for labels in series}
    methods = {labels["method"] for labels in series}
    assert methods <= {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER"}
    assert "OTHER" in methods
    assert routes <= {"/v1/validate", "/v1/batch/{batch_id}", "unmatched", "/static/docs"}
    assert len(series) <= 6  # a fixed handful of series, not one per request


def test_method_label() -> None:
    assert [method_label(m) for m in ("GET", "OPTIONS", "get", "FOO", "", None)] == [
        "GET",
        "OPTIONS",
        "OTHER",
        "OTHER",
        "OTHER",
        "OTHER",
    ]


# ---- cluster gauges (PostgreSQL only) ----


async def _cluster_state(url: str) -> None:
    """Through procrastinate's API: 3 jobs due, 1 for later, 1 running, 1 failed; a live
    and a dead worker."""
    queue = App(connector=PsycopgConnector(conninfo=pg_conninfo(url)))

    @queue.task(name="lane_slice", queue="lanes")
    def lane_slice(n: int) -> None:  # never run
        return None

    async with queue.open_async():  # its schema: installed by store.migrate (revision 0004)
        for n in range(5):
            await lane_slice.defer_async(n=n)
        await lane_slice.configure(schedule_in={"minutes": 30}).defer_async(n=99)
        alive = await queue.job_manager.register_worker()
        dead = await queue.job_manager.register_worker()
        assert await queue.job_manager.fetch_job(queues=None, worker_id=alive) is not None
        failed = await queue.job_manager.fetch_job(queues=None, worker_id=alive)
        assert failed is not None
        await queue.job_manager.finish_job(failed, status=Status.FAILED, delete_job=False)
    async with await psycopg.AsyncConnection.connect(pg_conninfo(url), autocommit=True) as conn:
        await conn.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' "
            "WHERE id = %s",
            (dead,),
        )


LIMITS = LaneLimits(
    max_sessions=5, rcpt_per_session=50, rcpt_per_second=10.0, connects_per_minute=1000
)


@pytest.mark.postgres
async def test_cluster_gauges_on_postgres(pg_fresh_url: str) -> None:
    store = open_store(pg_fresh_url)
    try:
        await store.migrate()
        await _cluster_state(pg_fresh_url)
        settings = make_settings(database_url=pg_fresh_url)
        async with PgLimiter(pg_fresh_url, holder="w", settings=settings) as limiter:
            async with contextlib.AsyncExitStack() as held:
                for _ in range(2):
                    await held.enter_async_context(limiter.session("mx.a.test", LIMITS))
                # more busy lanes than series: the smallest are summed as mx="other"
                for i in range(MAX_LANE_SERIES + 3):
                    await held.enter_async_context(limiter.session(f"mx{i:02}.test", LIMITS))
                limiter.pause("mx.b.test", 600.0)
                await limiter.flush()
                async with running_api(settings, store=store) as api:
                    got = samples((await api.client.get("/metrics")).text)
    finally:
        await store.close()

    def gauge(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert gauge("mailvet_jobs", status="queued") == 3
    assert gauge("mailvet_jobs", status="scheduled") == 1
    assert gauge("mailvet_jobs", status="running") == 1
    assert gauge("mailvet_jobs", status="failed") == 1
    assert gauge("mailvet_workers_alive") == 1
    assert gauge("mailvet_workers") == 2
    assert gauge("mailvet_lanes_paused") == 1
    assert gauge("mailvet_lanes_busy") == MAX_LANE_SERIES + 3 + 2
    assert gauge("mailvet_batches_unfinished") == 0
    lanes = {
        dict(labels)["mx"]: v for (n, labels), v in got.items() if n == "mailvet_lane_sessions"
    }
    assert len(lanes) == MAX_LANE_SERIES + 1  # bounded: the top ones and "other"
    assert lanes["mx.a.test"] == 2  # the busiest lane comes first
    assert sum(lanes.values()) == 2 + MAX_LANE_SERIES + 3  # every session counted once
    assert lanes["other"] == 4


@pytest.mark.postgres
async def test_cluster_gauges_are_cached_between_scrapes(pg_fresh_url: str) -> None:
    store = open_store(pg_fresh_url)
    assert isinstance(store, SqlStore)
    now = [0.0]
    registry = CollectorRegistry()
    gauges = ClusterGauges(registry, make_settings(), cache_seconds=5.0, clock=lambda: now[0])
    settings = make_settings(database_url=pg_fresh_url)
    try:
        await store.migrate()
        async with PgLimiter(pg_fresh_url, holder="w", settings=settings) as limiter:
            await gauges.refresh(store.engine)
            assert (
                samples(generate_latest(registry).decode()).get(
                    ("mailvet_lane_sessions", (("mx", "mx.a.test"),))
                )
                is None
            )
            async with limiter.session("mx.a.test", LIMITS):
                now[0] += 4.0  # within the cache: not read again
                await gauges.refresh(store.engine)
                text = generate_latest(registry).decode()
                assert ("mailvet_lane_sessions", (("mx", "mx.a.test"),)) not in samples(text)
                now[0] += 2.0  # past it: read again
                await gauges.refresh(store.engine)
                text = generate_latest(registry).decode()
                assert samples(text)[("mailvet_lane_sessions", (("mx", "mx.a.test"),))] == 1
                assert samples(text)[("mailvet_jobs", (("status", "queued"),))] == 0
    finally:
        await store.close()


async def test_no_cluster_gauges_without_postgres(api: Api) -> None:
    text = (await api.client.get("/metrics")).text
    assert "mailvet_jobs" not in text
    assert "mailvet_lane_sessions" not in text

"""The procrastinate driver of the batch engine (jobs/cluster.py) on real PostgreSQL.

Workers run in the test process (``ClusterWorker``) on the simulated internet; what
the mail servers were asked is counted by the simulated servers themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import httpx
import psycopg
import pytest

from mailvet.api.app import create_app
from mailvet.engine.syntax import SyntaxPolicy
from mailvet.jobs.cluster import (
    PLAN_TASK,
    PROBE_TASK,
    SWEEP_EVERY,
    BatchQueue,
    ClusterWorker,
    libpq_url,
)
from mailvet.jobs.cluster_store import SCAN_WINDOW, ClusterStore, Handover, Probe
from mailvet.jobs.limits import Backoff, limits_for
from mailvet.jobs.limits_pg import PgLimiter
from mailvet.jobs.plan import dedupe_keys
from mailvet.settings import Settings
from mailvet.storage import open_store
from mailvet.storage.base import BatchRecord, Plan, Store
from mailvet.testing import smtp as sim
from mailvet.testing.internet import STANDARD_SITES, STANDARD_ZONE, SimInternet

from ..api.test_webhook import receiver
from .test_scheduler import MIXED, fast_options, rcpts_by_address, site_ip

pytestmark = pytest.mark.postgres

TIMEOUT = 120.0


def cluster_settings(net: SimInternet, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "batch_connect_timeout": 1.0,
        "batch_command_timeout": 1.0,
        "batch_session_timeout": 30.0,
        "worker_heartbeat_interval": 0.5,
        "worker_stalled_timeout": 2.0,
    }
    values.update(overrides)
    return net.settings(**values)


@asynccontextmanager
async def workers(settings: Settings, count: int = 1, **options: Any) -> AsyncIterator[list[str]]:
    """``count`` workers taking jobs in this process; yields their ids once all take jobs."""
    options.setdefault("scheduler_options", fast_options())
    running = [ClusterWorker(settings, **options) for _ in range(count)]
    ready: list[str] = []
    tasks = [asyncio.create_task(w.run(ready.append)) for w in running]
    try:
        async with asyncio.timeout(30):
            while len(ready) < count:
                for task in tasks:
                    if task.done():
                        task.result()  # a worker that died at start: its error
                await asyncio.sleep(0.05)
        yield ready
    finally:
        for w in running:
            w.stop()
        await asyncio.gather(*tasks)


@asynccontextmanager
async def lane_held_elsewhere(
    url: str, settings: Settings, mx_host: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Holds a session slot of ``mx_host``'s lane, as another worker would; yields the
    call that frees it (freed on the way out in any case)."""
    async with (
        PgLimiter(url, holder="test", settings=settings) as other,
        contextlib.AsyncExitStack() as held,
    ):
        await held.enter_async_context(other.session(mx_host, limits_for(None, settings)))
        yield held.aclose


async def submit(store: Store, url: str, emails: list[str]) -> BatchRecord:
    key, _ = await store.create_key("cluster", Plan.PAID)
    keys = dedupe_keys(emails, SyntaxPolicy.from_settings(Settings(database_url=url)))
    record = await store.create_batch(key.id, None, emails, keys=keys)
    queue = BatchQueue(url)
    await queue.open()
    try:
        await queue.batch_changed(record.id)
    finally:
        await queue.close()
    return record


async def finished(store: Store, record: BatchRecord) -> BatchRecord:
    async with asyncio.timeout(TIMEOUT):
        while True:
            got = await store.get_batch(record.user_id, record.id)
            assert got is not None
            if got.finished_at is not None:
                return got
            await asyncio.sleep(0.1)


def sql(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


async def verdicts(store: Store, record: BatchRecord) -> dict[str, dict[str, Any]]:
    items = [i async for i in store.iter_items(record.id)]
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        assert item.verdict is not None, item.email
        out.setdefault(item.email, item.verdict)
    return out


# --- schema and CLI --------------------------------------------------------------------


def _mailvet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailvet", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_upgrade_installs_procrastinates_schema(pg_fresh_url: str) -> None:
    done = _mailvet("db", "upgrade", env={"MAILVET_DATABASE_URL": pg_fresh_url})
    assert done.returncode == 0, done.stderr
    tables = {
        name
        for (name,) in sql(
            pg_fresh_url,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
        )
    }
    assert {"procrastinate_jobs", "procrastinate_workers", "batch_items"} <= tables
    (function,) = sql(
        pg_fresh_url,
        "SELECT count(*) FROM pg_proc WHERE proname = %s",
        "procrastinate_fetch_job_v2",
    )
    assert function == (1,)
    again = _mailvet("db", "upgrade", env={"MAILVET_DATABASE_URL": pg_fresh_url})
    assert again.returncode == 0, again.stderr  # idempotent


# --- batches through the jobs ---------------------------------------------------------


async def test_a_mixed_batch_gets_the_right_verdicts_each_address_once(pg_fresh_url: str) -> None:
    emails = [*MIXED, "alice@deliverable.test", "anyone@catchall.test"]  # repeats
    async with SimInternet(STANDARD_SITES, STANDARD_ZONE) as net:
        settings = cluster_settings(net, pg_fresh_url)
        store = open_store(pg_fresh_url)
        await store.migrate()
        try:
            record = await submit(store, pg_fresh_url, emails)
            async with workers(settings, 2, concurrency=4):
                done = await finished(store, record)
            got = await verdicts(store, record)
            items = [i async for i in store.iter_items(record.id)]
            usage = await store.usage(since=date(2000, 1, 1), key_id=record.user_id)
        finally:
            await store.close()
        asked = rcpts_by_address(net.smtp)
    assert done.done == done.size == len(emails)
    # every decided position counts once as the owner's usage (the dashboard's chart)
    by_result = Counter(got[e]["result"] for e in emails)
    assert {u.result: u.count for u in usage} == dict(by_result)
    assert [i.email for i in items] == emails  # every entry once, in order
    assert {e: (v["result"], v["reason"]) for e, v in got.items() if e in MIXED} == dict(MIXED)
    for email in ("alice@deliverable.test", "nobody@deliverable.test", "anyone@catchall.test"):
        assert asked[email] == 1, email  # the repeats were asked once, in one job
    # no job is left behind and nothing holds an item any more
    assert sql(pg_fresh_url, "SELECT count(*) FROM batch_items WHERE job_id IS NOT NULL") == [(0,)]


async def test_a_greylisted_address_is_retried_by_a_scheduled_job(pg_fresh_url: str) -> None:
    sites = {
        "grey.test": sim.greylist(delay=2.0, then=sim.mailboxes("alice", style="postfix")),
        "deliverable.test": STANDARD_SITES["deliverable.test"],
    }
    emails = ["alice@grey.test", "ghost@grey.test", "alice@deliverable.test"]
    async with SimInternet(sites, {}) as net:
        settings = cluster_settings(
            net, pg_fresh_url, greylist_schedule=[2.0, 2.0, 2.0], greylist_max_wait=60.0
        )
        store = open_store(pg_fresh_url)
        await store.migrate()
        try:
            record = await submit(store, pg_fresh_url, emails)
            scheduled: set[int] = set()
            async with workers(settings, 1, concurrency=2):
                waiting = asyncio.create_task(finished(store, record))
                while not waiting.done():  # a probe job deferred to later: the retry
                    rows = sql(
                        pg_fresh_url,
                        "SELECT id FROM procrastinate_jobs WHERE task_name = %s "
                        "AND status = 'todo' AND scheduled_at > now()",
                        PROBE_TASK,
                    )
                    scheduled.update(r[0] for r in rows)
                    await asyncio.sleep(0.05)
                await waiting
            got = await verdicts(store, record)
            attempts = sql(
                pg_fresh_url,
                "SELECT email, attempts FROM batch_items WHERE batch_id = %s ORDER BY position",
                record.id,
            )
        finally:
            await store.close()
        asked = rcpts_by_address(net.smtp)
    assert scheduled  # the retry waited in the queue, not in a worker
    assert got["alice@grey.test"]["result"] == "deliverable"
    assert got["ghost@grey.test"]["result"] == "undeliverable"
    assert got["alice@deliverable.test"]["result"] == "deliverable"
    assert asked["alice@grey.test"] == 2  # greylisted once, then accepted
    assert dict(attempts) == {
        "alice@grey.test": 1,
        "ghost@grey.test": 1,
        "alice@deliverable.test": 0,
    }


async def test_a_job_run_twice_saves_nothing_twice(pg_fresh_url: str) -> None:
    """A job taken from a worker taken for dead (its worker row pruned: the job's
    ``worker_id`` is NULL, as procrastinate leaves it) is put back in the queue by the
    sweep and run again by another worker, while the first one still works on it. Both
    finish; each address is in the results once, counted once."""
    slow = [f"u{i}" for i in range(6)]
    sites = {
        "slow.test": sim.mailboxes(*slow, style="postfix", latency_ms=1000),
        # keeps the batch open after the slow job's first commit: the second one saves
        "grey.test": sim.greylist(delay=25.0, then=sim.mailboxes("alice", style="postfix")),
    }
    emails = [f"u{i}@slow.test" for i in range(8)]  # u6, u7: unknown users
    async with SimInternet(sites, {}) as net:
        settings = cluster_settings(
            net, pg_fresh_url, batch_command_timeout=10.0, greylist_schedule=[25.0]
        )
        store = open_store(pg_fresh_url)
        await store.migrate()
        try:
            record = await submit(store, pg_fresh_url, [*emails, "alice@grey.test"])
            async with workers(settings, 1, concurrency=1):
                async with asyncio.timeout(TIMEOUT):
                    while not (
                        slow_job := sql(
                            pg_fresh_url,
                            "SELECT id FROM procrastinate_jobs WHERE task_name = %s "
                            "AND status = 'doing' AND args ->> 'host' = 'mx.slow.test'",
                            PROBE_TASK,
                        )
                    ):
                        await asyncio.sleep(0.05)
                sql(
                    pg_fresh_url,
                    "UPDATE procrastinate_jobs SET worker_id = NULL WHERE id = %s",
                    slow_job[0][0],
                )
                async with workers(settings, 1, concurrency=2):
                    async with asyncio.timeout(TIMEOUT):  # the second worker took it too
                        while max(rcpts_by_address(net.smtp)[e] for e in emails) < 2:
                            await asyncio.sleep(0.05)
                    await finished(store, record)
            done = await store.get_batch(record.user_id, record.id)  # both runs over
            got = await verdicts(store, record)
            items = [i async for i in store.iter_items(record.id)]
        finally:
            await store.close()
        asked = rcpts_by_address(net.smtp)
    assert done is not None
    assert max(asked[e] for e in emails) == 2  # the job ran twice ...
    assert done.done == done.size == len(emails) + 1  # ... and each result counts once
    assert [i.email for i in items] == [*emails, "alice@grey.test"]
    assert got["alice@grey.test"]["result"] == "deliverable"
    for i, email in enumerate(emails):
        assert got[email]["result"] == ("deliverable" if i < 6 else "undeliverable"), email


async def test_a_lane_backing_off_goes_to_a_later_job_not_a_sleeping_worker(
    pg_fresh_url: str,
) -> None:
    """The MX refuses the session (421 at the banner): the lane backs off for 30-60 s.
    The job does not sleep through the back-off in its worker: it hands the addresses
    to a probe job scheduled at the back-off's end, which carries the lane's failures
    (so a lane that keeps failing still gives up), and ends."""
    sites = {"down.test": sim.banner_421()}
    emails = ["a@down.test", "b@down.test"]
    async with SimInternet(sites, {}) as net:
        settings = cluster_settings(net, pg_fresh_url)
        store = open_store(pg_fresh_url)
        await store.migrate()
        options = {"backoff": Backoff(base=60.0, cap=60.0), "max_lane_failures": 5}
        try:
            record = await submit(store, pg_fresh_url, emails)
            async with workers(settings, 1, concurrency=2, scheduler_options=options):
                async with asyncio.timeout(30):  # well under the back-off
                    while not (
                        later := sql(
                            pg_fresh_url,
                            "SELECT j.id, j.args, j.scheduled_at - now() FROM procrastinate_jobs j "
                            "WHERE j.task_name = %s AND j.status = 'todo' "
                            "AND j.args ? 'failures' AND NOT EXISTS (SELECT 1 FROM "
                            "procrastinate_jobs d WHERE d.status = 'doing' AND d.task_name = %s)",
                            PROBE_TASK,
                            PROBE_TASK,
                        )
                    ):
                        await asyncio.sleep(0.1)
                job_id, args, wait = later[0]
                held = sql(
                    pg_fresh_url,
                    "SELECT email FROM batch_items WHERE batch_id = %s AND job_id = %s "
                    "AND verdict IS NULL ORDER BY position",
                    record.id,
                    job_id,
                )
        finally:
            await store.close()
    assert [e for (e,) in held] == emails  # handed over, nothing lost
    assert args["failures"] == 1 and args["host"] == "mx.down.test"
    assert "email" not in json.dumps(args) and "@" not in json.dumps(args)
    assert wait.total_seconds() > 20.0  # scheduled at the back-off's end


async def test_a_re_plan_reads_a_bounded_window_of_a_batch_per_job(pg_fresh_url: str) -> None:
    """Items mostly held by live jobs, one not: each plan job reads at most
    ``SCAN_WINDOW`` chunks of positions (never the whole batch in one query) and the
    chain of them still finds the free item, then ends."""
    store = open_store(pg_fresh_url)
    await store.migrate()
    try:
        emails = [f"u{i}@a.test" for i in range(50)]
        key, _ = await store.create_key("window", Plan.PAID)
        record = await store.create_batch(key.id, None, emails, keys=emails)
        (live,) = sql(
            pg_fresh_url,
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
            "VALUES ('mailvet_smtp', %s, '{}', 'todo') RETURNING id",
            PROBE_TASK,
        )[0]
        sql(
            pg_fresh_url,
            "UPDATE batch_items SET job_id = %s WHERE batch_id = %s AND position < 49",
            live,
            record.id,
        )
        cluster = ClusterStore(
            getattr(store, "engine"),  # noqa: B009 - the SqlStore's engine
            lambda connection, jobs: asyncio.sleep(0, []),
            plan_task=PLAN_TASK,
            webhook_task="mailvet.webhook",
        )
        reads: list[tuple[int, int, list[str]]] = []
        after, more = -1, True
        while more:
            items, last, more = await cluster.candidates(record.id, after, 2)
            reads.append((after, last, [i.email for i in items]))
            after = last
    finally:
        await store.close()
    assert all(last - after <= 2 * SCAN_WINDOW for after, last, _ in reads)
    assert [e for _, _, found in reads for e in found] == ["u49@a.test"]
    assert reads[-1][1] >= 49 and len(reads) == 3  # positions 0-19, 20-39, 40-59


async def test_a_plan_job_run_twice_takes_nothing_a_live_job_holds(pg_fresh_url: str) -> None:
    """A plan job's second run (its worker taken for dead while alive) read the same
    items before the first run handed them to a probe job: its hand-over takes none of
    them back from that live job (which may be asking already), and takes the rest."""
    store = open_store(pg_fresh_url)
    await store.migrate()
    try:
        emails = ["a@a.test", "b@a.test"]
        key, _ = await store.create_key("twice", Plan.PAID)
        record = await store.create_batch(key.id, None, emails, keys=emails)

        async def defer(connection: Any, jobs: Any) -> list[int]:
            ids = []
            for task, args, _at in jobs:
                cursor = await connection.execute(
                    "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                    "VALUES ('mailvet_smtp', %s, %s) RETURNING id",
                    (task, json.dumps(args)),
                )
                ids.append((await cursor.fetchone())[0])
            return ids

        cluster = ClusterStore(
            getattr(store, "engine"),  # noqa: B009 - the SqlStore's engine
            defer,
            plan_task=PLAN_TASK,
            webhook_task="mailvet.webhook",
        )
        args = {"batch_id": record.id, "host": "mx.a.test"}
        first = Probe(handovers=[Handover(PROBE_TASK, args, ["a@a.test"])])
        await cluster.commit(record.id, None, first)
        (held_by_first,) = sql(
            pg_fresh_url,
            "SELECT job_id FROM batch_items WHERE position = 0 AND batch_id = %s",
            record.id,
        )[0]
        second = Probe(handovers=[Handover(PROBE_TASK, args, ["a@a.test", "b@a.test"])])
        await cluster.commit(record.id, None, second)
        holders = sql(
            pg_fresh_url,
            "SELECT job_id FROM batch_items WHERE batch_id = %s ORDER BY position",
            record.id,
        )
    finally:
        await store.close()
    assert held_by_first is not None
    assert holders[0][0] == held_by_first  # not taken back
    assert holders[1][0] not in (None, held_by_first)  # the free one is taken


# --- the API side ---------------------------------------------------------------------


async def test_serve_without_an_inprocess_worker_only_enqueues(pg_fresh_url: str) -> None:
    async with SimInternet(STANDARD_SITES, STANDARD_ZONE) as net:
        settings = cluster_settings(net, pg_fresh_url, rate_limit_per_minute=100_000)
        assert not settings.runs_batches_inprocess()  # PostgreSQL's default
        store = open_store(pg_fresh_url)
        await store.migrate()
        try:
            key, secret = await store.create_key("api", Plan.PAID)
            app = create_app(settings, store=store)
            async with app.router.lifespan_context(app):
                svc = app.state.service
                assert svc.runner is None and svc.webhooks is None and svc.queue is not None
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://mailvet.test"
                ) as client:
                    emails = ["alice@deliverable.test", "x@nullmx.test"]
                    r = await client.post(
                        "/v1/batch", json={"emails": emails}, headers={"x-mails-api-key": secret}
                    )
                    assert r.status_code == 200, r.text
                    batch_id = r.json()["id"]
                    jobs = sql(
                        pg_fresh_url,
                        "SELECT status, args ->> 'batch_id' FROM procrastinate_jobs "
                        "WHERE task_name = %s",
                        PLAN_TASK,
                    )
                    assert jobs == [("todo", batch_id)]  # enqueued, and nobody took it
                    await asyncio.sleep(1.0)
                    record = await store.get_batch(key.id, batch_id)
                    assert record is not None and record.done == 0 and record.finished_at is None
                    async with workers(settings, 1):  # a worker takes it from there
                        await finished(store, record)
                    page = (
                        await client.get(
                            f"/v1/batch/{batch_id}", headers={"x-mails-api-key": secret}
                        )
                    ).json()
        finally:
            await store.close()
    results = {e["email"]: e["result"] for e in page["emails"]}
    assert results == {"alice@deliverable.test": "deliverable", "x@nullmx.test": "undeliverable"}


async def _stderr_line(process: asyncio.subprocess.Process, prefix: str) -> str:
    assert process.stderr is not None
    async with asyncio.timeout(60):
        while True:
            line = (await process.stderr.readline()).decode()
            if not line:
                raise AssertionError(f"the worker exited before printing {prefix!r}")
            if line.startswith(prefix):
                return line


async def test_mailvet_worker_takes_jobs_and_stops_on_sigterm(pg_fresh_url: str) -> None:
    async with SimInternet(STANDARD_SITES, STANDARD_ZONE) as net:
        env = {
            **os.environ,
            **net.env(),
            "MAILVET_DATABASE_URL": pg_fresh_url,
            "MAILVET_BATCH_COMMAND_TIMEOUT": "2",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailvet",
            "worker",
            "--concurrency",
            "3",
            "--queues",
            "mailvet_plan,mailvet_smtp",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            ready = await _stderr_line(process, "mailvet worker ready: ")
            worker_id = ready.split(": ", 1)[1].strip()
            assert worker_id.count(":") == 2 and str(process.pid) in worker_id  # host:pid:rand
            store = open_store(pg_fresh_url)
            try:
                record = await submit(
                    store, pg_fresh_url, ["alice@deliverable.test", "x@nowhere.test"]
                )
                await finished(store, record)
                got = await verdicts(store, record)
            finally:
                await store.close()
            process.terminate()
            async with asyncio.timeout(60):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0
    assert got["alice@deliverable.test"]["result"] == "deliverable"
    assert got["x@nowhere.test"]["reason"] == "invalid_domain"


async def test_a_lane_at_its_cap_is_deferred_and_its_cap_holds(
    pg_fresh_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One session at a time to the MX, four sessions' worth of addresses, six job slots.
    While the lane's one slot is held (here by the test, as another worker would), the
    slices go back to the queue (a new job a moment later) instead of waiting in a
    worker; then the server never sees two sessions at once, one session a slice."""
    known = [f"u{i}" for i in range(8)]
    sites = {"capped.test": sim.mailboxes(*known, style="postfix", latency_ms=150)}
    emails = [f"u{i}@capped.test" for i in range(8)]
    caplog.set_level(logging.DEBUG, logger="mailvet.jobs.cluster")
    async with SimInternet(sites, {}) as net:
        settings = cluster_settings(
            net, pg_fresh_url, mx_max_sessions=1, mx_rcpt_per_session=3, batch_command_timeout=5.0
        )
        store = open_store(pg_fresh_url)
        await store.migrate()
        try:
            async with lane_held_elsewhere(pg_fresh_url, settings, "mx.capped.test") as release:
                record = await submit(store, pg_fresh_url, emails)
                async with workers(settings, 2, concurrency=3):
                    async with asyncio.timeout(TIMEOUT):
                        while not any("at its cap" in r.getMessage() for r in caplog.records):
                            await asyncio.sleep(0.05)
                    assert net.smtp.sessions == []  # nobody asked while the slot was held
                    await release()  # the slot is free again
                    await finished(store, record)
            got = await verdicts(store, record)
        finally:
            await store.close()
        ip = site_ip(sites, "capped.test")
        peak = net.smtp.max_concurrent(ip)
        sessions = len(net.smtp.connects(ip))
        asked = rcpts_by_address(net.smtp)
    assert all(got[e]["result"] == "deliverable" for e in emails)
    assert peak == 1
    # 8 addresses + 1 catch-all check a slice, 3 RCPTs a session: 4 slices, 4 sessions
    assert sessions == 4
    assert all(asked[e] == 1 for e in emails)


async def test_a_slice_waiting_on_a_full_lane_waits_longer_each_time(pg_fresh_url: str) -> None:
    """While another worker holds the lane's only slot, the slice is deferred 1, 2, 4 ...
    seconds (up to LANE_WAIT_MAX), not every second: waiting slices do not cycle through
    the workers; once the slot is free the batch still completes."""
    sites = {"full.test": sim.mailboxes("u0", "u1", style="postfix")}
    emails = ["u0@full.test", "u1@full.test"]
    async with SimInternet(sites, {}) as net:
        settings = cluster_settings(net, pg_fresh_url, mx_max_sessions=1)
        store = open_store(pg_fresh_url)
        await store.migrate()
        try:
            async with lane_held_elsewhere(pg_fresh_url, settings, "mx.full.test") as release:
                record = await submit(store, pg_fresh_url, emails)
                async with workers(settings, 1, concurrency=2):
                    async with asyncio.timeout(60):
                        while not (
                            later := sql(
                                pg_fresh_url,
                                "SELECT extract(epoch FROM scheduled_at - now()) "
                                "FROM procrastinate_jobs WHERE task_name = %s "
                                "AND status = 'todo' AND (args ->> 'waited')::int >= 3",
                                PROBE_TASK,
                            )
                        ):
                            await asyncio.sleep(0.05)
                    assert net.smtp.sessions == []
                    await release()
                    await finished(store, record)
            got = await verdicts(store, record)
        finally:
            await store.close()
    # the third deferral in a row waits at least 4 s (seen within moments of it)
    assert float(later[0][0]) > 2.0
    assert all(got[e]["result"] == "deliverable" for e in emails)


async def test_the_webhook_of_a_finished_batch_is_sent_and_retried(pg_fresh_url: str) -> None:
    async with SimInternet(STANDARD_SITES, STANDARD_ZONE) as net, receiver([500]) as hook:
        settings = cluster_settings(
            net, pg_fresh_url, allow_private_webhooks=True, webhook_timeout=5.0
        )
        store = open_store(pg_fresh_url)
        await store.migrate()
        try:
            key, _ = await store.create_key("hooks", Plan.PAID)
            record = await store.create_batch(
                key.id, None, ["alice@deliverable.test"], callback_url=hook.url
            )
            queue = BatchQueue(pg_fresh_url)
            await queue.open()
            await queue.batch_changed(record.id)
            await queue.close()
            # the retry is due 1 s after the 500 (FIRST_DELAY is 10 s): what is under test
            # is that the sweep sends it, not how long the back-off is
            async with workers(settings, 1, webhook_options={"first_delay": 1.0}):
                await finished(store, record)
                async with asyncio.timeout(TIMEOUT):  # 500 first; the sweep sends it again
                    while len(hook.received) < 2:
                        await asyncio.sleep(0.1)
                await asyncio.sleep(SWEEP_EVERY + 1)  # and not a third time
            got = await store.get_batch(key.id, record.id)
        finally:
            await store.close()
    assert len(hook.received) == 2
    body, headers = hook.received[1]
    assert json.loads(body)["id"] == record.id
    assert headers["x-mailvet-signature"].startswith("sha256=")
    assert got is not None and got.webhook_delivered_at is not None and got.webhook_attempts == 2


async def test_items_of_a_job_that_failed_for_good_are_planned_again(pg_fresh_url: str) -> None:
    emails = ["alice@deliverable.test", "bob@deliverable.test", "nobody@deliverable.test"]
    async with SimInternet(STANDARD_SITES, STANDARD_ZONE) as net:
        settings = cluster_settings(net, pg_fresh_url)
        store = open_store(pg_fresh_url)
        await store.migrate()
        try:
            record = await submit(store, pg_fresh_url, emails)
            query = "SELECT id FROM procrastinate_jobs WHERE task_name = %s AND status = 'todo'"
            async with workers(settings, 1, queues=["mailvet_plan"]):  # plans, asks nothing
                async with asyncio.timeout(TIMEOUT):
                    while not sql(pg_fresh_url, query, PROBE_TASK):
                        await asyncio.sleep(0.05)
            # the probe job fails for good (say its retries ran out): nobody holds the items
            sql(
                pg_fresh_url,
                "UPDATE procrastinate_jobs SET status = 'failed' WHERE task_name = %s",
                PROBE_TASK,
            )
            assert net.smtp.sessions == []
            async with workers(settings, 1):  # the sweep plans them again
                done = await finished(store, record)
            got = await verdicts(store, record)
        finally:
            await store.close()
        asked = rcpts_by_address(net.smtp)
    assert done.done == done.size == 3
    assert [got[e]["result"] for e in emails] == ["deliverable", "deliverable", "undeliverable"]
    assert all(asked[e] == 1 for e in emails)

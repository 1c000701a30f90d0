"""PgLimiter (jobs/limits_pg.py): per-MX caps held in PostgreSQL across processes.

Several limiters (each its own connection pool, some in other OS processes) hammer
one lane; the sessions and RCPTs are counted by the test itself from the timestamps the
holders record inside their blocks, never from the limiter's own tables.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mailvet.engine.pipeline import Engine
from mailvet.jobs.inprocess import BatchRunner
from mailvet.jobs.limits import Backoff, LaneBusy, LaneLimits, Limiter, rcpt_burst
from mailvet.jobs.limits_pg import PgLimiter, pg_conninfo
from mailvet.settings import Settings
from mailvet.storage import open_store
from mailvet.storage.base import Plan
from mailvet.storage.memory import MemoryStore
from mailvet.testing import smtp as sim
from mailvet.testing.internet import SimInternet

from .limits_child import hammer

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
LANE = "mx.hammer.test"


@pytest.fixture
async def db(pg_fresh_url: str) -> str:
    store = open_store(pg_fresh_url)
    await store.migrate()
    await store.close()
    return pg_fresh_url


@pytest.fixture
async def limiters(db: str) -> AsyncIterator[list[PgLimiter]]:
    """Three limiters on the same database, each with its own pool of connections."""
    settings = Settings(mx_lease_seconds=2.0)
    made = [PgLimiter(db, holder=f"test-{i}", settings=settings) for i in range(3)]
    for limiter in made:
        await limiter.start()
    yield made
    for limiter in made:
        await limiter.close()


def limits(**changes: Any) -> LaneLimits:
    base: dict[str, Any] = {
        "max_sessions": 2,
        "rcpt_per_session": 50,
        "rcpt_per_second": 20.0,
        "connects_per_minute": 10_000,
    }
    base.update(changes)
    return LaneLimits(**base)


def child(spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.limits_child", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def most_at_once(intervals: Sequence[Sequence[float]]) -> int:
    """The most intervals [enter, exit) that overlap at any instant."""
    events = sorted([(e, 1) for e, _ in intervals] + [(x, -1) for _, x in intervals])
    # at equal times, exits (-1) sort before entries (+1): touching is not overlapping
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


async def db_row(url: str, query: str, *params: Any) -> tuple[Any, ...]:
    async with await psycopg.AsyncConnection.connect(pg_conninfo(url)) as conn:
        row = await (await conn.execute(query, params)).fetchone()
    assert row is not None
    return tuple(row)


async def test_caps_hold_across_processes_and_connections(
    db: str, limiters: list[PgLimiter]
) -> None:
    lane_limits = limits(max_sessions=2, rcpt_per_second=20.0)
    seconds = 3.0
    go = time.time() + 4.0  # the children need a moment to import and connect
    spec = {
        "mode": "hammer",
        "url": db,
        "lane": LANE,
        "limits": {
            "max_sessions": 2,
            "rcpt_per_session": 50,
            "rcpt_per_second": 20.0,
            "connects_per_minute": 10_000,
        },
        "go": go,
        "seconds": seconds,
        "tasks": 2,
    }
    procs = [child(spec) for _ in range(2)]
    try:
        here = await asyncio.gather(
            *(hammer(limiter, LANE, lane_limits, go, seconds, 2) for limiter in limiters)
        )
        outs = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert all(proc.returncode == 0 for proc in procs)
    everyone = [*here, *outs]
    sessions = [s for out in everyone for s in out["sessions"]]
    rcpts = [r for out in everyone for r in out["rcpts"]]
    assert all(out["sessions"] for out in everyone)  # every holder got in, in every process
    # never more than max_sessions at once, and the demand did reach the cap
    assert most_at_once(sessions) == 2
    # every grant lies in [go, the last one recorded]: at most burst + rate * that span
    granted = sum(count for _, count in rcpts)
    span = max(at for at, _ in rcpts) - go
    assert granted <= rcpt_burst(lane_limits) + 20.0 * span
    assert granted >= 20.0 * seconds / 2  # the lane did run at (about) its rate, not stall


async def test_connects_per_minute_hold_across_limiters(limiters: list[PgLimiter]) -> None:
    lane_limits = limits(max_sessions=3, connects_per_minute=7)
    started: list[float] = []

    async def run(limiter: PgLimiter) -> None:
        while True:
            async with limiter.session(LANE, lane_limits):
                started.append(time.monotonic())
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(run(limiter)) for limiter in limiters for _ in range(2)]
    await asyncio.sleep(2.5)  # far under the 60 s window: 7 starts, then everyone waits
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(started) == 7
    wait = await limiters[0].try_session(LANE, lane_limits)
    assert 50.0 < wait <= 60.0  # until the first of the 7 leaves the window


async def test_try_session_answers_now_or_a_wait(limiters: list[PgLimiter]) -> None:
    a, b, _ = limiters
    one = limits(max_sessions=1)
    assert await b.try_session(LANE, one) == 0.0
    assert await b.try_session(LANE, one) == 0.0  # a probe takes nothing
    async with a.session(LANE, one):
        assert await b.try_session(LANE, one) > 0.0  # the only slot is held elsewhere
        assert await b.try_session(LANE, limits(max_sessions=2)) == 0.0
    assert await b.try_session(LANE, one) == 0.0  # released at once, not at expiry
    a.pause(LANE, 30.0)
    await a.flush()
    assert 25.0 < await b.try_session(LANE, one) <= 30.0


async def test_a_limiter_that_does_not_wait_takes_a_lease_or_says_how_long(db: str) -> None:
    """A cluster worker's limiter (``wait=False``): ``session()`` takes a lease now or
    raises LaneBusy with the wait (a full lane, a pause another worker stored), in the
    transaction that checks the caps: no race between a probe and the take."""
    settings = Settings(mx_lease_seconds=30.0)
    one = limits(max_sessions=1)
    async with (
        PgLimiter(db, holder="other", settings=settings) as other,
        PgLimiter(db, holder="worker", settings=settings, wait=False) as worker,
    ):
        async with other.session(LANE, one):
            with pytest.raises(LaneBusy) as full:  # at once, not at the lease's expiry
                await asyncio.wait_for(worker.session(LANE, one).__aenter__(), 10.0)
            assert 0.0 < full.value.seconds <= 5.0 and full.value.lane == LANE
            (leases,) = await db_row(db, "SELECT count(*) FROM mx_leases WHERE lane = %s", LANE)
            assert leases == 1  # nothing taken by the refusal
        async with worker.session(LANE, one):  # the slot is free: taken
            (holder,) = await db_row(db, "SELECT holder FROM mx_leases WHERE lane = %s", LANE)
            assert holder == "worker"
        other.pause(LANE, 60.0)
        await other.flush()
        with pytest.raises(LaneBusy) as paused:
            await asyncio.wait_for(worker.session(LANE, one).__aenter__(), 10.0)
        assert 50.0 < paused.value.seconds <= 60.0
        with pytest.raises(LaneBusy):  # now known locally: refused without a query
            await asyncio.wait_for(worker.session(LANE, one).__aenter__(), 10.0)


async def test_a_pause_is_seen_by_every_limiter(db: str, limiters: list[PgLimiter]) -> None:
    a, b, c = limiters
    lane_limits = limits()
    async with c.session(LANE, lane_limits):  # creates the lane, fills its bucket
        pass
    a.pause(LANE, 60.0)
    assert a.paused_until(LANE) > time.monotonic() + 55.0  # at once, locally
    await a.flush()
    with pytest.raises(TimeoutError):  # b's RCPTs wait for a's pause
        await asyncio.wait_for(b.rcpt(LANE, lane_limits), 0.5)
    assert b.paused_until(LANE) > time.monotonic() + 50.0  # and b now knows it
    with pytest.raises(TimeoutError):  # so do c's sessions
        await asyncio.wait_for(c.session(LANE, lane_limits).__aenter__(), 0.5)

    # a short pause: the next session starts (database clock) after it ends, not before
    other = "mx.short.test"
    a.pause(other, 1.0)
    await a.flush()
    (paused_until,) = await db_row(db, "SELECT paused_until FROM mx_lanes WHERE lane = %s", other)
    async with b.session(other, lane_limits):
        (started,) = await db_row(
            db, "SELECT started_at FROM mx_leases WHERE lane = %s AND holder = %s", other, b.holder
        )
    assert started >= paused_until


async def test_a_killed_holder_frees_its_slot_at_lease_expiry(
    db: str, limiters: list[PgLimiter]
) -> None:
    one = limits(max_sessions=1)
    spec = {
        "mode": "hold",
        "url": db,
        "lane": LANE,
        "lease_seconds": 2.0,
        "limits": {
            "max_sessions": 1,
            "rcpt_per_session": 50,
            "rcpt_per_second": 20.0,
            "connects_per_minute": 10_000,
        },
    }
    proc = child(spec)
    try:
        assert proc.stdout is not None
        assert await asyncio.to_thread(proc.stdout.readline) == "held\n"
        await asyncio.sleep(2.5)  # past one lease life: it lives on through its renewals
        waiting = limiters[0]
        assert await waiting.try_session(LANE, one) > 0.0
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    dead_expiry, now = await db_row(
        db, "SELECT expires_at, clock_timestamp() FROM mx_leases WHERE lane = %s", LANE
    )
    assert isinstance(dead_expiry, datetime)
    assert dead_expiry > now  # still held by a dead process, for now
    if await waiting.try_session(LANE, one) == 0.0:  # only possible once it expired
        (after,) = await db_row(db, "SELECT clock_timestamp()")
        assert after >= dead_expiry
    async with asyncio.timeout(30):
        async with waiting.session(LANE, one):
            (started,) = await db_row(
                db, "SELECT started_at FROM mx_leases WHERE holder = %s", waiting.holder
            )
    assert started >= dead_expiry  # not before the dead holder's lease expired
    assert (started - dead_expiry).total_seconds() < 10.0  # and soon after


async def test_leases_are_renewed_while_held_and_gone_after(
    db: str, limiters: list[PgLimiter]
) -> None:
    a = limiters[0]
    async with a.session(LANE, limits()):
        (first,) = await db_row(db, "SELECT expires_at FROM mx_leases WHERE holder = %s", a.holder)
        await asyncio.sleep(1.5)  # past a third of the 2 s lease: renewed at least once
        (later,) = await db_row(db, "SELECT expires_at FROM mx_leases WHERE holder = %s", a.holder)
        assert later > first
    (count,) = await db_row(db, "SELECT count(*) FROM mx_leases")
    assert count == 0


async def test_two_batch_runners_share_one_mx_cap_through_postgres(db: str) -> None:
    """Two runners (two workers, each its own store and PgLimiter) on one MX host: the
    simulated server never sees more sessions at once than one runner may open."""
    sites = {"shared.test": sim.accept(latency_ms=5)}
    async with SimInternet(sites, {}) as net:
        settings = net.settings(
            mx_max_sessions=2,
            mx_rcpt_per_session=5,
            mx_rcpt_per_second=200.0,
            batch_connect_timeout=2.0,
            batch_command_timeout=2.0,
        )
        runners: list[BatchRunner] = []
        stores: list[tuple[MemoryStore, str]] = []
        limiters: list[PgLimiter] = []
        engines: list[Engine] = []
        for name in ("a", "b"):
            store = MemoryStore()
            key, _ = await store.create_key(name, Plan.PAID)
            emails = [f"{name}{i}@shared.test" for i in range(60)]
            record = await store.create_batch(key.id, name, emails)
            stores.append((store, record.id))
            limiter = PgLimiter(db, holder=f"runner-{name}", settings=settings)
            await limiter.start()
            limiters.append(limiter)
            shared: Limiter = limiter  # PgLimiter is a Limiter (mypy checks it here)
            engine = Engine(settings)
            engines.append(engine)
            runner = BatchRunner(
                store,
                engine,
                settings,
                limiter=shared,
                scheduler_options={"backoff": Backoff(base=0.05, cap=0.2)},
            )
            runners.append(runner)
        try:
            for runner in runners:
                runner.start()
            await asyncio.wait_for(asyncio.gather(*(runner.wait_idle() for runner in runners)), 120)
        finally:
            for runner in runners:
                await runner.stop()
            for limiter in limiters:
                await limiter.close()
            for engine in engines:
                await engine.close()
        peak = net.smtp.max_concurrent("127.0.0.10")
        sessions = len(net.smtp.connects("127.0.0.10"))
    assert peak == 2  # never the 4 two in-process limiters would allow
    assert sessions >= 2 * 60 // 5  # one session per 5 recipients at most
    for store, batch_id in stores:
        items = [i async for i in store.iter_items(batch_id)]
        assert all(i.verdict is not None and i.verdict["reason"] == "catch_all" for i in items)


async def test_absurd_pauses_are_bounded(limiters: list[PgLimiter]) -> None:
    a, b, _ = limiters
    a.pause("mx.forever.test", 1e15)  # would overflow an interval: cut to a day
    a.pause("mx.nan.test", float("nan"))  # no pause at all
    await a.flush()
    assert 86_000 < await b.try_session("mx.forever.test", limits()) <= 86_400
    assert await b.try_session("mx.nan.test", limits()) == 0.0


def test_a_non_postgres_url_is_refused() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        PgLimiter("sqlite:///x.db", holder="h", settings=Settings())

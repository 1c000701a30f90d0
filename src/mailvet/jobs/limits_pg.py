"""``Limiter`` on PostgreSQL: per-MX caps that hold across every worker of a cluster.

Tables (storage/tables.py, revision 0003), one lane per MX host:

- ``mx_lanes``: a row per lane. Its row lock (``SELECT ... FOR UPDATE``) serialises the
  check-and-take of a session, so two workers never both take the last slot; it also
  holds the lane's pause (``paused_until``, shared: a back-off of one worker holds every
  worker off) and the RCPT token bucket.
- ``mx_leases``: a row per SMTP session held (``holder`` = the worker, ``expires_at``).
  A session counts while its lease is unexpired; the holder renews its leases every
  third of ``MAILVET_MX_LEASE_SECONDS`` and deletes them on release, so a worker killed
  with ``-9`` frees its slots when they expire, and not before.
- ``mx_connects``: the connects of the last minute per lane, a sliding log: at most
  ``connects_per_minute`` session starts in any 60 s, the same guarantee as
  ``InProcessLimiter``. It costs an INSERT and a count per *session*, which is rare.

RCPT per second is a token-bucket row, not a log, because it is asked before every RCPT
group: a grant is one autocommit ``UPDATE mx_lanes ... WHERE <enough tokens> RETURNING``
(one round trip, a row of constant size), a whole pipelined group's tokens in that one
statement. Measured (bench/limits_pg.py, PostgreSQL 15 on loopback, a shared 2-core
machine, 3 s each): the bucket granted 4,900 a second from one connection (0.20 ms a
grant) and 8,300 from four; a log (a row per RCPT and a count of the last second, under
the lane row's lock) 1,430 and 1,180 (0.70 and 3.4 ms a grant: every grant of a lane
queues behind the lock, and it leaves a row per RCPT to delete and vacuum). The bucket
allows ``burst + rate * w`` RCPTs in any ``w`` seconds, like ``InProcessLimiter``.

Time is the database's (``clock_timestamp()``), so the workers' clocks never matter.
A worker cut off from the database for longer than a lease loses its slots (they
expire for everyone else) while its open sessions go on to their end: the session cap
can be passed for that long. The lease length trades this against how long a dead
worker's slots stay taken.
``pause`` and ``paused_until`` stay synchronous, as the ``Limiter`` protocol has them:
a pause is noted locally at once and written in the background (``flush()`` waits for
the writes); ``paused_until`` answers from what this process knows, refreshed by every
grant refused for a pause and by the lease renewal. ``try_session`` is the non-blocking
probe the procrastinate driver asks before it starts a session: 0.0 when one could
start now, else the seconds to wait (a job is deferred, not spun on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg_pool import AsyncConnectionPool

from mailvet.jobs.limits import LaneLimits, rcpt_burst
from mailvet.settings import Settings

__all__ = [
    "CONNECT_WINDOW",
    "RATE_WINDOW",
    "PgLimiter",
    "default_holder",
    "pg_conninfo",
]

log = logging.getLogger(__name__)

CONNECT_WINDOW = 60.0  # seconds: connects_per_minute's window
RATE_WINDOW = 10.0  # seconds: the window of the recent RCPT count shown by mailvet status
SLOT_POLL = (0.05, 0.25)  # seconds between two looks at a full lane, at random in range
SLOT_RETRY = 1.0  # try_session's wait for a full lane (about; its sessions end when they end)
_MAX_PAUSES = 10_000  # past this many remembered pauses, the ended ones are forgotten
_MAX_PAUSE = 86_400.0  # seconds: a longer pause is cut to this (a day)

_LOCK_LANE = "SELECT clock_timestamp(), paused_until FROM mx_lanes WHERE lane = %s FOR UPDATE"
_ENSURE_LANE = "INSERT INTO mx_lanes (lane) VALUES (%s) ON CONFLICT (lane) DO NOTHING"
_HELD = "SELECT count(*), min(expires_at) FROM mx_leases WHERE lane = %s AND expires_at > %s"
_CONNECTS = "SELECT count(*), min(at) FROM mx_connects WHERE lane = %s AND at > %s"
_PROBE = """
WITH c AS (SELECT clock_timestamp() AS now)
SELECT c.now,
       (SELECT paused_until FROM mx_lanes WHERE lane = %(lane)s),
       (SELECT count(*) FROM mx_leases WHERE lane = %(lane)s AND expires_at > c.now),
       (SELECT count(*) FROM mx_connects
         WHERE lane = %(lane)s AND at > c.now - make_interval(secs => %(window)s)),
       (SELECT min(at) FROM mx_connects
         WHERE lane = %(lane)s AND at > c.now - make_interval(secs => %(window)s))
FROM c
"""
# The bucket's tokens now: refilled at ``rate`` since ``rcpt_refilled``, at most ``burst``.
_AVAILABLE = (
    "LEAST(%(burst)s, COALESCE(l.rcpt_tokens + %(rate)s * "
    "GREATEST(0, EXTRACT(EPOCH FROM c.now - l.rcpt_refilled)::float8), %(burst)s))"
)
_TAKE_RCPT = f"""
UPDATE mx_lanes AS l SET
    rcpt_tokens = {_AVAILABLE} - %(need)s,
    rcpt_refilled = GREATEST(COALESCE(l.rcpt_refilled, c.now), c.now),
    rcpt_window = CASE WHEN l.rcpt_window_at > c.now - make_interval(secs => %(window)s)
                       THEN l.rcpt_window + %(count)s ELSE %(count)s END,
    rcpt_window_at = CASE WHEN l.rcpt_window_at > c.now - make_interval(secs => %(window)s)
                          THEN l.rcpt_window_at ELSE c.now END
FROM (SELECT clock_timestamp() AS now) AS c
WHERE l.lane = %(lane)s
  AND (l.paused_until IS NULL OR l.paused_until <= c.now)
  AND {_AVAILABLE} >= %(need)s
RETURNING l.lane
"""
_RCPT_STATE = (
    "SELECT clock_timestamp(), paused_until, rcpt_tokens, rcpt_refilled "
    "FROM mx_lanes WHERE lane = %s"
)
_PAUSE = """
INSERT INTO mx_lanes (lane, paused_until)
VALUES (%(lane)s, clock_timestamp() + make_interval(secs => %(seconds)s))
ON CONFLICT (lane) DO UPDATE
SET paused_until = GREATEST(mx_lanes.paused_until, EXCLUDED.paused_until)
"""
_RENEW = (
    "UPDATE mx_leases SET expires_at = clock_timestamp() + make_interval(secs => %s) "
    "WHERE id = ANY(%s) RETURNING id"
)
_PAUSES_OF = (
    "SELECT lane, paused_until, clock_timestamp() FROM mx_lanes "
    "WHERE lane = ANY(%s) AND paused_until > clock_timestamp()"
)


def default_holder() -> str:
    """A worker id: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def pg_conninfo(database_url: str) -> str:
    """A libpq URI (psycopg's) for a ``postgresql[+driver]://`` URL; ValueError otherwise."""
    from sqlalchemy.engine import make_url

    from mailvet.storage import normalise_url

    url = make_url(normalise_url(database_url.strip()))
    if url.get_backend_name() != "postgresql":
        raise ValueError("the cluster's limits need MAILVET_DATABASE_URL on PostgreSQL")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


class PgLimiter:
    """``Limiter`` whose caps hold across every process on one PostgreSQL database.

    ``holder`` names this worker in its leases; ``settings.mx_lease_seconds`` is a
    lease's life. ``clock`` is the clock ``paused_until`` answers in (the scheduler's).
    Call ``await start()`` before use and ``await close()`` after (or ``async with``).
    """

    def __init__(
        self,
        database_url: str,
        *,
        holder: str,
        settings: Settings,
        pool_size: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holder = holder
        self.lease_seconds = settings.mx_lease_seconds
        self._clock = clock
        self._pool = AsyncConnectionPool(
            pg_conninfo(database_url),
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True},
            open=False,
            name="mailvet-limits",
        )
        self._held: dict[str, str] = {}  # lease id -> lane, held by this process now
        self._paused: dict[str, float] = {}  # lane -> pause end on ``clock``
        self._writes: set[asyncio.Task[None]] = set()  # pauses being written
        self._renewer: asyncio.Task[None] | None = None

    # --- life ---

    async def start(self) -> None:
        await self._pool.open(wait=True, timeout=30.0)
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_loop(), name="mailvet-leases")

    async def close(self) -> None:
        """Stop renewing, finish the pause writes, release what is still held."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self.flush()
        if self._held:
            ids = list(self._held)
            self._held.clear()
            with contextlib.suppress(psycopg.Error):
                async with self._pool.connection() as conn:
                    await conn.execute("DELETE FROM mx_leases WHERE id = ANY(%s)", (ids,))
        await self._pool.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- pauses (the Limiter protocol keeps them synchronous) ---

    def pause(self, lane: str, seconds: float) -> None:
        seconds = min(_MAX_PAUSE, max(0.0, seconds)) if math.isfinite(seconds) else 0.0
        self._note_pause(lane, self._clock() + seconds)
        task = asyncio.create_task(self._write_pause(lane, seconds))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Wait until every ``pause`` of this process is in the database."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def paused_until(self, lane: str) -> float:
        return self._paused.get(lane, float("-inf"))

    async def _write_pause(self, lane: str, seconds: float) -> None:
        try:
            async with self._pool.connection() as conn:
                await conn.execute(_PAUSE, {"lane": lane, "seconds": seconds})
        except (psycopg.Error, OSError):  # the lane is still paused here; others will not know
            log.warning("could not store the pause of a lane", exc_info=True)

    def _note_pause(self, lane: str, until: float) -> None:
        if until <= self._clock():
            return
        if len(self._paused) >= _MAX_PAUSES:
            now = self._clock()
            self._paused = {k: v for k, v in self._paused.items() if v > now}
        self._paused[lane] = max(until, self._paused.get(lane, float("-inf")))

    def _note_db_pause(self, lane: str, now: datetime, until: datetime | None) -> float:
        """Note a pause read from the database; return its seconds left (0: none)."""
        if until is None or until <= now:
            return 0.0
        left = _seconds(until - now)
        self._note_pause(lane, self._clock() + left)
        return left

    async def _local_pause(self, lane: str) -> None:
        while (left := self.paused_until(lane) - self._clock()) > 0:
            await asyncio.sleep(left)

    # --- sessions ---

    async def try_session(self, lane: str, limits: LaneLimits) -> float:
        """0.0 when a session to ``lane`` could start now, else about the seconds until
        one could (the pause's end, the connect window's, or ``SLOT_RETRY`` when every
        slot is held). Takes nothing."""
        local = self.paused_until(lane) - self._clock()
        if local > 0:
            return local
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_PROBE, {"lane": lane, "window": CONNECT_WINDOW})
            row = await cursor.fetchone()
        assert row is not None
        now, paused, held, connects, first = row
        left = self._note_db_pause(lane, now, paused)
        if left > 0:
            return left
        if held >= max(1, limits.max_sessions):
            return SLOT_RETRY
        if connects >= max(1, limits.connects_per_minute) and first is not None:
            return max(1e-3, CONNECT_WINDOW - _seconds(now - first))
        return 0.0

    @contextlib.asynccontextmanager
    async def session(self, lane: str, limits: LaneLimits) -> AsyncIterator[None]:
        lease = await self._acquire(lane, limits)
        try:
            yield
        finally:
            await self._release(lease)

    async def _acquire(self, lane: str, limits: LaneLimits) -> str:
        while True:
            await self._local_pause(lane)
            lease, wait = await self._take_session(lane, limits)
            if lease is not None:
                return lease
            await asyncio.sleep(wait)

    async def _take_session(self, lane: str, limits: LaneLimits) -> tuple[str | None, float]:
        """In one transaction on the lane's locked row: a lease and a connect, or the
        seconds to wait before asking again."""
        async with self._pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(_LOCK_LANE, (lane,))).fetchone()
            if row is None:
                await conn.execute(_ENSURE_LANE, (lane,))
                row = await (await conn.execute(_LOCK_LANE, (lane,))).fetchone()
            assert row is not None
            now, paused = row
            left = self._note_db_pause(lane, now, paused)
            if left > 0:
                return None, left
            held_row = await (await conn.execute(_HELD, (lane, now))).fetchone()
            assert held_row is not None
            if held_row[0] >= max(1, limits.max_sessions):
                until_expiry = _seconds(held_row[1] - now) if held_row[1] is not None else 0.0
                poll = random.uniform(*SLOT_POLL)
                return None, max(1e-3, min(poll, until_expiry))
            window_start = now - timedelta(seconds=CONNECT_WINDOW)
            await conn.execute(
                "DELETE FROM mx_connects WHERE lane = %s AND at <= %s", (lane, window_start)
            )
            connects_row = await (await conn.execute(_CONNECTS, (lane, window_start))).fetchone()
            assert connects_row is not None
            connects, first = connects_row
            if connects >= max(1, limits.connects_per_minute) and first is not None:
                return None, max(1e-3, CONNECT_WINDOW - _seconds(now - first))
            await conn.execute(
                "DELETE FROM mx_leases WHERE lane = %s AND expires_at <= %s", (lane, now)
            )
            lease = str(uuid.uuid4())
            expires = now + timedelta(seconds=self.lease_seconds)
            await conn.execute(
                "INSERT INTO mx_leases (id, lane, holder, started_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (lease, lane, self.holder, now, expires),
            )
            await conn.execute("INSERT INTO mx_connects (lane, at) VALUES (%s, %s)", (lane, now))
        self._held[lease] = lane
        return lease, 0.0

    async def _release(self, lease: str) -> None:
        self._held.pop(lease, None)
        try:
            async with self._pool.connection() as conn:
                await conn.execute("DELETE FROM mx_leases WHERE id = %s", (lease,))
        except (psycopg.Error, OSError):  # it expires on its own
            log.warning("could not release a session lease", exc_info=True)

    async def _renew_loop(self) -> None:
        every = self.lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.renew()
            except (psycopg.Error, OSError):
                log.warning("could not renew the session leases", exc_info=True)

    async def renew(self) -> None:
        """Push the expiry of every lease held here; refresh the held lanes' pauses."""
        if not self._held:
            return
        ids = list(self._held)
        lanes = sorted(set(self._held.values()))
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_RENEW, (self.lease_seconds, ids))
            renewed = {row[0] for row in await cursor.fetchall()}
            pauses = await (await conn.execute(_PAUSES_OF, (lanes,))).fetchall()
        lost = [i for i in ids if i not in renewed and i in self._held]
        if lost:  # expired (this process stalled past its lease) and cleaned up by another
            log.warning("%d session leases expired before their renewal", len(lost))
        for lane, until, now in pauses:
            self._note_db_pause(lane, now, until)

    # --- RCPT ---

    async def rcpt(self, lane: str, limits: LaneLimits, count: int = 1) -> None:
        rate = limits.rcpt_per_second
        if not rate > 0:  # no RCPT cap (a non-positive or NaN rate means none)
            await self._local_pause(lane)
            return
        burst = float(rcpt_burst(limits))
        need = float(min(max(1, count), rcpt_burst(limits)))
        params: dict[str, Any] = {
            "lane": lane,
            "burst": burst,
            "rate": float(rate),
            "need": need,
            "count": int(need),
            "window": RATE_WINDOW,
        }
        while True:
            await self._local_pause(lane)
            async with self._pool.connection() as conn:
                cursor = await conn.execute(_TAKE_RCPT, params)
                if await cursor.fetchone() is not None:
                    return
                state = await (await conn.execute(_RCPT_STATE, (lane,))).fetchone()
                if state is None:
                    await conn.execute(_ENSURE_LANE, (lane,))
                    continue
            now, paused, tokens, refilled = state
            left = self._note_db_pause(lane, now, paused)
            if left > 0:
                await asyncio.sleep(left)
                continue
            available = burst
            if tokens is not None and refilled is not None:
                available = min(burst, tokens + rate * max(0.0, _seconds(now - refilled)))
            await asyncio.sleep(max((need - available) / rate, 1e-3))

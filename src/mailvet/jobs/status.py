"""What the batch machinery is doing, read from the database: ``mailvet status``, /metrics.

On PostgreSQL (a cluster): procrastinate's jobs by state (queued: ``todo`` and due;
scheduled: ``todo`` for later, i.e. retries and deferred lanes; running: ``doing``;
failed), its workers with their last heartbeat (alive while it is at most
``MAILVET_WORKER_ALIVE_SECONDS`` old), the MX lanes that are busy now (sessions held,
pause, recent RCPT rate: jobs/limits_pg.py's tables) and the unfinished batches. On
SQLite there is no cluster queue (batches run in-process): only the batches.

Every read is one bounded query; nothing here writes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailvet.jobs.limits_pg import RATE_WINDOW
from mailvet.settings import Settings
from mailvet.storage.tables import batch_items, batches, mx_lanes, mx_leases

__all__ = [
    "BatchState",
    "ClusterStatus",
    "JobCounts",
    "LaneState",
    "WorkerState",
    "read_status",
]

MAX_LANES = 50  # busiest lanes listed (the total count is given too)
MAX_WORKERS = 200
MAX_BATCHES = 20  # oldest unfinished batches listed (the total count is given too)


@dataclass(frozen=True, slots=True)
class JobCounts:
    queued: int = 0  # todo, due now
    scheduled: int = 0  # todo, due later (greylist retries, deferred lanes)
    running: int = 0  # doing
    failed: int = 0


@dataclass(frozen=True, slots=True)
class WorkerState:
    id: int
    last_heartbeat: datetime
    seconds_since_heartbeat: float
    alive: bool
    running: int  # jobs it is doing


@dataclass(frozen=True, slots=True)
class LaneState:
    mx: str
    sessions: int  # unexpired leases now
    paused_until: datetime | None  # None: not paused
    rcpt_per_second: float | None  # over the last few seconds (None: no RCPT lately)


@dataclass(frozen=True, slots=True)
class BatchState:
    id: str
    name: str | None
    size: int
    done: int
    retry_waiting: int
    created_at: datetime


@dataclass(slots=True)
class ClusterStatus:
    backend: str  # "postgresql" | "sqlite"
    now: datetime
    cluster: bool  # a procrastinate queue is there to show
    note: str | None = None
    jobs: JobCounts | None = None
    workers: list[WorkerState] = field(default_factory=list)
    lanes: list[LaneState] = field(default_factory=list)
    lanes_busy: int = 0  # lanes with a session, a pause or recent RCPTs (may exceed MAX_LANES)
    lanes_paused: int = 0
    sessions_total: int = 0  # sessions held now over every lane
    batches: list[BatchState] = field(default_factory=list)
    batches_unfinished: int = 0

    @property
    def workers_alive(self) -> int:
        return sum(1 for w in self.workers if w.alive)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: timestamps as ISO 8601 strings."""

        def plain(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        out: dict[str, Any] = plain(asdict(self))
        out["workers_alive"] = self.workers_alive
        return out


_JOBS = text(
    "SELECT status::text, scheduled_at IS NOT NULL AND scheduled_at > now(), count(*) "
    "FROM procrastinate_jobs WHERE status IN ('todo', 'doing', 'failed') GROUP BY 1, 2"
)
_WORKERS = text(
    "SELECT w.id, w.last_heartbeat, EXTRACT(EPOCH FROM now() - w.last_heartbeat)::float8, "
    "(SELECT count(*) FROM procrastinate_jobs j WHERE j.worker_id = w.id "
    "AND j.status = 'doing') "
    "FROM procrastinate_workers w ORDER BY w.last_heartbeat DESC LIMIT :limit"
)


async def _now(conn: AsyncConnection, backend: str) -> datetime:
    if backend != "postgresql":
        return datetime.now(UTC)
    value = (await conn.execute(text("SELECT now()"))).scalar_one()
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


async def _queue_installed(conn: AsyncConnection) -> bool:
    found = await conn.execute(
        text(
            "SELECT to_regclass('procrastinate_jobs') IS NOT NULL "
            "AND to_regclass('procrastinate_workers') IS NOT NULL"
        )
    )
    return bool(found.scalar_one())


async def _jobs(conn: AsyncConnection) -> JobCounts:
    counts = {"queued": 0, "scheduled": 0, "running": 0, "failed": 0}
    for status, later, count in await conn.execute(_JOBS):
        if status == "todo":
            counts["scheduled" if later else "queued"] += count
        elif status == "doing":
            counts["running"] += count
        else:
            counts["failed"] += count
    return JobCounts(**counts)


async def _workers(conn: AsyncConnection, alive_seconds: float) -> list[WorkerState]:
    rows = await conn.execute(_WORKERS, {"limit": MAX_WORKERS})
    return [
        WorkerState(
            id=int(wid),
            last_heartbeat=beat.astimezone(UTC),
            seconds_since_heartbeat=round(max(0.0, age), 3),
            alive=age <= alive_seconds,
            running=int(running),
        )
        for wid, beat, age, running in rows
    ]


async def _lanes(conn: AsyncConnection, now: datetime, status: ClusterStatus) -> None:
    """The busy lanes (at most ``MAX_LANES``, most sessions first) and the totals."""
    held = (
        select(mx_leases.c.lane, func.count().label("n"))
        .where(mx_leases.c.expires_at > now)
        .group_by(mx_leases.c.lane)
        .subquery()
    )
    recent = now.timestamp() - RATE_WINDOW
    sessions = func.coalesce(held.c.n, 0)
    busy = (
        (held.c.n > 0)
        | (mx_lanes.c.paused_until > now)
        | (mx_lanes.c.rcpt_window_at > datetime.fromtimestamp(recent, UTC))
    )
    base = select(mx_lanes).outerjoin(held, held.c.lane == mx_lanes.c.lane).where(busy)
    total = (await conn.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    status.lanes_paused = (
        await conn.execute(select(func.count()).where(mx_lanes.c.paused_until > now))
    ).scalar_one()
    status.sessions_total = (
        await conn.execute(select(func.count()).where(mx_leases.c.expires_at > now))
    ).scalar_one()
    query = (
        select(
            mx_lanes.c.lane,
            sessions,
            mx_lanes.c.paused_until,
            mx_lanes.c.rcpt_window,
            mx_lanes.c.rcpt_window_at,
        )
        .outerjoin(held, held.c.lane == mx_lanes.c.lane)
        .where(busy)
        .order_by(sessions.desc(), mx_lanes.c.lane)
        .limit(MAX_LANES)
    )
    lanes = []
    for lane, count, paused, window, window_at in await conn.execute(query):
        rate: float | None = None
        if window_at is not None and window_at.timestamp() > recent:
            rate = round(window / max(1.0, (now - window_at).total_seconds()), 2)
        lanes.append(
            LaneState(
                mx=lane,
                sessions=int(count),
                paused_until=paused if paused is not None and paused > now else None,
                rcpt_per_second=rate,
            )
        )
    status.lanes = lanes
    status.lanes_busy = int(total)


async def _batches(conn: AsyncConnection) -> tuple[list[BatchState], int]:
    unfinished = batches.c.finished_at.is_(None) & batches.c.deleted_at.is_(None)
    total = (
        await conn.execute(select(func.count()).select_from(batches).where(unfinished))
    ).scalar_one()
    waiting = (
        select(func.count())
        .where(
            batch_items.c.batch_id == batches.c.id,
            batch_items.c.verdict.is_(None),
            batch_items.c.retry_at.is_not(None),
        )
        .correlate(batches)
        .scalar_subquery()
    )
    rows = await conn.execute(
        select(
            batches.c.id,
            batches.c.name,
            batches.c.size,
            batches.c.done,
            waiting,
            batches.c.created_at,
        )
        .where(unfinished)
        .order_by(batches.c.created_at)
        .limit(MAX_BATCHES)
    )
    listed = [
        BatchState(
            id=bid, name=name, size=size, done=done, retry_waiting=int(wait), created_at=created
        )
        for bid, name, size, done, wait, created in rows
    ]
    return listed, int(total)


async def read_status(engine: AsyncEngine, settings: Settings) -> ClusterStatus:
    """The state of the batch machinery in the (migrated) database behind ``engine``."""
    backend = engine.dialect.name
    async with engine.connect() as conn:
        now = await _now(conn, backend)
        status = ClusterStatus(backend=backend, now=now, cluster=False)
        if backend == "postgresql":
            if await _queue_installed(conn):
                status.cluster = True
                status.jobs = await _jobs(conn)
                status.workers = await _workers(conn, settings.worker_alive_seconds)
            else:
                status.note = (
                    "procrastinate's schema is not installed in this database "
                    "(mailvet db upgrade installs it): no job queue to show"
                )
            await _lanes(conn, now, status)
        else:
            status.note = (
                "SQLite: no cluster queue; batches run in-process (mailvet serve, mailvet batch)"
            )
        status.batches, status.batches_unfinished = await _batches(conn)
    return status

"""The batch engine's state on PostgreSQL for the procrastinate driver (jobs/cluster.py).

Every item without a verdict is *held* by at most one live procrastinate job, named by
``batch_items.job_id``: the plan job that will route it, the probe job that will ask
its mail server, or the probe job scheduled for its greylist retry. A job that defers
another one for some items hands them over **in one transaction**: the new job's row
(procrastinate's ``defer`` on this transaction's connection) and the items' ``job_id``
commit together or not at all. So:

- a job only works on the items it holds (``job_id`` = its id, no verdict yet): a job
  run twice (a dead worker's job retried) finds what its first run saved or handed over
  gone, and asks only the rest;
- results are saved only where there is none yet, by the job that holds the item; the
  batch's ``done`` counts each position once (the batch row is locked, as
  ``SqlStore.save_results`` does);
- an item whose job is neither queued nor running (failed for good, cancelled) is
  planned again: the sweep finds its batch (``orphaned_batches``) and a plan job takes
  it (``candidates``; an item whose job row was deleted by hand is taken too, but only
  a plan job running for another reason finds it);
- the transaction that saves a batch's last result also sets ``finished_at`` and defers
  its webhook job.

PostgreSQL only: the statements join procrastinate's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailvet.storage.common import StorageError, dump_verdict, utcnow, verdict_labels

__all__ = ["ClusterStore", "Defer", "Handover", "HeldItem", "Probe"]

_LIVE = (
    "EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.id = i.job_id "
    "AND j.status IN ('todo', 'doing'))"
)
_CANDIDATES = text(
    "SELECT i.position, i.key, i.email, i.attempts, i.first_try_at FROM batch_items i "
    "WHERE i.batch_id = :batch_id AND i.position > :after AND i.verdict IS NULL "
    f"AND (i.job_id IS NULL OR NOT {_LIVE}) ORDER BY i.position LIMIT :limit"
)
_HELD = text(
    "SELECT i.position, i.key, i.email, i.attempts, i.first_try_at FROM batch_items i "
    "WHERE i.job_id = :job_id AND i.batch_id = :batch_id AND i.verdict IS NULL "
    "ORDER BY i.position"
)
_LOCK_BATCH = text("SELECT deleted_at, finished_at FROM batches WHERE id = :batch_id FOR UPDATE")
_SAVE = text(
    "UPDATE batch_items AS i SET verdict = t.verdict, result = t.result, reason = t.reason, "
    "retry_at = NULL, job_id = NULL, updated_at = :now "
    "FROM unnest(CAST(:keys AS text[]), CAST(:verdicts AS text[]), "
    "CAST(:results AS text[]), CAST(:reasons AS text[])) AS t(key, verdict, result, reason) "
    "WHERE i.batch_id = :batch_id AND i.key = t.key AND i.verdict IS NULL "
    "AND (CAST(:job_id AS bigint) IS NULL OR i.job_id = :job_id "
    f"OR i.job_id IS NULL OR NOT {_LIVE})"
)
_HAND_OVER = text(
    "UPDATE batch_items AS i SET job_id = :new_job, updated_at = :now "
    "WHERE i.batch_id = :batch_id AND i.key = ANY(CAST(:keys AS text[])) "
    "AND i.verdict IS NULL AND (CAST(:job_id AS bigint) IS NULL OR i.job_id = :job_id "
    f"OR i.job_id IS NULL OR NOT {_LIVE})"
)
_RETRY = text(
    "UPDATE batch_items AS i SET job_id = :new_job, retry_at = :retry_at, "
    "attempts = i.attempts + 1, first_try_at = coalesce(i.first_try_at, :now), "
    "updated_at = :now WHERE i.batch_id = :batch_id AND i.key = ANY(CAST(:keys AS text[])) "
    "AND i.verdict IS NULL AND i.job_id = :job_id"
)
_COUNT_DONE = text(
    "UPDATE batches SET done = done + :count, updated_at = :now WHERE id = :batch_id"
)
_FINISH = text(
    "UPDATE batches SET finished_at = :now, updated_at = :now WHERE id = :batch_id "
    "AND finished_at IS NULL AND deleted_at IS NULL AND done >= size RETURNING callback_url"
)
# Batches whose work no live job holds, cheap to ask every few seconds however big the
# batches: items never planned (ix_batch_items_unplanned) while no plan job is live,
# items held by a job that ended without settling them (failed for good, cancelled:
# from procrastinate_jobs' few such rows through ix_batch_items_job), or nothing left
# but the finishing.
_ORPHANED = text(
    "SELECT b.id FROM batches b WHERE b.finished_at IS NULL AND b.deleted_at IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.task_name = :plan_task "
    "AND j.status IN ('todo', 'doing') AND j.args ->> 'batch_id' = b.id) "
    "AND (b.done >= b.size "
    "OR EXISTS (SELECT 1 FROM batch_items i WHERE i.batch_id = b.id AND i.verdict IS NULL "
    "AND i.job_id IS NULL) "
    "OR EXISTS (SELECT 1 FROM procrastinate_jobs j JOIN batch_items i ON i.job_id = j.id "
    "WHERE j.status NOT IN ('todo', 'doing') AND i.verdict IS NULL AND i.batch_id = b.id)) "
    "ORDER BY b.created_at LIMIT :limit"
)


@dataclass(frozen=True, slots=True)
class HeldItem:
    """One distinct address of a batch (the planner's ``Work``)."""

    key: str
    email: str
    attempts: int
    first_try_at: datetime | None


class Defer(Protocol):
    """Defers jobs on the given connection (in its transaction); returns their ids.
    ``jobs``: (task name, arguments, scheduled at or None), in order."""

    async def __call__(
        self, connection: Any, jobs: Sequence[tuple[str, dict[str, Any], datetime | None]]
    ) -> list[int]: ...


@dataclass(slots=True)
class Handover:
    """Items passed to a new job: its task, its arguments, when it runs, the keys."""

    task: str
    args: dict[str, Any]
    keys: list[str]
    at: datetime | None = None  # None: now
    retry: bool = False  # a greylist retry: attempts += 1, retry_at = at


@dataclass(slots=True)
class Probe:
    """What one job reached: verdicts to save and items to hand over."""

    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    handovers: list[Handover] = field(default_factory=list)


class ClusterStore:
    """The statements of the procrastinate driver, on the SQL store's engine."""

    def __init__(self, engine: AsyncEngine, defer: Defer, *, plan_task: str, webhook_task: str):
        self.engine = engine
        self.defer = defer
        self.plan_task = plan_task
        self.webhook_task = webhook_task

    @asynccontextmanager
    async def _transaction(self) -> Any:
        try:
            async with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {type(exc).__name__}") from None

    async def batch_open(self, batch_id: str) -> bool:
        """Whether the batch exists and is neither finished nor deleted."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT finished_at, deleted_at FROM batches WHERE id = :b"),
                    {"b": batch_id},
                )
            ).first()
        return row is not None and row.finished_at is None and row.deleted_at is None

    async def candidates(
        self, batch_id: str, after: int, limit: int
    ) -> tuple[list[HeldItem], int, bool]:
        """Items past position ``after`` without a verdict and without a live job, by
        position, as distinct keys; the last position read and whether ``limit`` rows
        were read (more may follow)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    _CANDIDATES, {"batch_id": batch_id, "after": after, "limit": limit}
                )
            ).all()
        last = rows[-1].position if rows else after
        return _distinct(rows), last, len(rows) >= limit

    async def held(self, batch_id: str, job_id: int) -> list[HeldItem]:
        """The items job ``job_id`` holds that have no verdict yet (a job's arguments
        never carry addresses: procrastinate logs them)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_HELD, {"batch_id": batch_id, "job_id": job_id})).all()
        return _distinct(rows)

    async def commit(self, batch_id: str, job_id: int | None, probe: Probe) -> bool:
        """Save ``probe.results`` and hand the ``probe.handovers`` over, in one
        transaction; finish the batch (and defer its webhook) when nothing is left.
        ``job_id`` None: the caller holds no items (a plan job: it takes items without a
        live job). Returns whether this finished the batch."""
        async with self._transaction() as conn:
            row = (await conn.execute(_LOCK_BATCH, {"batch_id": batch_id})).first()
            if row is None or row.deleted_at is not None or row.finished_at is not None:
                return False
            now = utcnow()
            if probe.results:
                await self._save(conn, batch_id, job_id, probe.results, now)
            if probe.handovers:
                await self._hand_over(conn, batch_id, job_id, probe.handovers, now)
            return await self._finish(conn, batch_id, now)

    async def _save(
        self,
        conn: AsyncConnection,
        batch_id: str,
        job_id: int | None,
        results: list[tuple[str, dict[str, Any]]],
        now: datetime,
    ) -> None:
        latest: dict[str, tuple[str, str | None, str | None]] = {}
        for key, verdict in results:
            latest[key] = (dump_verdict(verdict), *verdict_labels(verdict))
        keys = list(latest)
        saved = await conn.execute(
            _SAVE,
            {
                "batch_id": batch_id,
                "job_id": job_id,
                "now": now,
                "keys": keys,
                "verdicts": [latest[k][0] for k in keys],
                "results": [latest[k][1] for k in keys],
                "reasons": [latest[k][2] for k in keys],
            },
        )
        if saved.rowcount:
            await conn.execute(
                _COUNT_DONE, {"batch_id": batch_id, "count": saved.rowcount, "now": now}
            )

    async def _hand_over(
        self,
        conn: AsyncConnection,
        batch_id: str,
        job_id: int | None,
        handovers: list[Handover],
        now: datetime,
    ) -> None:
        raw = await conn.get_raw_connection()
        ids = await self.defer(raw.driver_connection, [(h.task, h.args, h.at) for h in handovers])
        for handover, new_job in zip(handovers, ids, strict=True):
            if not handover.keys:
                continue
            params = {
                "batch_id": batch_id,
                "job_id": job_id,
                "new_job": new_job,
                "keys": handover.keys,
                "now": now,
            }
            if handover.retry:
                await conn.execute(_RETRY, {**params, "retry_at": handover.at or now})
            else:
                await conn.execute(_HAND_OVER, params)

    async def _finish(self, conn: AsyncConnection, batch_id: str, now: datetime) -> bool:
        row = (await conn.execute(_FINISH, {"batch_id": batch_id, "now": now})).first()
        if row is None:
            return False
        if row.callback_url is not None:
            raw = await conn.get_raw_connection()
            await self.defer(
                raw.driver_connection, [(self.webhook_task, {"batch_id": batch_id}, None)]
            )
        return True

    async def orphaned_batches(self, limit: int = 100) -> list[str]:
        """Unfinished batches without a queued or running plan job that have items no
        live job holds (or nothing left but the finishing)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(_ORPHANED, {"plan_task": self.plan_task, "limit": limit})
            return [str(r.id) for r in rows]


def _distinct(rows: Sequence[Any]) -> list[HeldItem]:
    """One item per key, at its first position (rows come by position)."""
    seen: dict[str, HeldItem] = {}
    for row in rows:
        if row.key not in seen:
            seen[row.key] = HeldItem(row.key, row.email, row.attempts, row.first_try_at)
    return list(seen.values())

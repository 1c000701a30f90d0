"""The SQL ``Store``: SQLAlchemy 2 Core, async, on SQLite (aiosqlite) or PostgreSQL (psycopg).

SQLite runs in WAL mode with ``synchronous=FULL``, a busy timeout and foreign keys
on; write transactions start with ``BEGIN IMMEDIATE`` so two writers never dead-end
on a lock upgrade. On PostgreSQL, writers of one batch serialise on its row
(``SELECT ... FOR UPDATE``), which keeps the ``done`` counter exact.

Faults: every database error leaves as ``StorageError``, and SQLAlchemy never renders a
statement's parameters (``hide_parameters``): they hold addresses, which no log line
may carry (nor may aiosqlite's debug lines, which are dropped). A new SQLite file (and
with it its ``-wal`` and ``-shm`` files, which SQLite creates with the database's mode)
is readable by its owner only (0600), in a directory created 0700.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Select, bindparam, delete, event, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from mailvet.storage.base import (
    ApiKey,
    BatchCounts,
    BatchItem,
    BatchRecord,
    Plan,
    UploadInfo,
    UsageRow,
    WorkItem,
)
from mailvet.storage.common import (
    MIN_REVOKE_PREFIX,
    NotFoundError,
    StorageError,
    check_cells,
    check_emails,
    check_keys,
    check_text,
    check_when,
    dump_upload,
    dump_verdict,
    hash_secret,
    load_cells,
    load_upload,
    load_verdict,
    new_secret,
    secret_matches,
    secret_prefix,
    utcnow,
    verdict_labels,
)
from mailvet.storage.tables import api_keys, batch_items, batches, usage_daily

__all__ = ["SqlStore", "due_query", "key_positions_query", "todo_query", "window_query"]

_log = logging.getLogger(__name__)

SQLITE_CHUNK = 5_000  # rows per executemany on SQLite
PG_CHUNK = 10_000  # rows per array parameter on PostgreSQL
IN_CHUNK = 500  # positions per IN (...) list, well under SQLite's parameter limit
READ_CHUNK = 1_000  # rows per query when streaming a batch's items (iter_items)
WORK_SCAN = 1_000  # rows per query when looking for the next distinct keys (next_work)
# After inserting a batch at least this big, PostgreSQL's statistics are refreshed at once:
# with stale ones the planner may walk the whole batch instead of the indexes.
PG_ANALYZE_MIN = 10_000
SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "mailvet_write"
# pg_advisory_xact_lock key so two processes never migrate at the same time
_MIGRATION_LOCK_KEY = 0x6D61696C76657421  # "mailvet!"


def _storable(value: object) -> bool:
    """Whether a lookup key can reach the database (if not, it can match nothing)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _key(row: Any) -> ApiKey:  # a Row of api_keys columns
    return ApiKey(
        id=row.id,
        name=row.name,
        plan=Plan(row.plan),
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        admin=bool(row.admin),
    )


def _batch(row: Any) -> BatchRecord:  # a Row of _BATCH_COLUMNS
    return BatchRecord(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        size=row.size,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        deleted_at=row.deleted_at,
        done=row.done,
        callback_url=row.callback_url,
        retry_waiting=row.retry_waiting,
        webhook_delivered_at=row.webhook_delivered_at,
        webhook_attempts=row.webhook_attempts,
        upload=load_upload(row.upload),
    )


# Items waiting for a retry, counted through ix_batch_items_retry.
_RETRY_WAITING = (
    select(func.count())
    .where(
        batch_items.c.batch_id == batches.c.id,
        batch_items.c.verdict.is_(None),
        batch_items.c.retry_at.is_not(None),
    )
    .correlate(batches)
    .scalar_subquery()
    .label("retry_waiting")
)
_BATCH_COLUMNS = (*batches.c, _RETRY_WAITING)
_WORK_COLUMNS = (
    batch_items.c.position,
    batch_items.c.key,
    batch_items.c.email,
    batch_items.c.attempts,
    batch_items.c.first_try_at,
)


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.plan,
    api_keys.c.prefix,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.admin,
)

# Bulk statements, written per dialect because they are the hot paths (a batch of
# 50,000 items in well under a second on either database).
_SQLITE_INSERT_ITEMS = (
    'INSERT INTO batch_items (batch_id, position, email, "key", updated_at, cells) '
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_SQLITE_SAVE_RESULT = (
    "UPDATE batch_items SET verdict = ?, result = ?, reason = ?, retry_at = NULL, "
    'updated_at = ? WHERE batch_id = ? AND "key" = ?'
)
_PG_INSERT_ITEMS = text(
    'INSERT INTO batch_items (batch_id, position, email, "key", updated_at, cells) '
    "SELECT :batch_id, t.position, t.email, t.key, :now, t.cells "
    "FROM unnest(CAST(:positions AS integer[]), CAST(:emails AS text[]), "
    "CAST(:keys AS text[]), CAST(:cells AS text[])) AS t(position, email, key, cells)"
)
_PG_COUNT_KEYS_PENDING = text(
    'SELECT "key", count(*) FROM batch_items WHERE batch_id = :batch_id '
    'AND "key" = ANY(CAST(:keys AS text[])) AND verdict IS NULL GROUP BY "key"'
)
_PG_SAVE_RESULTS = text(
    "UPDATE batch_items AS i SET verdict = t.verdict, result = t.result, reason = t.reason, "
    "retry_at = NULL, updated_at = :now "
    "FROM unnest(CAST(:keys AS text[]), CAST(:verdicts AS text[]), "
    "CAST(:results AS text[]), CAST(:reasons AS text[])) AS t(key, verdict, result, reason) "
    'WHERE i.batch_id = :batch_id AND i."key" = t.key'
)


def todo_query(batch_id: str, after: int, limit: int) -> Select[Any]:
    """Items past position ``after`` neither done nor waiting for a retry, by position
    (ix_batch_items_todo)."""
    return (
        select(*_WORK_COLUMNS)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.verdict.is_(None),
            batch_items.c.retry_at.is_(None),
            batch_items.c.position > after,
        )
        .order_by(batch_items.c.position)
        .limit(limit)
    )


def due_query(batch_id: str, now: datetime, after: int, limit: int) -> Select[Any]:
    """Items past position ``after`` whose retry is due, by position
    (ix_batch_items_waiting: only the waiting items are walked)."""
    return (
        select(*_WORK_COLUMNS)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.verdict.is_(None),
            batch_items.c.retry_at.is_not(None),
            batch_items.c.retry_at <= now,
            batch_items.c.position > after,
        )
        .order_by(batch_items.c.position)
        .limit(limit)
    )


def key_positions_query(batch_id: str, keys: Sequence[str]) -> Select[Any]:
    """(key, position) of the items of ``keys`` without a verdict (ix_batch_items_key).

    Unordered: an ORDER BY position would tempt SQLite into walking the whole batch
    by its primary key; the caller sorts."""
    return select(batch_items.c.key, batch_items.c.position).where(
        batch_items.c.batch_id == batch_id,
        batch_items.c.verdict.is_(None),
        batch_items.c.key.in_(keys),
    )


def window_query(
    batch_id: str, low: int, high: int, result: str | None, reason: str | None = None
) -> Select[Any]:
    """Items at positions low..high-1 (with that result and reason, if given), by position
    (primary key range)."""
    query = (
        select(
            batch_items.c.position,
            batch_items.c.email,
            batch_items.c.verdict,
            batch_items.c.cells,
        )
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.position >= low,
            batch_items.c.position < high,
        )
        .order_by(batch_items.c.position)
    )
    if result is not None:
        query = query.where(batch_items.c.result == result)
    if reason is not None:
        query = query.where(batch_items.c.reason == reason)
    return query


class SqlStore:
    """A ``Store`` on SQLite or PostgreSQL. ``url`` must name an async driver
    (``sqlite+aiosqlite`` or ``postgresql+psycopg``); ``open_store`` normalises."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}")
        self._sqlite_path: Path | None = None
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
                kwargs["poolclass"] = StaticPool  # one connection, or each sees its own db
            elif not (parsed.query.get("uri") or database.startswith("file:")):
                self._sqlite_path = Path(database)
        else:
            kwargs["pool_pre_ping"] = True  # survive a PostgreSQL restart or failover
        # hide_parameters: an error's text never shows the statement's values (addresses)
        self._engine: AsyncEngine = create_async_engine(parsed, hide_parameters=True, **kwargs)
        self._write_engine = self._engine.execution_options(**{_WRITE_OPTION: True})
        if self.dialect == "sqlite":
            _install_sqlite_hooks(self._engine, self._sqlite_path)
        # SQLite allows one writer at a time: queue this process's writers on an
        # asyncio lock rather than in SQLite's busy-wait. The lock belongs to the loop
        # that made it; a store used from another loop later gets a new one (writers
        # on two loops at once still work, through the busy timeout).
        self._write_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    # --- plumbing ---

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        try:
            if self.dialect != "sqlite":
                async with self._engine.begin() as conn:
                    yield conn
                return
            loop = asyncio.get_running_loop()
            if self._write_lock is None or self._write_lock[0] is not loop:
                self._write_lock = (loop, asyncio.Lock())
            async with self._write_lock[1], self._write_engine.begin() as conn:
                yield conn
        except _FAULTS as exc:
            raise _storage_error(exc) from None  # see _storage_error

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                yield conn
        except _FAULTS as exc:
            raise _storage_error(exc) from None  # see _storage_error

    async def migrate(self) -> None:
        from mailvet.storage.migrations_runner import upgrade_head

        async with self._write() as conn:
            if self.dialect == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            await conn.run_sync(upgrade_head)

    async def close(self) -> None:
        await self._engine.dispose()

    # --- keys ---

    async def create_key(self, name: str, plan: Plan, *, admin: bool = False) -> tuple[ApiKey, str]:
        check_text(name, "key name")
        plan = Plan(plan)
        secret = new_secret()
        key = ApiKey(
            id=str(uuid.uuid4()),
            name=name,
            plan=plan,
            prefix=secret_prefix(secret),
            created_at=utcnow(),
            admin=bool(admin),
        )
        async with self._write() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=key.id,
                    name=key.name,
                    plan=key.plan.value,
                    prefix=key.prefix,
                    secret_hash=hash_secret(secret),
                    created_at=key.created_at,
                    admin=key.admin,
                )
            )
        return key, secret

    async def authenticate(self, secret: str) -> ApiKey | None:
        if not isinstance(secret, str) or not secret:
            return None
        digest = hash_secret(secret)
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(*_KEY_COLUMNS, api_keys.c.secret_hash).where(
                        api_keys.c.secret_hash == digest, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None or not secret_matches(row.secret_hash, secret):
            return None
        return _key(row)

    async def key_hash(self, key_id: str) -> str | None:
        if not _storable(key_id):
            return None
        async with self._read() as conn:
            row = await conn.execute(select(api_keys.c.secret_hash).where(api_keys.c.id == key_id))
            value = row.scalar_one_or_none()
        return None if value is None else str(value)

    async def list_keys(self) -> list[ApiKey]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(*_KEY_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
            )
            return [_key(row) for row in rows]

    async def get_key(self, key_id: str) -> ApiKey | None:
        if not _storable(key_id):
            return None
        async with self._read() as conn:
            row = (await conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.id == key_id))).first()
        return None if row is None else _key(row)

    async def set_plan(self, key_id: str, plan: Plan) -> bool:
        plan = Plan(plan)
        if not _storable(key_id):
            return False
        async with self._write() as conn:
            changed = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(plan=plan.value)
            )
            return bool(changed.rowcount)

    async def revoke_key(self, key_id_or_prefix: str) -> bool:
        wanted = key_id_or_prefix.strip() if isinstance(key_id_or_prefix, str) else ""
        if not _storable(wanted) or not wanted:
            return False
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(api_keys.c.id, api_keys.c.revoked_at).where(api_keys.c.id == wanted)
                )
            ).first()
            if row is not None:
                if row.revoked_at is not None:
                    return False
                key_id: str = row.id
            elif len(wanted) >= MIN_REVOKE_PREFIX:
                ids = (
                    (
                        await conn.execute(
                            select(api_keys.c.id)
                            .where(
                                api_keys.c.revoked_at.is_(None),
                                func.substr(api_keys.c.prefix, 1, len(wanted)) == wanted,
                            )
                            .limit(2)
                        )
                    )
                    .scalars()
                    .all()
                )
                if len(ids) != 1:
                    return False
                key_id = ids[0]
            else:
                return False
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=utcnow())
            )
            return True

    # --- batches ---

    async def create_batch(
        self,
        user_id: str,
        name: str | None,
        emails: list[str],
        *,
        keys: list[str] | None = None,
        callback_url: str | None = None,
        upload: UploadInfo | None = None,
        cells: list[str] | None = None,
    ) -> BatchRecord:
        if name is not None:
            check_text(name, "batch name")
        if callback_url is not None:
            check_text(callback_url, "callback_url")
        check_emails(emails)
        item_keys = check_keys(emails, keys)
        check_cells(emails, upload, cells)
        upload_text = None if upload is None else dump_upload(upload)
        if not _storable(user_id):
            raise NotFoundError(f"no API key with id {user_id!r}")
        now = utcnow()
        record = BatchRecord(
            id=str(uuid.uuid4()),
            user_id=user_id,
            name=name,
            size=len(emails),
            created_at=now,
            updated_at=now,
            callback_url=callback_url,
            upload=upload,
        )
        async with self._write() as conn:
            owner = (
                await conn.execute(select(api_keys.c.id).where(api_keys.c.id == user_id))
            ).first()
            if owner is None:
                raise NotFoundError(f"no API key with id {user_id!r}")
            await conn.execute(
                batches.insert().values(
                    id=record.id,
                    user_id=user_id,
                    name=name,
                    size=record.size,
                    done=0,
                    created_at=now,
                    updated_at=now,
                    callback_url=callback_url,
                    upload=upload_text,
                )
            )
            await self._insert_items(conn, record.id, emails, item_keys, cells, now)
        if self.dialect == "postgresql" and len(emails) >= PG_ANALYZE_MIN:
            await self._analyze_items()
        return record

    async def _analyze_items(self) -> None:
        """Refresh PostgreSQL's statistics of batch_items (a sample: well under a second).

        Autovacuum would, within a minute or so; until then the planner takes a new
        batch of a million rows for a few and may walk all of them for every page.
        Best effort: the batch is stored whatever happens here."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("ANALYZE batch_items"))
                await conn.commit()
        except _FAULTS as exc:
            _log.warning("could not refresh the statistics of batch_items: %s", _storage_error(exc))

    async def _insert_items(
        self,
        conn: AsyncConnection,
        batch_id: str,
        emails: list[str],
        keys: list[str],
        cells: list[str] | None,
        now: datetime,
    ) -> None:
        """Bulk insert: arrays through ``unnest`` on PostgreSQL, executemany on SQLite."""
        if self.dialect == "postgresql":
            for start in range(0, len(emails), PG_CHUNK):
                chunk = emails[start : start + PG_CHUNK]
                await conn.execute(
                    _PG_INSERT_ITEMS,
                    {
                        "batch_id": batch_id,
                        "now": now,
                        "positions": list(range(start, start + len(chunk))),
                        "emails": chunk,
                        "keys": keys[start : start + PG_CHUNK],
                        "cells": [None] * len(chunk)
                        if cells is None
                        else cells[start : start + PG_CHUNK],
                    },
                )
            return
        stamp = self._sqlite_timestamp(now)
        for start in range(0, len(emails), SQLITE_CHUNK):
            chunk = emails[start : start + SQLITE_CHUNK]
            chunk_keys = keys[start : start + SQLITE_CHUNK]
            chunk_cells = None if cells is None else cells[start : start + SQLITE_CHUNK]
            await conn.exec_driver_sql(
                _SQLITE_INSERT_ITEMS,
                [
                    (
                        batch_id,
                        start + offset,
                        email,
                        chunk_keys[offset],
                        stamp,
                        None if chunk_cells is None else chunk_cells[offset],
                    )
                    for offset, email in enumerate(chunk)
                ],
            )

    def _sqlite_timestamp(self, value: datetime) -> Any:
        """``value`` as the SQLite driver gets it from the ``updated_at`` column type."""
        processor = batch_items.c.updated_at.type.bind_processor(self._engine.dialect)
        return value if processor is None else processor(value)

    async def get_batch(self, user_id: str, batch_id: str) -> BatchRecord | None:
        if not (_storable(user_id) and _storable(batch_id)):
            return None
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(*_BATCH_COLUMNS).where(
                        batches.c.id == batch_id, batches.c.user_id == user_id
                    )
                )
            ).first()
        return None if row is None else _batch(row)

    async def finish_batch(self, batch_id: str) -> None:
        if not _storable(batch_id):
            raise NotFoundError(f"no batch with id {batch_id!r}")
        async with self._write() as conn:
            now = utcnow()
            result = await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.finished_at.is_(None))
                .values(finished_at=now, updated_at=now)
            )
            if result.rowcount == 0:
                exists = (
                    await conn.execute(select(batches.c.id).where(batches.c.id == batch_id))
                ).first()
                if exists is None:
                    raise NotFoundError(f"no batch with id {batch_id!r}")

    async def unfinished_batches(self) -> list[str]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(batches.c.id)
                .where(batches.c.finished_at.is_(None), batches.c.deleted_at.is_(None))
                .order_by(batches.c.created_at, batches.c.id)
            )
            return list(rows.scalars())

    # --- the batch engine ---

    async def list_batches(
        self, user_id: str, *, offset: int = 0, limit: int = 50
    ) -> list[BatchRecord]:
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        if limit == 0 or not _storable(user_id):
            return []
        async with self._read() as conn:
            rows = await conn.execute(
                select(*_BATCH_COLUMNS)
                .where(batches.c.user_id == user_id)
                .order_by(batches.c.created_at.desc(), batches.c.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [_batch(row) for row in rows]

    async def delete_batch(self, user_id: str, batch_id: str) -> bool:
        if not (_storable(user_id) and _storable(batch_id)):
            return False
        async with self._write() as conn:
            # The batch row's lock orders this after (or before) any save of its items.
            row = (
                await conn.execute(
                    select(batches.c.user_id, batches.c.deleted_at)
                    .where(batches.c.id == batch_id)
                    .with_for_update()
                )
            ).first()
            if row is None or row.user_id != user_id:
                return False
            if row.deleted_at is not None:
                return True
            await conn.execute(delete(batch_items).where(batch_items.c.batch_id == batch_id))
            now = utcnow()
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(deleted_at=now, updated_at=now)
            )
            return True

    async def next_work(self, batch_id: str, limit: int, now: datetime) -> list[WorkItem]:
        check_when(now, "now")
        if limit <= 0 or not _storable(batch_id):
            return []
        # key -> (email, attempts, first_try_at), in the order of first position
        chosen: dict[str, tuple[str, int, datetime | None]] = {}
        after = -1
        async with self._read() as conn:
            # Walk the items to do (ix_batch_items_todo, in position order) and the due
            # retries (ix_batch_items_retry) side by side, by position, until `limit`
            # distinct keys are found: never more than WORK_SCAN rows of each at once.
            while len(chosen) < limit:
                todo = (await conn.execute(todo_query(batch_id, after, WORK_SCAN))).all()
                due = (await conn.execute(due_query(batch_id, now, after, WORK_SCAN))).all()
                rows = sorted([*todo, *due], key=lambda row: row.position)[:WORK_SCAN]
                for row in rows:
                    key = row.email if row.key is None else row.key
                    if key not in chosen:
                        chosen[key] = (row.email, row.attempts, row.first_try_at)
                        if len(chosen) == limit:
                            break
                if len(todo) < WORK_SCAN and len(due) < WORK_SCAN:
                    break  # both walks reached the end
                after = rows[-1].position
            positions: dict[str, list[int]] = {key: [] for key in chosen}
            for chunk in _chunks(list(chosen), IN_CHUNK):
                found = await conn.execute(key_positions_query(batch_id, chunk))
                for key, position in found:
                    positions[key].append(position)
        return [
            WorkItem(
                key=key,
                email=email,
                positions=tuple(sorted(positions[key])),
                attempts=attempts,
                first_try_at=first_try_at,
            )
            for key, (email, attempts, first_try_at) in chosen.items()
        ]

    async def save_results(self, batch_id: str, results: list[tuple[str, dict[str, Any]]]) -> None:
        # Serialise first: a bad verdict changes nothing. A repeated key keeps the last.
        latest: dict[str, tuple[str, str | None, str | None]] = {}
        for key, verdict in results:
            latest[key] = (dump_verdict(verdict), *verdict_labels(verdict))
        if not _storable(batch_id):
            raise NotFoundError(f"no batch with id {batch_id!r}")
        keys = [key for key in latest if _storable(key)]  # the others match nothing
        async with self._write() as conn:
            # Lock the batch row: every writer of this batch's items queues here,
            # so counting the newly done items below is exact.
            row = (
                await conn.execute(
                    select(batches.c.deleted_at, batches.c.user_id)
                    .where(batches.c.id == batch_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            if row.deleted_at is not None or not keys:
                return
            now = utcnow()
            newly_done = 0
            by_result: Counter[str] = Counter()  # newly decided positions: the owner's usage
            if self.dialect == "postgresql":
                for chunk in _chunks(keys, PG_CHUNK):
                    params = {"batch_id": batch_id, "keys": list(chunk)}
                    for key, pending in await conn.execute(_PG_COUNT_KEYS_PENDING, params):
                        newly_done += pending
                        by_result[latest[key][1] or ""] += pending
                    await conn.execute(
                        _PG_SAVE_RESULTS,
                        {
                            **params,
                            "now": now,
                            "verdicts": [latest[k][0] for k in chunk],
                            "results": [latest[k][1] for k in chunk],
                            "reasons": [latest[k][2] for k in chunk],
                        },
                    )
            else:
                for chunk in _chunks(keys, IN_CHUNK):
                    counts = await conn.execute(
                        select(batch_items.c.key, func.count())
                        .where(
                            batch_items.c.batch_id == batch_id,
                            batch_items.c.key.in_(chunk),
                            batch_items.c.verdict.is_(None),
                        )
                        .group_by(batch_items.c.key)
                    )
                    for key, pending in counts:
                        newly_done += pending
                        by_result[latest[key][1] or ""] += pending
                stamp = self._sqlite_timestamp(now)
                for chunk in _chunks(keys, SQLITE_CHUNK):
                    await conn.exec_driver_sql(
                        _SQLITE_SAVE_RESULT,
                        [(*latest[k], stamp, batch_id, k) for k in chunk],
                    )
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(done=batches.c.done + newly_done, updated_at=now)
            )
            day = now.date()
            await self._add_usage(
                conn, [(row.user_id, day, r, n) for r, n in by_result.items() if r and n]
            )

    async def add_usage(self, rows: list[tuple[str, date, str, int]]) -> None:
        checked = [
            (check_text(k, "key id"), d, check_text(r, "result"), int(n)) for k, d, r, n in rows
        ]
        if checked:
            async with self._write() as conn:
                await self._add_usage(conn, checked)

    async def _add_usage(
        self, conn: AsyncConnection, rows: list[tuple[str, date, str, int]]
    ) -> None:
        if not rows:
            return
        insert: Any = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = insert(usage_daily)
        stmt = stmt.on_conflict_do_update(
            index_elements=[usage_daily.c.key_id, usage_daily.c.day, usage_daily.c.result],
            set_={"count": usage_daily.c["count"] + stmt.excluded["count"]},
        )
        await conn.execute(
            stmt, [{"key_id": k, "day": d, "result": r, "count": n} for k, d, r, n in rows]
        )

    async def usage(
        self, *, since: date, until: date | None = None, key_id: str | None = None
    ) -> list[UsageRow]:
        query = select(
            usage_daily.c.key_id, usage_daily.c.day, usage_daily.c.result, usage_daily.c["count"]
        ).where(usage_daily.c.day >= since)
        if until is not None:
            query = query.where(usage_daily.c.day <= until)
        if key_id is not None:
            if not _storable(key_id):
                return []
            query = query.where(usage_daily.c.key_id == key_id)
        query = query.order_by(usage_daily.c.day, usage_daily.c.key_id, usage_daily.c.result)
        async with self._read() as conn:
            rows = await conn.execute(query)
            return [UsageRow(r[0], r[1], r[2], int(r[3])) for r in rows]

    async def schedule_retries(self, batch_id: str, retries: list[tuple[str, datetime]]) -> None:
        latest = {key: check_when(when, "retry_at") for key, when in retries}
        if not _storable(batch_id):
            raise NotFoundError(f"no batch with id {batch_id!r}")
        params = [
            {"b_batch": batch_id, "b_key": key, "b_retry": when, "b_now": None}
            for key, when in latest.items()
            if _storable(key)
        ]
        async with self._write() as conn:
            exists = (
                await conn.execute(select(batches.c.id).where(batches.c.id == batch_id))
            ).first()
            if exists is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            if not params:
                return
            now = utcnow()
            for entry in params:
                entry["b_now"] = now
            statement = (
                update(batch_items)
                .where(
                    batch_items.c.batch_id == bindparam("b_batch"),
                    batch_items.c.key == bindparam("b_key"),
                    batch_items.c.verdict.is_(None),
                )
                .values(
                    retry_at=bindparam("b_retry", type_=batch_items.c.retry_at.type),
                    attempts=batch_items.c.attempts + 1,
                    first_try_at=func.coalesce(
                        batch_items.c.first_try_at,
                        bindparam("b_now", type_=batch_items.c.first_try_at.type),
                    ),
                    updated_at=bindparam("b_now", type_=batch_items.c.updated_at.type),
                )
            )
            for chunk in _chunks(params, SQLITE_CHUNK):
                await conn.execute(statement, list(chunk))

    async def next_retry_at(self, batch_id: str) -> datetime | None:
        if not _storable(batch_id):
            return None
        async with self._read() as conn:
            value: datetime | None = (
                await conn.execute(
                    select(func.min(batch_items.c.retry_at)).where(
                        batch_items.c.batch_id == batch_id,
                        batch_items.c.verdict.is_(None),
                        batch_items.c.retry_at.is_not(None),
                    )
                )
            ).scalar()
        return value

    async def iter_items(
        self,
        batch_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        result: str | None = None,
        reason: str | None = None,
    ) -> AsyncIterator[BatchItem]:
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must not be negative")
        if limit == 0 or not _storable(batch_id):
            return
        if (result is not None and not _storable(result)) or (
            reason is not None and not _storable(reason)
        ):
            return
        filtered = result is not None or reason is not None
        async with self._read() as conn:
            batch = (
                await conn.execute(
                    select(batches.c.size, batches.c.deleted_at).where(batches.c.id == batch_id)
                )
            ).first()
        if batch is None or batch.deleted_at is not None:
            return
        # Positions are 0..size-1, so the batch is read in windows of READ_CHUNK
        # positions: each query touches at most that many rows whatever plan the
        # database picks (a LIMIT after "position > x" can turn into a sort of the whole
        # batch on PostgreSQL with stale statistics). Without a filter the offset is a
        # position; with one, the first `offset` matching items are counted off.
        remaining = limit
        skip = offset if filtered else 0
        low = 0 if filtered else offset
        while low < batch.size and (remaining is None or remaining > 0):
            high = min(batch.size, low + READ_CHUNK)
            if not filtered and remaining is not None:
                high = min(high, low + remaining)
            query = window_query(batch_id, low, high, result, reason)
            # One short read per window: no transaction stays open while the caller works.
            async with self._read() as conn:
                if skip:
                    count = select(func.count()).select_from(query.order_by(None).subquery())
                    matching = (await conn.execute(count)).scalar_one()
                    if matching <= skip:
                        skip -= matching
                        low = high
                        continue
                rows = (await conn.execute(query)).all()
            if skip:
                rows, skip = rows[skip:], 0
            if remaining is not None:
                rows = rows[:remaining]
                remaining -= len(rows)
            for position, email, verdict, cells in rows:
                yield BatchItem(position, email, load_verdict(verdict), load_cells(cells))
            low = high

    async def counts(self, batch_id: str) -> BatchCounts:
        by_result: dict[str, int] = {}
        by_reason: dict[str, int] = {}
        if not _storable(batch_id):
            return BatchCounts(by_result, by_reason)
        async with self._read() as conn:
            rows = await conn.execute(
                select(batch_items.c.result, batch_items.c.reason, func.count())
                .where(batch_items.c.batch_id == batch_id, batch_items.c.verdict.is_not(None))
                .group_by(batch_items.c.result, batch_items.c.reason)
            )
            for result, reason, count in rows:
                if result is not None:
                    by_result[result] = by_result.get(result, 0) + count
                if reason is not None:
                    by_reason[reason] = by_reason.get(reason, 0) + count
        return BatchCounts(by_result, by_reason)

    # --- webhooks ---

    async def webhooks_due(self, now: datetime) -> list[BatchRecord]:
        check_when(now, "now")
        async with self._read() as conn:
            rows = await conn.execute(
                select(*_BATCH_COLUMNS)
                .where(
                    batches.c.callback_url.is_not(None),
                    batches.c.webhook_delivered_at.is_(None),
                    batches.c.finished_at.is_not(None),
                    batches.c.deleted_at.is_(None),
                    or_(
                        batches.c.webhook_next_at <= now,
                        batches.c.webhook_next_at.is_(None) & (batches.c.webhook_attempts == 0),
                    ),
                )
                .order_by(batches.c.finished_at, batches.c.id)
            )
            return [_batch(row) for row in rows]

    async def webhook_result(
        self, batch_id: str, *, delivered: bool, next_at: datetime | None
    ) -> None:
        if next_at is not None:
            check_when(next_at, "next_at")
        if not _storable(batch_id):
            raise NotFoundError(f"no batch with id {batch_id!r}")
        now = utcnow()
        values: dict[str, Any] = {"webhook_attempts": batches.c.webhook_attempts + 1}
        if delivered:
            values.update(webhook_delivered_at=now, webhook_next_at=None)
        else:
            values.update(webhook_next_at=next_at)
        async with self._write() as conn:
            result = await conn.execute(
                update(batches).where(batches.c.id == batch_id).values(**values)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no batch with id {batch_id!r}")


_FAULTS = (SQLAlchemyError, sqlite3.Error, OSError)


def _above_debug(record: logging.LogRecord) -> bool:
    return record.levelno > logging.DEBUG


# aiosqlite logs every call with its arguments at DEBUG: statement parameters, that is
# addresses. Drop those records whatever level the operator's logging is set to.
logging.getLogger("aiosqlite").addFilter(_above_debug)


def _storage_error(exc: BaseException) -> StorageError:
    """A ``StorageError`` naming the failure by its first line, without parameters.

    Raised ``from None``: the driver's error must not be printed with it (a logged
    traceback shows the whole chain), since PostgreSQL's DETAIL line quotes the failing
    row ("Failing row contains (..., someone@example.com, ...)"), which hide_parameters
    does not cover. It stays reachable as ``__context__`` for a debugger.
    """
    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig  # the driver's own message, without SQLAlchemy's [SQL: ...] lines
    lines = str(cause).strip().splitlines()
    return StorageError(f"database error: {type(cause).__name__}: {lines[0] if lines else ''}")


def _create_private(path: Path) -> None:
    """Create the SQLite file (and its folder) owner-only, before SQLite opens it.

    SQLite would create it 0644 (less the umask); its ``-wal``, ``-shm`` and journal
    files copy the database file's mode, so they are 0600 too. An existing file is
    left as it is: its owner may have chosen its mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)  # an empty file is an empty SQLite database


def _enable_wal(cursor: Any) -> None:
    """Switch to WAL, retrying while another connection holds the file.

    Changing the journal mode does not go through SQLite's busy handler: when several
    processes open a fresh database at once (API and workers starting together) the
    losers get "database is locked" at once, so wait here as the busy timeout would.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _install_sqlite_hooks(engine: AsyncEngine, path: Path | None) -> None:
    """Pragmas on every new connection; explicit BEGIN so writers can ask for IMMEDIATE.

    Before a connection to a file opens, the file is created owner-only if missing.
    """

    if path is not None:

        @event.listens_for(engine.sync_engine, "do_connect")
        def _before_connect(*_args: Any) -> None:
            _create_private(path)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below emit BEGIN, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

"""The schema as SQLAlchemy Core tables: the one definition the SQL store queries.

The migrations in ``storage/migrations/versions`` must produce exactly this schema;
tests/integration/test_storage_migrations.py compares the two on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "UTCDateTime",
    "api_keys",
    "batch_items",
    "batches",
    "metadata",
    "mx_connects",
    "mx_lanes",
    "mx_leases",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored in UTC (``timestamptz`` on PostgreSQL, text on SQLite); read back aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)  # SQLite keeps text; everything in it is UTC
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - drivers return datetimes
            raise TypeError(f"unexpected timestamp value {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("plan", String(16), nullable=False),
    Column("prefix", String(16), nullable=False),
    # hex SHA-256 of the secret; unique, so the lookup on it is indexed
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("api_keys.id"), nullable=False, index=True),
    Column("name", Text, nullable=True),
    Column("size", Integer, nullable=False),
    Column("done", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("deleted_at", UTCDateTime, nullable=True),
    # the webhook called on completion (v0002)
    Column("callback_url", Text, nullable=True),
    Column("webhook_attempts", Integer, nullable=False, server_default=text("0")),
    Column("webhook_next_at", UTCDateTime, nullable=True),
    Column("webhook_delivered_at", UTCDateTime, nullable=True),
)

# Resuming after a restart: unfinished batches, oldest first.
Index(
    "ix_batches_unfinished",
    batches.c.created_at,
    postgresql_where=batches.c.finished_at.is_(None),
    sqlite_where=batches.c.finished_at.is_(None),
)

# The webhook sender's question: "finished batches whose callback is not delivered yet".
_WEBHOOK_PENDING = batches.c.callback_url.is_not(None) & batches.c.webhook_delivered_at.is_(None)
Index(
    "ix_batches_webhooks",
    batches.c.finished_at,
    postgresql_where=_WEBHOOK_PENDING,
    sqlite_where=_WEBHOOK_PENDING,
)

batch_items = Table(
    "batch_items",
    metadata,
    Column(
        "batch_id",
        String(36),
        ForeignKey("batches.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),
    Column("email", Text, nullable=False),
    Column("verdict", Text, nullable=True),  # the single-validate data object, JSON
    Column("updated_at", UTCDateTime, nullable=False),
    # v0002: the batch engine's columns.
    # The de-duplication key (the normalised address); the store always sets it.
    Column("key", Text, nullable=True),
    Column("result", String(16), nullable=True),  # the verdict's result, for counts/filters
    Column("reason", String(32), nullable=True),  # the verdict's reason, for counts
    Column("retry_at", UTCDateTime, nullable=True),  # waiting for a retry until then
    Column("attempts", Integer, nullable=False, server_default=text("0")),  # retries done
    Column("first_try_at", UTCDateTime, nullable=True),
    # v0004: the procrastinate job holding the item (PostgreSQL workers; jobs/cluster.py)
    Column("job_id", BigInteger, nullable=True),
)

# "The next N items of this batch to verify": no verdict, no retry pending, by position.
_TODO = batch_items.c.verdict.is_(None) & batch_items.c.retry_at.is_(None)
Index(
    "ix_batch_items_todo",
    batch_items.c.batch_id,
    batch_items.c.position,
    postgresql_where=_TODO,
    sqlite_where=_TODO,
)

# Items waiting for a retry (only those rows): the due ones by position, the earliest
# retry and how many wait.
_WAITING = batch_items.c.verdict.is_(None) & batch_items.c.retry_at.is_not(None)
Index(
    "ix_batch_items_waiting",
    batch_items.c.batch_id,
    batch_items.c.position,
    postgresql_where=_WAITING,
    sqlite_where=_WAITING,
)
Index(
    "ix_batch_items_retry",
    batch_items.c.batch_id,
    batch_items.c.retry_at,
    postgresql_where=_WAITING,
    sqlite_where=_WAITING,
)

# Every position of a key (results and retries are saved by key).
Index("ix_batch_items_key", batch_items.c.batch_id, batch_items.c.key)

# v0003: per-MX lanes held in the database, so a cluster's workers share the caps
# (jobs/limits_pg.py). Created on both dialects; only PostgreSQL uses them.

# One row per MX host: the lane's lock (SELECT ... FOR UPDATE), its pause, its RCPT bucket.
mx_lanes = Table(
    "mx_lanes",
    metadata,
    Column("lane", Text, primary_key=True),
    Column("paused_until", UTCDateTime, nullable=True),
    Column("rcpt_tokens", Float, nullable=True),  # NULL: a full bucket
    Column("rcpt_refilled", UTCDateTime, nullable=True),
    # RCPTs granted since rcpt_window_at (a window of a few seconds): the recent rate
    Column("rcpt_window_at", UTCDateTime, nullable=True),
    Column("rcpt_window", Integer, nullable=False, server_default=text("0")),
)

# One row per SMTP session held: it counts until it is released or expires_at passes.
mx_leases = Table(
    "mx_leases",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("lane", Text, nullable=False),
    Column("holder", Text, nullable=False),  # the worker: host:pid:random
    Column("started_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
Index("ix_mx_leases_lane", mx_leases.c.lane, mx_leases.c.expires_at)

# The connects of the last minute, per lane (a sliding log; older rows are deleted).
mx_connects = Table(
    "mx_connects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("lane", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
)
Index("ix_mx_connects_lane", mx_connects.c.lane, mx_connects.c.at)

# Items held by a job (workers on PostgreSQL): which job holds them, and is it alive.
_HELD = batch_items.c.verdict.is_(None) & batch_items.c.job_id.is_not(None)
Index("ix_batch_items_job", batch_items.c.job_id, postgresql_where=_HELD, sqlite_where=_HELD)
# ... and the items no job was given yet (the sweep's "planning stopped" question).
_UNPLANNED = batch_items.c.verdict.is_(None) & batch_items.c.job_id.is_(None)
Index(
    "ix_batch_items_unplanned",
    batch_items.c.batch_id,
    batch_items.c.position,
    postgresql_where=_UNPLANNED,
    sqlite_where=_UNPLANNED,
)

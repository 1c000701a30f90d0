"""batch workers on PostgreSQL: procrastinate's schema, and which job holds each item

On PostgreSQL this installs procrastinate's schema (its tables ``procrastinate_jobs``,
``procrastinate_workers``, ``procrastinate_events``, ``procrastinate_periodic_defers``,
their types, functions and triggers) in the same database as mailvet's own tables,
from the copy of procrastinate 3.10.0's ``schema.sql`` kept next to these migrations
(``procrastinate_3.10.0.sql``): a revision always installs the same schema, whatever
procrastinate version is installed later. On SQLite there is no job queue (batches
run in-process) and that step is skipped.

Both dialects gain ``batch_items.job_id``: the procrastinate job that holds the item
(a plan or probe job, or the retry scheduled for it), set in the same transaction as
the job is deferred (jobs/cluster_store.py); an item whose job is no longer queued nor
running is planned again. NULL on SQLite, and before an item is planned. Two partial
indexes answer the sweep's questions cheaply: the items a job holds (by job) and the
items no job was given yet (by batch and position).

Upgrading procrastinate: procrastinate ships each schema change as SQL files in
``procrastinate/sql/migrations/`` named by version (``03.04.00_01_pre_...sql``, then
``..._50_post_...sql`` after the new code is deployed). For a new version, add one
Alembic revision per pre/post step that ``op.execute``s the new files in order (copied
next to this one, like the schema here, so a revision never changes), and pin the new
procrastinate version in pyproject.toml at the same time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:40:00
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"  # after i9-limits' 0003 (merged here); the lead re-chains
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROCRASTINATE_SCHEMA = Path(__file__).resolve().parent.parent / "procrastinate_3.10.0.sql"
_HELD = "verdict IS NULL AND job_id IS NOT NULL"
_UNPLANNED = "verdict IS NULL AND job_id IS NULL"

_DROP_PROCRASTINATE = """
DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,
    procrastinate_jobs, procrastinate_workers CASCADE;
DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS signature
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = current_schema() AND starts_with(p.proname, 'procrastinate_')
    LOOP
        EXECUTE 'DROP FUNCTION ' || f.signature || ' CASCADE';
    END LOOP;
END;
$$;
DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,
    procrastinate_job_status CASCADE;
"""


def upgrade() -> None:
    op.add_column("batch_items", sa.Column("job_id", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_batch_items_job",
        "batch_items",
        ["job_id"],
        postgresql_where=sa.text(_HELD),
        sqlite_where=sa.text(_HELD),
    )
    op.create_index(
        "ix_batch_items_unplanned",
        "batch_items",
        ["batch_id", "position"],
        postgresql_where=sa.text(_UNPLANNED),
        sqlite_where=sa.text(_UNPLANNED),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # the driver's own execute (the file is plpgsql with ':' in it), which formats
        # parameters: '%' doubled, as procrastinate's own SchemaManager does
        schema = PROCRASTINATE_SCHEMA.read_text(encoding="utf-8")
        bind.exec_driver_sql(schema.replace("%", "%%"))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(_DROP_PROCRASTINATE)
    op.drop_index("ix_batch_items_unplanned", table_name="batch_items")
    op.drop_index("ix_batch_items_job", table_name="batch_items")
    op.drop_column("batch_items", "job_id")

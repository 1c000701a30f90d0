"""batch engine: de-duplication keys, results, retries, webhooks

Items gain ``key`` (existing rows: their email), ``result`` and ``reason`` (existing
verdicts: read from their JSON), ``retry_at``, ``attempts`` and ``first_try_at``;
batches gain ``callback_url`` and the webhook's delivery state. The pending index
gives way to one over items neither done nor waiting for a retry, plus two over the
items waiting (by position, by retry time), one by key, and one for the webhook sender.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 07:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TODO = "verdict IS NULL AND retry_at IS NULL"
_WAITING = "verdict IS NULL AND retry_at IS NOT NULL"
_WEBHOOK_PENDING = "callback_url IS NOT NULL AND webhook_delivered_at IS NULL"


def upgrade() -> None:
    op.add_column("batches", sa.Column("callback_url", sa.Text(), nullable=True))
    op.add_column(
        "batches",
        sa.Column("webhook_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("batches", sa.Column("webhook_next_at", sa.DateTime(timezone=True)))
    op.add_column("batches", sa.Column("webhook_delivered_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_batches_webhooks",
        "batches",
        ["finished_at"],
        postgresql_where=sa.text(_WEBHOOK_PENDING),
        sqlite_where=sa.text(_WEBHOOK_PENDING),
    )

    op.add_column("batch_items", sa.Column("key", sa.Text(), nullable=True))
    op.add_column("batch_items", sa.Column("result", sa.String(16), nullable=True))
    op.add_column("batch_items", sa.Column("reason", sa.String(32), nullable=True))
    op.add_column("batch_items", sa.Column("retry_at", sa.DateTime(timezone=True)))
    op.add_column(
        "batch_items",
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("batch_items", sa.Column("first_try_at", sa.DateTime(timezone=True)))

    # Existing items: each address is its own key; results and reasons from the verdicts.
    # (Verdicts are JSON objects as text, written by storage.common.dump_verdict.)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE batch_items SET key = email, "
            "result = CASE WHEN left(verdict, 1) = '{' "
            "THEN left(CAST(verdict AS jsonb) ->> 'result', 16) END, "
            "reason = CASE WHEN left(verdict, 1) = '{' "
            "THEN left(CAST(verdict AS jsonb) ->> 'reason', 32) END"
        )
    else:
        op.execute(
            "UPDATE batch_items SET key = email, "
            "result = CASE WHEN json_valid(verdict) AND json_type(verdict) = 'object' "
            "THEN substr(CAST(json_extract(verdict, '$.result') AS TEXT), 1, 16) END, "
            "reason = CASE WHEN json_valid(verdict) AND json_type(verdict) = 'object' "
            "THEN substr(CAST(json_extract(verdict, '$.reason') AS TEXT), 1, 32) END"
        )

    op.drop_index("ix_batch_items_pending", table_name="batch_items")
    op.create_index(
        "ix_batch_items_todo",
        "batch_items",
        ["batch_id", "position"],
        postgresql_where=sa.text(_TODO),
        sqlite_where=sa.text(_TODO),
    )
    op.create_index(
        "ix_batch_items_waiting",
        "batch_items",
        ["batch_id", "position"],
        postgresql_where=sa.text(_WAITING),
        sqlite_where=sa.text(_WAITING),
    )
    op.create_index(
        "ix_batch_items_retry",
        "batch_items",
        ["batch_id", "retry_at"],
        postgresql_where=sa.text(_WAITING),
        sqlite_where=sa.text(_WAITING),
    )
    op.create_index("ix_batch_items_key", "batch_items", ["batch_id", "key"])


def downgrade() -> None:
    op.drop_index("ix_batch_items_key", table_name="batch_items")
    op.drop_index("ix_batch_items_retry", table_name="batch_items")
    op.drop_index("ix_batch_items_waiting", table_name="batch_items")
    op.drop_index("ix_batch_items_todo", table_name="batch_items")
    op.create_index(
        "ix_batch_items_pending",
        "batch_items",
        ["batch_id", "position"],
        postgresql_where=sa.text("verdict IS NULL"),
        sqlite_where=sa.text("verdict IS NULL"),
    )
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): no index names these any more.
    for column in ("first_try_at", "attempts", "retry_at", "reason", "result", "key"):
        op.drop_column("batch_items", column)
    op.drop_index("ix_batches_webhooks", table_name="batches")
    for column in ("webhook_delivered_at", "webhook_next_at", "webhook_attempts", "callback_url"):
        op.drop_column("batches", column)

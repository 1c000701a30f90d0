"""per-MX lanes shared by a cluster: mx_lanes, mx_leases, mx_connects

``mx_lanes`` (a row per MX host: the lane's lock row, its pause, its RCPT token bucket),
``mx_leases`` (a row per SMTP session held, until released or expired) and
``mx_connects`` (the last minute's connects per lane). Used by ``jobs/limits_pg.py`` on
PostgreSQL; created on SQLite too, where nothing uses them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 09:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mx_lanes",
        sa.Column("lane", sa.Text(), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rcpt_tokens", sa.Float(), nullable=True),
        sa.Column("rcpt_refilled", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rcpt_window_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rcpt_window", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("lane", name="pk_mx_lanes"),
    )
    op.create_table(
        "mx_leases",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("lane", sa.Text(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mx_leases"),
    )
    op.create_index("ix_mx_leases_lane", "mx_leases", ["lane", "expires_at"])
    op.create_table(
        "mx_connects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lane", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mx_connects"),
    )
    op.create_index("ix_mx_connects_lane", "mx_connects", ["lane", "at"])


def downgrade() -> None:
    op.drop_index("ix_mx_connects_lane", table_name="mx_connects")
    op.drop_table("mx_connects")
    op.drop_index("ix_mx_leases_lane", table_name="mx_leases")
    op.drop_table("mx_leases")
    op.drop_table("mx_lanes")

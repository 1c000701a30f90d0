"""dashboard: admin keys, and verdicts per key per day per result

``api_keys`` gains ``admin`` (may manage keys in the dashboard; existing keys: not
admin; ``mailvet keys create --admin`` or ``mailvet serve --dev-key-file`` make one).
``usage_daily`` counts verdicts per key, per UTC day, per result, as they are made
(real-time ones flushed from memory every few seconds, batch ones in the transaction
that saves them). No foreign key: usage is history, kept as it was counted.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "usage_daily",
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "day", "result", name="pk_usage_daily"),
    )
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])


def downgrade() -> None:
    op.drop_index("ix_usage_daily_day", table_name="usage_daily")
    op.drop_table("usage_daily")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("admin")

"""uploaded columns: a batch's file header, each item's other cells

Batches uploaded through the dashboard keep the file's columns so that their downloads
give them back: ``batches.upload`` holds the header, the address's column, the format
and the delimiter (JSON); ``batch_items.cells`` each row's other cells (a JSON array).
Both are NULL for batches made through the API.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("upload", sa.Text(), nullable=True))
    op.add_column("batch_items", sa.Column("cells", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("batch_items", "cells")
    op.drop_column("batches", "upload")

"""Run the Alembic migrations shipped in ``storage/migrations`` without an alembic.ini.

``upgrade_head(connection)`` is meant for ``AsyncConnection.run_sync``: it upgrades the
schema on the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade_head"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations, built in code."""
    config = Config()
    # ConfigParser interpolates "%": escape it in the path.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_head(connection: Connection) -> None:
    """``alembic upgrade head`` on ``connection`` (already in a transaction)."""
    command.upgrade(alembic_config(connection), "head")

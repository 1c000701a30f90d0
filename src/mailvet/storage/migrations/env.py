"""Alembic environment for mailvet: runs on the connection handed over in
``config.attributes["connection"]`` (see ``mailvet.storage.migrations_runner``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mailvet.storage.tables import metadata

config = context.config
target_metadata = metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "mailvet migrations run through mailvet.storage (store.migrate() or "
            "`mailvet db upgrade`), which passes a connection in config.attributes"
        )
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported")
    run_migrations(connection)


main()

"""The Alembic migrations (storage/migrations) produce exactly the schema in storage/tables.py.

On SQLite and on PostgreSQL: ``compare_metadata`` finds no difference between the
migrated database and the metadata, and the indexes (partial ones included, which
autogenerate does not compare) are defined the same as by ``metadata.create_all``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, text

from mailvet.storage import open_store
from mailvet.storage.migrations_runner import MIGRATIONS_DIR, alembic_config
from mailvet.storage.sql import SqlStore
from mailvet.storage.tables import metadata
from mailvet.testing.postgres import PostgresServer

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _url(request: pytest.FixtureRequest, backend: str, tmp_path: Path, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / name}"
    url: str = request.getfixturevalue("pg_fresh_url")
    return url


def _sync_url(url: str) -> str:
    """A synchronous driver URL for inspection (pysqlite, psycopg in sync mode)."""
    return url.replace("sqlite+aiosqlite:", "sqlite:").replace("sqlite:", "sqlite+pysqlite:", 1)


def _diffs(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _index_definitions(conn: Connection) -> dict[str, str]:
    """Index name -> normalised definition, straight from the database catalogue."""
    if conn.dialect.name == "sqlite":
        rows = conn.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        )
    else:
        rows = conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
        )
    return {
        name: re.sub(r"[\s\"()]+", " ", sql).strip().lower()
        for name, sql in rows
        if name != "alembic_version_pkc"
    }


def _new_pg_database(server: PostgresServer) -> str:
    """Another empty database on the test server (dropped with the server)."""
    import psycopg

    name = f"fresh_{uuid.uuid4().hex}"
    admin = f"host={server.host} port={server.port} user={server.user} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url_for(name)


async def _migrate(url: str) -> str:
    store = open_store(url)
    assert isinstance(store, SqlStore)
    try:
        await store.migrate()
        return store.url.render_as_string(hide_password=False)
    finally:
        await store.close()


def test_one_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (MIGRATIONS_DIR / "env.py").is_file()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_migrated_schema_equals_metadata(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    migrated_url = await _migrate(_url(request, backend, tmp_path, "migrated.db"))
    engine = create_engine(_sync_url(migrated_url))
    try:
        with engine.connect() as conn:
            assert _diffs(conn) == []
            assert set(inspect(conn).get_table_names()) == {
                "alembic_version",
                *metadata.tables,
            }
            current = MigrationContext.configure(conn).get_current_heads()
            assert current == tuple(ScriptDirectory.from_config(alembic_config()).get_heads())
            migrated_indexes = _index_definitions(conn)
    finally:
        engine.dispose()

    # A database built by create_all straight from the metadata has the same indexes.
    if backend == "sqlite":
        fresh_url = f"sqlite+pysqlite:///{tmp_path / 'fresh.db'}"
    else:
        fresh_url = _sync_url(_new_pg_database(request.getfixturevalue("pg_server")))
    fresh = create_engine(fresh_url)
    try:
        with fresh.begin() as conn:
            metadata.create_all(conn)
        with fresh.connect() as conn:
            assert _diffs(conn) == []
            assert _index_definitions(conn) == migrated_indexes
    finally:
        fresh.dispose()
    assert "ix_batch_items_pending" in migrated_indexes
    assert "verdict is null" in migrated_indexes["ix_batch_items_pending"]
    assert "finished_at is null" in migrated_indexes["ix_batches_unfinished"]


async def test_the_comparison_would_see_a_difference(tmp_path: Path) -> None:
    """Negative control: a schema that differs from the metadata is reported."""
    url = await _migrate(f"sqlite:///{tmp_path / 'drift.db'}")
    engine = create_engine(_sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE batches ADD COLUMN extra TEXT"))
            conn.execute(text("DROP INDEX ix_batches_user_id"))
        with engine.connect() as conn:
            kinds = sorted(diff[0] for diff in _diffs(conn))
    finally:
        engine.dispose()
    assert kinds == ["add_index", "remove_column"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_migrate_twice_and_downgrade(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    url = _url(request, backend, tmp_path, "twice.db")
    await _migrate(url)
    sync_url = _sync_url(await _migrate(url))
    engine = create_engine(sync_url)
    try:
        from alembic import command

        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    await _migrate(url)  # and back up again
    engine = create_engine(sync_url)
    try:
        with engine.connect() as conn:
            assert _diffs(conn) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_migrations_do_not_collide(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    """Several processes starting at once (API + workers) all migrate; one wins, all work."""
    url = _url(request, backend, tmp_path, "race.db")
    stores = [open_store(url) for _ in range(4)]
    try:
        await asyncio.gather(*(store.migrate() for store in stores))
        for store in stores:
            assert await store.list_keys() == []
    finally:
        for store in stores:
            await store.close()

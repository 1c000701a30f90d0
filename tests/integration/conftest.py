# ==== storage: throwaway PostgreSQL (owner: storage) ==== BEGIN ====
# Fixtures: pg_server (session; mailvet.testing.postgres.PostgresServer),
# pg_url (session; URL of the server's default test database),
# pg_fresh_url (function; URL of a new empty database, dropped afterwards),
# pg_storage_engine (module; a migrated database of the module's own),
# store_url (function, parametrised indirectly: "memory", "sqlite" or "postgres").
# Without PostgreSQL binaries: skip, or fail when CI=true (never skip under CI).
import os as _storage_os
from collections.abc import Iterator as _StorageIterator
from pathlib import Path as _StoragePath

import pytest as _storage_pytest
from sqlalchemy import Engine as _StorageEngine

from mailvet.testing import postgres as _storage_pg


@_storage_pytest.fixture(scope="session")
def pg_server() -> _StorageIterator[_storage_pg.PostgresServer]:
    """A throwaway PostgreSQL server for the whole session (about a second to start)."""
    if _storage_pg.find_postgres_bin() is None:
        message = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found; "
            "install them with scripts/ensure_postgres.sh"
        )
        if _storage_os.environ.get("CI") == "true":
            _storage_pytest.fail(message)
        _storage_pytest.skip(message)
    with _storage_pg.postgres_server() as server:
        yield server


@_storage_pytest.fixture(scope="session")
def pg_url(pg_server: _storage_pg.PostgresServer) -> str:
    """postgresql+psycopg://... of the session's test database (shared by tests)."""
    return pg_server.url


@_storage_pytest.fixture
def pg_fresh_url(pg_server: _storage_pg.PostgresServer) -> _StorageIterator[str]:
    """postgresql+psycopg://... of a new, empty database for this test only."""
    with pg_server.fresh_database("t") as url:
        yield url


@_storage_pytest.fixture(scope="module")
def pg_storage_engine(
    pg_server: _storage_pg.PostgresServer,
) -> _StorageIterator[_StorageEngine]:
    """A migrated database of the test module's own on the session's server (store_url
    empties it for each test)."""
    from sqlalchemy import create_engine

    from mailvet.storage.migrations_runner import upgrade_head

    engine = create_engine(pg_server.create_database("storage"))
    with engine.begin() as conn:
        upgrade_head(conn)
    yield engine
    engine.dispose()


@_storage_pytest.fixture
def store_url(request: _storage_pytest.FixtureRequest, tmp_path: _StoragePath) -> str:
    """The URL of an empty store on the backend the test is parametrised with, indirectly:
    ``"memory"``, ``"sqlite"`` (a file in tmp_path) or ``"postgres"`` (pg_storage_engine's
    database with every table emptied: a fresh database per test costs up to a second,
    emptying the module's one milliseconds)."""
    from sqlalchemy import text

    from mailvet.storage.tables import metadata

    backend: str = request.param
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'mailvet.db'}"
    assert backend == "postgres", backend
    engine: _StorageEngine = request.getfixturevalue("pg_storage_engine")
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables}"))
    return engine.url.render_as_string(hide_password=False)


# ==== storage: throwaway PostgreSQL (owner: storage) ==== END ====

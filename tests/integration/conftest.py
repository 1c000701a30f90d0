# ==== storage: throwaway PostgreSQL (owner: storage) ==== BEGIN ====
# Fixtures: pg_server (session; mailvet.testing.postgres.PostgresServer),
# pg_url (session; URL of the server's default test database),
# pg_fresh_url (function; URL of a new empty database, dropped afterwards).
# Without PostgreSQL binaries: skip, or fail when CI=true (never skip under CI).
import os as _storage_os
import uuid as _storage_uuid
from collections.abc import Iterator as _StorageIterator

import pytest as _storage_pytest

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
    import psycopg

    name = f"t_{_storage_uuid.uuid4().hex}"
    admin = f"host={pg_server.host} port={pg_server.port} user={pg_server.user} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.url_for(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ==== storage: throwaway PostgreSQL (owner: storage) ==== END ====

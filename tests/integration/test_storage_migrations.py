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

from mailvet.storage import normalise_url, open_store
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


# procrastinate's tables, installed by v0004 on PostgreSQL only
PROCRASTINATE = {
    "sqlite": set(),
    "postgres": {
        "procrastinate_jobs",
        "procrastinate_workers",
        "procrastinate_events",
        "procrastinate_periodic_defers",
    },
}


def _sync_url(url: str) -> str:
    """A synchronous driver URL for inspection (pysqlite, psycopg in sync mode)."""
    return url.replace("sqlite+aiosqlite:", "sqlite:").replace("sqlite:", "sqlite+pysqlite:", 1)


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    """mailvet's own objects: procrastinate's (v0004, PostgreSQL) are its schema, not ours."""
    return not (name or "").startswith("procrastinate_")


def _diffs(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": _ours})
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
        and not name.startswith("procrastinate_")
        and not name.startswith("idx_procrastinate_")
    }


def _new_pg_database(server: PostgresServer) -> str:
    """Another empty database on the test server (dropped with the server)."""
    return server.create_database("fresh")


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
            tables = set(inspect(conn).get_table_names())
            assert tables == {"alembic_version", *metadata.tables, *PROCRASTINATE[backend]}
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
    assert "ix_batch_items_pending" not in migrated_indexes  # v0002 replaced it
    todo = migrated_indexes["ix_batch_items_todo"]
    assert "batch_id, position where verdict is null and retry_at is null" in todo
    waiting = migrated_indexes["ix_batch_items_waiting"]
    assert "batch_id, position where verdict is null and retry_at is not null" in waiting
    retry = migrated_indexes["ix_batch_items_retry"]
    assert "batch_id, retry_at where verdict is null and retry_at is not null" in retry
    assert "batch_id, key" in migrated_indexes["ix_batch_items_key"]
    webhooks = migrated_indexes["ix_batches_webhooks"]
    assert "callback_url is not null and webhook_delivered_at is null" in webhooks
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


# --- v0001 -> v0002 with data ---

_V1_EMAILS = ["a@x.test", "b@x.test", "a@x.test", "c@x.test", "d@x.test", "e@x.test"]
_V1_VERDICTS: dict[int, dict[str, Any]] = {
    1: {"email": "b@x.test", "result": "deliverable", "reason": "accepted_email", "score": 100},
    3: {"email": "c@x.test", "result": "undeliverable", "reason": "rejected_email", "score": 0},
    5: {"email": "e@x.test", "note": "a verdict without result or reason"},
}


def _fill_v0001(sync_url: str) -> tuple[str, str, str]:
    """A database at revision 0001 holding a key, a batch half done and a finished one.

    Returns the key's id and secret, and the half-done batch's id."""
    from alembic import command
    from sqlalchemy import insert

    from mailvet.storage.common import dump_verdict, hash_secret, new_secret, utcnow
    from mailvet.storage.tables import api_keys, batch_items, batches

    secret = new_secret()
    key_id, batch_id, finished_id = (str(uuid.uuid4()) for _ in range(3))
    now = utcnow()
    engine = create_engine(sync_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
        with engine.begin() as conn:  # only the columns v0001 has
            conn.execute(
                insert(api_keys).values(
                    id=key_id,
                    name="old key",
                    plan="paid",
                    prefix=secret[:11],
                    secret_hash=hash_secret(secret),
                    created_at=now,
                )
            )
            for bid, size, done, finished in [
                (batch_id, len(_V1_EMAILS), len(_V1_VERDICTS), None),
                (finished_id, 1, 1, now),
            ]:
                conn.execute(
                    insert(batches).values(
                        id=bid,
                        user_id=key_id,
                        name="old batch",
                        size=size,
                        done=done,
                        created_at=now,
                        updated_at=now,
                        finished_at=finished,
                    )
                )
            for position, email in enumerate(_V1_EMAILS):
                verdict = _V1_VERDICTS.get(position)
                conn.execute(
                    insert(batch_items).values(
                        batch_id=batch_id,
                        position=position,
                        email=email,
                        verdict=None if verdict is None else dump_verdict(verdict),
                        updated_at=now,
                    )
                )
            conn.execute(
                insert(batch_items).values(
                    batch_id=finished_id,
                    position=0,
                    email="z@x.test",
                    verdict=dump_verdict({"result": "risky", "reason": "catch_all"}),
                    updated_at=now,
                )
            )
            assert MigrationContext.configure(conn).get_current_heads() == ("0001",)
    finally:
        engine.dispose()
    return key_id, secret, batch_id


async def _answers(store: Any, user_id: str, batch_id: str) -> dict[str, Any]:
    """What the store tells about a batch, without ids and timestamps."""
    from datetime import UTC, datetime

    record = await store.get_batch(user_id, batch_id)
    assert record is not None
    work = await store.next_work(batch_id, 10, datetime.now(UTC))
    return {
        "record": (record.size, record.done, record.callback_url, record.retry_waiting),
        "items": [(i.position, i.email, i.verdict) async for i in store.iter_items(batch_id)],
        "deliverable": [i.position async for i in store.iter_items(batch_id, result="deliverable")],
        "counts": await store.counts(batch_id),
        "work": [(w.key, w.email, w.positions, w.attempts, w.first_try_at) for w in work],
        "next_retry_at": await store.next_retry_at(batch_id),
    }


@pytest.mark.parametrize("backend", BACKENDS)
async def test_v0001_data_migrates_and_answers_as_fresh(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    from mailvet.storage import BatchCounts, Plan

    url = _url(request, backend, tmp_path, "old.db")
    key_id, secret, batch_id = _fill_v0001(_sync_url(normalise_url(url)))
    await _migrate(url)

    store = open_store(url)
    try:
        key = await store.authenticate(secret)
        assert key is not None and key.id == key_id
        migrated = await _answers(store, key_id, batch_id)
        assert await store.unfinished_batches() == [batch_id]
        assert await store.list_batches(key_id) != []
    finally:
        await store.close()

    # Old rows: each address its own key; result and reason read from the verdicts.
    assert migrated["record"] == (6, 3, None, 0)
    assert migrated["counts"] == BatchCounts(
        by_result={"deliverable": 1, "undeliverable": 1},
        by_reason={"accepted_email": 1, "rejected_email": 1},
    )
    assert migrated["deliverable"] == [1]
    assert migrated["work"] == [
        ("a@x.test", "a@x.test", (0, 2), 0, None),
        ("d@x.test", "d@x.test", (4,), 0, None),
    ]

    # The same batch made on a fresh database answers the same.
    if backend == "sqlite":
        fresh = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    else:
        fresh = open_store(_new_pg_database(request.getfixturevalue("pg_server")))
    try:
        await fresh.migrate()
        fresh_key, _ = await fresh.create_key("new key", Plan.PAID)
        fresh_batch = await fresh.create_batch(fresh_key.id, "old batch", list(_V1_EMAILS))
        await fresh.save_results(
            fresh_batch.id, [(_V1_EMAILS[p], verdict) for p, verdict in _V1_VERDICTS.items()]
        )
        assert await _answers(fresh, fresh_key.id, fresh_batch.id) == migrated
    finally:
        await fresh.close()

    # The migrated database works on: results saved by key reach every position.
    store = open_store(url)
    try:
        verdict = {"result": "risky", "reason": "catch_all"}
        await store.save_results(batch_id, [("a@x.test", verdict)])
        record = await store.get_batch(key_id, batch_id)
        assert record is not None and record.done == 5
        assert (await store.counts(batch_id)).by_result == {
            "deliverable": 1,
            "undeliverable": 1,
            "risky": 2,
        }
    finally:
        await store.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_downgrade_to_v0001_keeps_the_data(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    from alembic import command

    url = _url(request, backend, tmp_path, "down.db")
    sync_url = _sync_url(normalise_url(url))
    _, _, batch_id = _fill_v0001(sync_url)
    await _migrate(url)
    engine = create_engine(sync_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_heads() == ("0001",)
            columns = {c["name"] for c in inspect(conn).get_columns("batch_items")}
            assert columns == {"batch_id", "position", "email", "verdict", "updated_at"}
            rows = conn.execute(
                text("SELECT position, email FROM batch_items WHERE batch_id = :b ORDER BY 1"),
                {"b": batch_id},
            ).all()
            indexes = _index_definitions(conn)
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == list(enumerate(_V1_EMAILS))
    assert "verdict is null" in indexes["ix_batch_items_pending"]
    await _migrate(url)  # and up again

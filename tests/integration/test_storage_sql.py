"""The Store contract, run over memory, SQLite (storage/sql.py) and PostgreSQL.

One set of behavioural tests, parametrised over the backends, so the in-memory store
the API tests use behaves exactly like the durable ones.
"""

from __future__ import annotations

import asyncio
import hmac
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from mailvet.storage import (
    MemoryStore,
    NotFoundError,
    Plan,
    StorageError,
    Store,
    describe_url,
    normalise_url,
    open_store,
)
from mailvet.storage.common import hash_secret
from mailvet.storage.migrations_runner import upgrade_head
from mailvet.storage.sql import SqlStore
from mailvet.testing.postgres import PostgresServer

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
DURABLE_BACKENDS = BACKENDS[1:]

Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(scope="module")
def pg_storage_engine(pg_server: PostgresServer) -> Iterator[Engine]:
    """A migrated database of this module's own on the test server (emptied per test)."""
    import psycopg

    name = f"storage_{uuid.uuid4().hex}"
    admin = f"host={pg_server.host} port={pg_server.port} user={pg_server.user} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(pg_server.url_for(name))
    with engine.begin() as conn:
        upgrade_head(conn)
    yield engine
    engine.dispose()


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    backend: str = request.param
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'mailvet.db'}"
    # A fresh database per test costs up to a second; emptying a shared one, milliseconds.
    engine: Engine = request.getfixturevalue("pg_storage_engine")
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE batch_items, batches, api_keys"))
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
async def open_new(store_url: str) -> AsyncIterator[Opener]:
    """Opens (and migrates) a store on the test's database; closes them all at the end."""
    opened: list[Store] = []

    async def opener() -> Store:
        store = open_store(store_url)
        await store.migrate()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_new: Opener) -> Store:
    return await open_new()


def parametrize_backends(backends: list[Any] = BACKENDS) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("store_url", backends, indirect=True)


# --- URLs ---


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u:p@h:5433/db", "postgresql+psycopg://u:p@h:5433/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_normalise_url(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "nonsense", "http://x"])
def test_unsupported_url(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_open_store_picks_the_implementation(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    sqlite = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(sqlite, SqlStore) and sqlite.dialect == "sqlite"
    postgres = open_store("postgresql://u@127.0.0.1:9/db")
    assert isinstance(postgres, SqlStore) and postgres.dialect == "postgresql"
    assert postgres.url.drivername == "postgresql+psycopg"


async def test_sqlite_connection_settings(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'sub' / 'dir' / 'm.db'}")
    assert isinstance(store, SqlStore)
    try:
        await store.migrate()  # creates the missing directories
        async with store.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() >= 1000
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
    finally:
        await store.close()


async def test_sqlite_in_memory_url_works() -> None:
    store = open_store("sqlite://")
    try:
        await store.migrate()
        key, secret = await store.create_key("k", Plan.FREE)
        assert await store.authenticate(secret) == key
    finally:
        await store.close()


# --- keys ---


@parametrize_backends()
async def test_keys_create_authenticate_list(store: Store) -> None:
    assert await store.list_keys() == []
    first, first_secret = await store.create_key("first", Plan.FREE)
    second, second_secret = await store.create_key("second", Plan.PAID)
    assert first_secret.startswith("mv_") and len(first_secret) == 3 + 43
    assert first_secret != second_secret
    assert first.prefix == first_secret[: len(first.prefix)] and len(first.prefix) < 16
    assert first.plan is Plan.FREE and second.plan is Plan.PAID
    assert first.created_at.tzinfo is UTC and first.revoked_at is None

    assert await store.authenticate(first_secret) == first
    assert await store.authenticate(second_secret) == second
    for wrong in ["", "mv_", first_secret[:-1], first_secret + "A", first.prefix, first.id]:
        assert await store.authenticate(wrong) is None
    assert await store.list_keys() == [first, second]


@parametrize_backends()
async def test_revoke_by_id(store: Store) -> None:
    key, secret = await store.create_key("k", Plan.PAID)
    other, other_secret = await store.create_key("other", Plan.PAID)
    assert await store.revoke_key(key.id) is True
    assert await store.authenticate(secret) is None
    assert await store.authenticate(other_secret) == other
    assert await store.revoke_key(key.id) is False  # already revoked
    assert await store.revoke_key("no-such-key") is False
    keys = {k.id: k for k in await store.list_keys()}
    revoked_at = keys[key.id].revoked_at
    assert revoked_at is not None and revoked_at.tzinfo is UTC
    assert keys[other.id].revoked_at is None


@parametrize_backends()
async def test_revoke_by_prefix_only_when_unique(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = iter(["mv_SAME" + "a" * 40, "mv_SAME" + "b" * 40, "mv_othr" + "c" * 40])
    monkeypatch.setattr(sys.modules[type(store).__module__], "new_secret", lambda: next(secrets))
    a, a_secret = await store.create_key("a", Plan.FREE)
    b, b_secret = await store.create_key("b", Plan.FREE)
    c, c_secret = await store.create_key("c", Plan.FREE)
    assert a.prefix != b.prefix
    assert await store.revoke_key("mv_SAME") is False  # two keys: ambiguous
    assert await store.revoke_key("mv_") is False  # too short to name a key
    assert await store.revoke_key("mv_%") is False  # no LIKE wildcards
    assert await store.revoke_key("mv_SAME%") is False
    assert await store.authenticate(a_secret) == a
    assert await store.revoke_key(a.prefix) is True
    assert await store.authenticate(a_secret) is None
    assert await store.authenticate(b_secret) == b
    # now only b is live with that start, so the short prefix is unique
    assert await store.revoke_key("mv_SAME") is True
    assert await store.authenticate(b_secret) is None
    assert await store.revoke_key(f"  {c.prefix}  ") is True
    assert await store.authenticate(c_secret) is None


@parametrize_backends()
async def test_only_the_hash_of_a_secret_is_stored(store: Store, store_url: str) -> None:
    key, secret = await store.create_key("k", Plan.PAID)
    await store.authenticate(secret)
    digest = hash_secret(secret)
    if isinstance(store, MemoryStore):
        dump = repr(vars(store))
    elif store.dialect == "sqlite":  # type: ignore[attr-defined]
        await store.close()  # flush everything to the files
        path = Path(store_url.removeprefix("sqlite:///"))
        dump = "".join(p.read_bytes().decode("latin-1") for p in path.parent.glob(path.name + "*"))
    else:
        assert isinstance(store, SqlStore)
        async with store.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM api_keys"))).all()
        dump = repr(rows)
    assert digest in dump
    assert key.prefix in dump
    assert secret not in dump
    assert secret[len(key.prefix) :] not in dump


@parametrize_backends()
async def test_authenticate_compares_in_constant_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = await store.create_key("k", Plan.PAID)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert await store.authenticate(secret) is not None
    assert len(calls) == 1
    assert calls[0][0] == calls[0][1] == hash_secret(secret).encode()


# --- batches ---


@parametrize_backends()
async def test_batch_create_get_and_owner_isolation(store: Store) -> None:
    owner, _ = await store.create_key("owner", Plan.PAID)
    stranger, _ = await store.create_key("stranger", Plan.PAID)
    batch = await store.create_batch(owner.id, "my list", ["a@example.com", "b@example.com"])
    assert batch.user_id == owner.id and batch.name == "my list" and batch.size == 2
    assert batch.done == 0 and batch.finished_at is None and batch.deleted_at is None
    assert batch.created_at == batch.updated_at and batch.created_at.tzinfo is UTC
    assert await store.get_batch(owner.id, batch.id) == batch
    assert await store.get_batch(stranger.id, batch.id) is None
    assert await store.get_batch(owner.id, "00000000-0000-0000-0000-000000000000") is None
    assert await store.get_batch(owner.id, "not-a-uuid") is None
    unnamed = await store.create_batch(stranger.id, None, [])
    assert unnamed.name is None and unnamed.size == 0
    assert await store.batch_items(unnamed.id) == []
    with pytest.raises(NotFoundError):
        await store.create_batch("no-such-key", None, ["a@example.com"])


@parametrize_backends()
async def test_items_in_order_and_pending(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    emails = [f"user{i}@example.com" for i in range(25)] + ["dup@x.test", "dup@x.test"]
    batch = await store.create_batch(key.id, None, emails)
    items = await store.batch_items(batch.id)
    assert [(i.position, i.email, i.verdict) for i in items] == [
        (p, e, None) for p, e in enumerate(emails)
    ]
    assert [i.position for i in await store.pending_items(batch.id, 10)] == list(range(10))
    assert await store.pending_items(batch.id, 0) == []
    await store.save_verdicts(batch.id, [(p, {"n": p}) for p in (0, 2, 3, 7, 26)])
    pending = await store.pending_items(batch.id, 5)
    assert [(i.position, i.email) for i in pending] == [(p, emails[p]) for p in (1, 4, 5, 6, 8)]
    assert all(i.verdict is None for i in pending)
    everything = await store.pending_items(batch.id, 1000)
    assert [i.position for i in everything] == [p for p in range(27) if p not in (0, 2, 3, 7, 26)]
    items = await store.batch_items(batch.id)
    assert [i.verdict for i in items][:4] == [{"n": 0}, None, {"n": 2}, {"n": 3}]


@parametrize_backends()
async def test_save_verdicts_is_idempotent_and_done_is_exact(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    batch = await store.create_batch(key.id, None, [f"u{i}@x.test" for i in range(10)])
    verdict = {"result": "deliverable", "score": 100, "flags": {"isv_mx": True, "x": None}}

    await store.save_verdicts(batch.id, [(0, verdict), (1, verdict)])
    await store.save_verdicts(batch.id, [(0, verdict), (1, verdict)])  # repeat
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 2
    assert record.updated_at > batch.updated_at

    changed = {"result": "risky"}
    await store.save_verdicts(batch.id, [(1, changed), (2, verdict)])  # overwrite + new
    await store.save_verdicts(batch.id, [(3, {"v": 1}), (3, {"v": 2})])  # last one wins
    await store.save_verdicts(batch.id, [])
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 4
    items = await store.batch_items(batch.id)
    assert items[0].verdict == verdict
    assert items[1].verdict == changed
    assert items[3].verdict == {"v": 2}
    assert [i.position for i in await store.pending_items(batch.id, 100)] == list(range(4, 10))


@parametrize_backends()
async def test_concurrent_saves_keep_done_exact(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    batch = await store.create_batch(key.id, None, [f"u{i}@x.test" for i in range(300)])
    await asyncio.gather(
        *(
            store.save_verdicts(batch.id, [(p, {"n": n}) for p in range(n % 5, 300, 4)])
            for n in range(20)
        )
    )
    items = await store.batch_items(batch.id)
    record = await store.get_batch(key.id, batch.id)
    assert record is not None
    assert record.done == sum(1 for i in items if i.verdict is not None) == 300


@parametrize_backends()
async def test_save_verdicts_errors_change_nothing(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    batch = await store.create_batch(key.id, None, ["a@x.test", "b@x.test"])
    with pytest.raises(NotFoundError):
        await store.save_verdicts("00000000-0000-0000-0000-000000000000", [(0, {})])
    with pytest.raises(ValueError, match="out of range"):
        await store.save_verdicts(batch.id, [(0, {"ok": 1}), (2, {})])
    with pytest.raises(ValueError, match="out of range"):
        await store.save_verdicts(batch.id, [(-1, {})])
    with pytest.raises(ValueError, match="JSON"):
        await store.save_verdicts(batch.id, [(0, {"ok": 1}), (1, {"bad": object()})])
    with pytest.raises(ValueError, match="JSON"):
        await store.save_verdicts(batch.id, [(0, {"nan": float("nan")})])
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 0 and record.updated_at == batch.updated_at
    assert [i.verdict for i in await store.batch_items(batch.id)] == [None, None]


@parametrize_backends()
async def test_finish_and_unfinished_oldest_first(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    ids = [(await store.create_batch(key.id, f"b{i}", ["a@x.test"])).id for i in range(4)]
    assert await store.unfinished_batches() == ids
    await store.finish_batch(ids[1])
    record = await store.get_batch(key.id, ids[1])
    assert record is not None and record.finished_at is not None
    assert record.finished_at.tzinfo is UTC and record.updated_at == record.finished_at
    await store.finish_batch(ids[1])  # idempotent: keeps the first finish time
    again = await store.get_batch(key.id, ids[1])
    assert again == record
    assert await store.unfinished_batches() == [ids[0], ids[2], ids[3]]
    with pytest.raises(NotFoundError):
        await store.finish_batch("00000000-0000-0000-0000-000000000000")


@parametrize_backends(DURABLE_BACKENDS)
async def test_everything_survives_a_restart(open_new: Opener) -> None:
    first = await open_new()
    key, secret = await first.create_key("k", Plan.PAID)
    emails = [f"u{i}@x.test" for i in range(50)]
    batch = await first.create_batch(key.id, "durable", emails)
    finished = await first.create_batch(key.id, "finished", ["a@x.test"])
    await first.save_verdicts(finished.id, [(0, {"r": "x"})])
    await first.finish_batch(finished.id)
    done = [(p, {"result": "deliverable", "p": p}) for p in range(0, 50, 3)]
    await first.save_verdicts(batch.id, done)
    before = await first.get_batch(key.id, batch.id)
    await first.close()

    second = await open_new()  # a new process would do exactly this
    assert await second.authenticate(secret) == key
    assert await second.get_batch(key.id, batch.id) == before
    assert await second.unfinished_batches() == [batch.id]
    pending = await second.pending_items(batch.id, 1000)
    assert [i.position for i in pending] == [p for p in range(50) if p % 3]
    items = await second.batch_items(batch.id)
    assert [i.email for i in items] == emails
    assert {i.position: i.verdict for i in items if i.verdict} == dict(done)


_CRASHING_WRITER = """
import asyncio, os, sys
from mailvet.storage import Plan, open_store

async def main(url):
    store = open_store(url)
    await store.migrate()
    key, secret = await store.create_key("k", Plan.PAID)
    batch = await store.create_batch(key.id, "crash", [f"u{i}@x.test" for i in range(30)])
    await store.save_verdicts(batch.id, [(p, {"p": p}) for p in range(0, 30, 2)])
    print(key.id, secret, batch.id, flush=True)
    os._exit(0)  # die without closing anything, as a killed process would

asyncio.run(main(sys.argv[1]))
"""


@parametrize_backends(DURABLE_BACKENDS)
async def test_a_killed_writer_loses_nothing(store_url: str, open_new: Opener) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASHING_WRITER, store_url, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    key_id, secret, batch_id = stdout.decode().split()

    store = await open_new()
    key = await store.authenticate(secret)
    assert key is not None and key.id == key_id
    record = await store.get_batch(key_id, batch_id)
    assert record is not None and record.done == 15 and record.size == 30
    assert [i.position for i in await store.pending_items(batch_id, 100)] == list(range(1, 30, 2))
    assert await store.unfinished_batches() == [batch_id]


@parametrize_backends(DURABLE_BACKENDS)
async def test_two_stores_on_one_database_write_concurrently(open_new: Opener) -> None:
    """Like the API process and a worker process sharing the database."""
    api, worker = await open_new(), await open_new()
    key, _ = await api.create_key("k", Plan.PAID)
    batch = await api.create_batch(key.id, None, [f"u{i}@x.test" for i in range(400)])

    async def work(store: Store, start: int) -> None:
        for first in range(start, 400, 40):
            await store.save_verdicts(
                batch.id, [(p, {"by": start}) for p in range(first, first + 20)]
            )
            await store.save_verdicts(batch.id, [(first, {"again": True})])

    await asyncio.gather(
        work(api, 0),
        work(worker, 20),
        work(api, 0),  # the same items twice at once: still counted once
        *(api.create_key(f"k{i}", Plan.FREE) for i in range(5)),
        *(worker.create_batch(key.id, None, ["a@x.test"] * 100) for _ in range(5)),
    )
    record = await worker.get_batch(key.id, batch.id)
    assert record is not None and record.done == 400
    assert await api.pending_items(batch.id, 10) == []
    assert len(await worker.list_keys()) == 6


@pytest.mark.slow
@parametrize_backends()
async def test_fifty_thousand_item_batch(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    emails = [f"user{i}@domain{i % 97}.example" for i in range(50_000)]
    batch = await store.create_batch(key.id, "big", emails)
    assert batch.size == 50_000
    items = await store.batch_items(batch.id)
    assert len(items) == 50_000 and items[-1].email == emails[-1]
    assert [i.position for i in await store.pending_items(batch.id, 3)] == [0, 1, 2]
    await store.save_verdicts(batch.id, [(p, {"r": "unknown"}) for p in range(0, 50_000, 2)])
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 25_000
    assert [i.position for i in await store.pending_items(batch.id, 3)] == [1, 3, 5]


# --- awkward strings ---


@parametrize_backends()
async def test_unicode_round_trips(store: Store) -> None:
    key, _ = await store.create_key("clé 🔑", Plan.PAID)
    emails = ["用户@例子.广告", "josé@bücher.example", "a+b@x.test", "\u202e@x.test", "😀@x.test"]
    batch = await store.create_batch(key.id, "liste ünïcode ✓", emails)
    assert [i.email for i in await store.batch_items(batch.id)] == emails
    odd = {
        "nul": "a\x00b",
        "surrogate": "\ud800",
        "emoji": "😀",
        "nested": [{"k": "\x00"}],
        "big": 10**30,
    }
    await store.save_verdicts(batch.id, [(0, odd)])
    assert (await store.batch_items(batch.id))[0].verdict == odd
    assert (await store.list_keys())[0].name == "clé 🔑"
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.name == "liste ünïcode ✓"


@parametrize_backends()
@pytest.mark.parametrize(
    ("emails", "name", "match"),
    [
        (["ok@x.test", "nul\x00@x.test"], None, "NUL"),
        (["\udcff\udcfe@x.test"], None, "surrogate"),  # broken UTF-8 via surrogateescape
        (["ok@x.test", "\ud83d@x.test"], None, "surrogate"),  # half an emoji
        (["ok@x.test"], "name\x00", "NUL"),
        (["ok@x.test"], "\udc80", "surrogate"),
    ],
)
async def test_unstorable_strings_are_a_clear_value_error(
    store: Store, emails: list[str], name: str | None, match: str
) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    with pytest.raises(ValueError, match=match):
        await store.create_batch(key.id, name, emails)
    assert await store.unfinished_batches() == []  # nothing half-created


@parametrize_backends()
async def test_awkward_lookups_never_crash(store: Store) -> None:
    key, secret = await store.create_key("k", Plan.PAID)
    batch = await store.create_batch(key.id, None, ["a@x.test"])
    with pytest.raises(ValueError, match="NUL"):
        await store.create_key("bad\x00", Plan.FREE)
    with pytest.raises(ValueError, match="surrogate"):
        await store.create_key("bad\udcff", Plan.FREE)
    for weird in ["\x00", "\udcff", "x\x00y", "🔑", "' OR 1=1 --", "%", "_" * 40]:
        assert await store.authenticate(weird) is None
        assert await store.authenticate(secret + weird) is None
        assert await store.get_batch(key.id, weird) is None
        assert await store.get_batch(weird, batch.id) is None
        assert await store.batch_items(weird) == []
        assert await store.pending_items(weird, 10) == []
        assert await store.revoke_key(weird) is False
        with pytest.raises(NotFoundError):
            await store.save_verdicts(weird, [(0, {})])
        with pytest.raises(NotFoundError):
            await store.finish_batch(weird)
        with pytest.raises(NotFoundError):
            await store.create_batch(weird, None, ["a@x.test"])
    assert await store.authenticate(secret) == key


@parametrize_backends()
async def test_migrate_is_idempotent(store: Store) -> None:
    key, secret = await store.create_key("k", Plan.PAID)
    await store.migrate()
    await store.migrate()
    assert await store.authenticate(secret) == key


# --- faults and file modes (SQL stores only) ---


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://mailvet:s3cret-pw@db.internal:5433/mv", "db.internal:5433/mv"),
        ("memory://", "memory"),
        ("sqlite:///:memory:", "memory"),
        ("mysql://u:s3cret-pw@h/db", "unusable"),
    ],
)
def test_describe_url_never_shows_a_password(url: str, shown: str) -> None:
    described = describe_url(url)
    assert shown in described
    assert "s3cret-pw" not in described


def test_describe_url_gives_a_sqlite_file_as_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert describe_url("sqlite:///./here.db") == str(tmp_path / "here.db")


async def test_sqlite_files_are_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "folder"
    store = open_store(f"sqlite:///{folder / 'mailvet.db'}")
    try:
        await store.migrate()
        key, _ = await store.create_key("k", Plan.PAID)
        await store.create_batch(key.id, None, ["a@x.test"])
        files = sorted(p.name for p in folder.iterdir())
        assert files == ["mailvet.db", "mailvet.db-shm", "mailvet.db-wal"]  # WAL, still open
        modes = {name: oct((folder / name).stat().st_mode & 0o777) for name in files}
        assert modes == dict.fromkeys(files, "0o600")
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fault_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'faulty.db'}"
    url: str = request.getfixturevalue("pg_fresh_url")
    return url


async def _create_batch_under(url: str, breakage: str) -> StorageError:
    """The StorageError of ``create_batch`` (addresses under private.test) once the SQL
    ``breakage`` has broken the store under it."""
    store = open_store(url)
    try:
        await store.migrate()
        key, _ = await store.create_key("k", Plan.PAID)
        sync = create_engine(normalise_url(url).replace("+aiosqlite", ""))
        with sync.begin() as conn:
            conn.execute(text(breakage))
        sync.dispose()
        emails = ["hidden.person@private.test", "second@private.test"]
        with pytest.raises(StorageError) as caught:
            await store.create_batch(key.id, "list", emails)
    finally:
        await store.close()
    return caught.value


async def test_a_storage_fault_never_carries_an_address(
    fault_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    error = await _create_batch_under(fault_url, "DROP TABLE batch_items")
    assert "batch_items" in str(error)  # it says what failed ...
    told = "".join(traceback.format_exception(error))  # ... the whole chain included
    assert "SQL parameters hidden" in str(error.__context__)  # not printed, but hidden
    assert "private.test" not in told
    assert "private.test" not in caplog.text


@pytest.mark.postgres
async def test_a_constraint_fault_never_carries_an_address(pg_fresh_url: str) -> None:
    # PostgreSQL puts the failing row in the error's DETAIL ("Failing row contains (...,
    # hidden.person@private.test, ...)"): hide_parameters does not cover that, so the
    # driver's error must not ride along as the StorageError's cause either.
    breakage = "ALTER TABLE batch_items ADD CONSTRAINT broken CHECK (false)"  # schema drift
    error = await _create_batch_under(pg_fresh_url, breakage)
    assert "broken" in str(error)  # it says what failed ...
    told = "".join(traceback.format_exception(error))  # ... the whole chain included
    assert "private.test" not in told, told

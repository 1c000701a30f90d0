"""The Store contract, run over memory, SQLite (storage/sql.py) and PostgreSQL.

One set of behavioural tests, parametrised over the backends, so the in-memory store
the API tests use behaves exactly like the durable ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import sys
import traceback
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from mailvet.storage import (
    BatchCounts,
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
from mailvet.storage.sql import SqlStore

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
DURABLE_BACKENDS = BACKENDS[1:]

Opener = Callable[[], Awaitable[Store]]


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
    assert [i async for i in store.iter_items(unnamed.id)] == []
    with pytest.raises(NotFoundError):
        await store.create_batch("no-such-key", None, ["a@example.com"])


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
    await first.save_results(finished.id, [("a@x.test", {"r": "x"})])
    await first.finish_batch(finished.id)
    done = [(p, {"result": "deliverable", "p": p}) for p in range(0, 50, 3)]
    await first.save_results(batch.id, [(emails[p], verdict) for p, verdict in done])
    before = await first.get_batch(key.id, batch.id)
    await first.close()

    second = await open_new()  # a new process would do exactly this
    assert await second.authenticate(secret) == key
    assert await second.get_batch(key.id, batch.id) == before
    assert await second.unfinished_batches() == [batch.id]
    pending = await second.next_work(batch.id, 1000, T0)
    assert [w.positions for w in pending] == [(p,) for p in range(50) if p % 3]
    items = [i async for i in second.iter_items(batch.id)]
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
    await store.save_results(batch.id, [(f"u{p}@x.test", {"p": p}) for p in range(0, 30, 2)])
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
    pending = await store.next_work(batch_id, 100, T0)
    assert [w.positions for w in pending] == [(p,) for p in range(1, 30, 2)]
    assert await store.unfinished_batches() == [batch_id]


@parametrize_backends(DURABLE_BACKENDS)
async def test_two_stores_on_one_database_write_concurrently(open_new: Opener) -> None:
    """Like the API process and a worker process sharing the database."""
    api, worker = await open_new(), await open_new()
    key, _ = await api.create_key("k", Plan.PAID)
    batch = await api.create_batch(key.id, None, [f"u{i}@x.test" for i in range(400)])

    async def work(store: Store, start: int) -> None:
        for first in range(start, 400, 40):
            await store.save_results(
                batch.id, [(f"u{p}@x.test", {"by": start}) for p in range(first, first + 20)]
            )
            await store.save_results(batch.id, [(f"u{first}@x.test", {"again": True})])

    await asyncio.gather(
        work(api, 0),
        work(worker, 20),
        work(api, 0),  # the same items twice at once: still counted once
        *(api.create_key(f"k{i}", Plan.FREE) for i in range(5)),
        *(worker.create_batch(key.id, None, ["a@x.test"] * 100) for _ in range(5)),
    )
    record = await worker.get_batch(key.id, batch.id)
    assert record is not None and record.done == 400
    assert await api.next_work(batch.id, 10, T0) == []
    assert len(await worker.list_keys()) == 6


@pytest.mark.slow
@parametrize_backends()
async def test_fifty_thousand_item_batch(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    emails = [f"user{i}@domain{i % 97}.example" for i in range(50_000)]
    batch = await store.create_batch(key.id, "big", emails)
    assert batch.size == 50_000
    items = [i async for i in store.iter_items(batch.id)]
    assert len(items) == 50_000 and items[-1].email == emails[-1]
    assert [w.positions for w in await store.next_work(batch.id, 3, T0)] == [(0,), (1,), (2,)]
    await store.save_results(batch.id, [(emails[p], {"r": "unknown"}) for p in range(0, 50_000, 2)])
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 25_000
    assert [w.positions for w in await store.next_work(batch.id, 3, T0)] == [(1,), (3,), (5,)]


# --- awkward strings ---


@parametrize_backends()
async def test_unicode_round_trips(store: Store) -> None:
    key, _ = await store.create_key("clé 🔑", Plan.PAID)
    emails = ["用户@例子.广告", "josé@bücher.example", "a+b@x.test", "\u202e@x.test", "😀@x.test"]
    batch = await store.create_batch(key.id, "liste ünïcode ✓", emails)
    assert [i.email async for i in store.iter_items(batch.id)] == emails
    odd = {
        "nul": "a\x00b",
        "surrogate": "\ud800",
        "emoji": "😀",
        "nested": [{"k": "\x00"}],
        "big": 10**30,
    }
    await store.save_results(batch.id, [(emails[0], odd)])
    assert [i.verdict async for i in store.iter_items(batch.id, limit=1)] == [odd]
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
        assert [i async for i in store.iter_items(weird)] == []
        assert await store.next_work(weird, 10, T0) == []
        assert await store.revoke_key(weird) is False
        with pytest.raises(NotFoundError):
            await store.save_results(weird, [("a@x.test", {})])
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


# --- the batch engine: keys, work, results, retries, streaming, counts ---

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _verdict(result: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"result": result, "reason": reason, **extra}


@parametrize_backends()
async def test_create_batch_with_keys_and_callback(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    emails = ["A@X.test", "a@x.test", "b@x.test"]
    batch = await store.create_batch(
        key.id,
        "keyed",
        emails,
        keys=["a@x.test", "a@x.test", "b@x.test"],
        callback_url="https://hooks.example/done",
    )
    assert batch.callback_url == "https://hooks.example/done"
    assert batch.retry_waiting == 0 and batch.webhook_delivered_at is None
    assert await store.get_batch(key.id, batch.id) == batch
    work = await store.next_work(batch.id, 10, T0)
    assert [(w.key, w.email, w.positions) for w in work] == [
        ("a@x.test", "A@X.test", (0, 1)),  # the first position's spelling
        ("b@x.test", "b@x.test", (2,)),
    ]
    plain = await store.create_batch(key.id, None, ["x@x.test", "x@x.test"])
    assert plain.callback_url is None
    assert [(w.key, w.positions) for w in await store.next_work(plain.id, 10, T0)] == [
        ("x@x.test", (0, 1))  # without keys each email is its own key
    ]
    with pytest.raises(ValueError, match="2 keys for 3 emails"):
        await store.create_batch(key.id, None, emails, keys=["a", "b"])
    with pytest.raises(ValueError, match=r"keys\[1\].*NUL"):
        await store.create_batch(key.id, None, emails, keys=["a", "b\x00", "c"])
    with pytest.raises(ValueError, match="NUL"):
        await store.create_batch(key.id, None, emails, callback_url="https://x\x00")
    assert len(await store.unfinished_batches()) == 2  # nothing half-created


@parametrize_backends()
async def test_next_work_distinct_keys_in_first_position_order(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    keys = ["k0", "k1", "k0", "k2", "k1", "k3", "k4", "k0"]
    batch = await store.create_batch(key.id, None, [f"{k}@x.test" for k in keys], keys=keys)
    first = await store.next_work(batch.id, 2, T0)
    assert [(w.key, w.positions, w.attempts, w.first_try_at) for w in first] == [
        ("k0", (0, 2, 7), 0, None),
        ("k1", (1, 4), 0, None),
    ]
    assert await store.next_work(batch.id, 0, T0) == []
    assert await store.next_work("no-such-batch", 5, T0) == []
    await store.save_results(batch.id, [("k0", _verdict("deliverable", "accepted_email"))])
    rest = await store.next_work(batch.id, 10, T0)
    assert [(w.key, w.positions) for w in rest] == [
        ("k1", (1, 4)),
        ("k2", (3,)),
        ("k3", (5,)),
        ("k4", (6,)),
    ]
    with pytest.raises(ValueError, match="naive"):
        await store.next_work(batch.id, 10, datetime(2026, 1, 1))


@parametrize_backends()
async def test_save_results_every_position_idempotent_done_exact(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    keys = ["a", "b", "a", "c", "a"]
    batch = await store.create_batch(key.id, None, [f"{k}@x.test" for k in keys], keys=keys)
    ok = _verdict("deliverable", "accepted_email", score=100)
    await store.save_results(batch.id, [("a", ok)])
    await store.save_results(batch.id, [("a", ok)])  # repeat: counted once
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 3 and record.updated_at > batch.updated_at
    assert [i.verdict async for i in store.iter_items(batch.id)] == [ok, None, ok, None, ok]

    bad = _verdict("undeliverable", "rejected_email")
    await store.save_results(batch.id, [("a", bad), ("b", ok), ("b", bad), ("nobody", ok)])
    await store.save_results(batch.id, [])
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 4  # "nobody" matched nothing
    assert [i.verdict async for i in store.iter_items(batch.id)] == [bad, bad, bad, None, bad]
    assert await store.counts(batch.id) == BatchCounts(
        by_result={"undeliverable": 4}, by_reason={"rejected_email": 4}
    )

    with pytest.raises(NotFoundError):
        await store.save_results("00000000-0000-0000-0000-000000000000", [("a", ok)])
    with pytest.raises(ValueError, match="JSON"):
        await store.save_results(batch.id, [("c", ok), ("a", {"bad": object()})])
    with pytest.raises(ValueError, match="JSON"):
        await store.save_results(batch.id, [("c", {"nan": float("nan")})])
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 4  # the failed call changed nothing
    assert [w.key for w in await store.next_work(batch.id, 10, T0)] == ["c"]


@parametrize_backends()
async def test_concurrent_save_results_keep_done_exact(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    keys = [f"k{i % 100}" for i in range(300)]  # each key at three positions
    batch = await store.create_batch(key.id, None, [f"{k}@x.test" for k in keys], keys=keys)
    await asyncio.gather(
        *(
            store.save_results(batch.id, [(f"k{i}", {"n": n}) for i in range(n % 3, 100, 2)])
            for n in range(12)
        )
    )
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 300
    assert await store.next_work(batch.id, 10, T0) == []


@parametrize_backends()
async def test_retries_wait_until_due(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    keys = ["g", "a", "g", "b"]
    batch = await store.create_batch(key.id, None, [f"{k}@x.test" for k in keys], keys=keys)
    assert await store.next_retry_at(batch.id) is None
    later, much_later = T0 + timedelta(minutes=5), T0 + timedelta(minutes=15)
    before = datetime.now(UTC)
    await store.schedule_retries(batch.id, [("g", later), ("b", much_later), ("nobody", later)])

    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.retry_waiting == 3  # g twice, b once
    assert await store.next_retry_at(batch.id) == later
    assert [w.key for w in await store.next_work(batch.id, 10, T0)] == ["a"]
    due = await store.next_work(batch.id, 10, later)
    assert [(w.key, w.positions, w.attempts) for w in due] == [("g", (0, 2), 1), ("a", (1,), 0)]
    first_try = due[0].first_try_at
    assert first_try is not None and before <= first_try <= datetime.now(UTC)
    assert [w.key for w in await store.next_work(batch.id, 10, much_later)] == ["g", "a", "b"]

    # a second retry: attempts count up, the first try stays
    await store.schedule_retries(batch.id, [("g", much_later)])
    again = [w for w in await store.next_work(batch.id, 10, much_later) if w.key == "g"]
    assert again[0].attempts == 2 and again[0].first_try_at == first_try
    assert await store.next_retry_at(batch.id) == much_later

    # a result ends the wait; retries for a decided key change nothing
    await store.save_results(batch.id, [("g", _verdict("deliverable", "accepted_email"))])
    await store.schedule_retries(batch.id, [("g", much_later)])
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.retry_waiting == 1 and record.done == 2
    assert await store.next_retry_at(batch.id) == much_later  # b's
    await store.save_results(batch.id, [("b", _verdict("unknown", "greylisted"))])
    assert await store.next_retry_at(batch.id) is None
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.retry_waiting == 0

    with pytest.raises(ValueError, match="naive"):
        await store.schedule_retries(batch.id, [("a", datetime(2026, 1, 1))])
    with pytest.raises(NotFoundError):
        await store.schedule_retries("00000000-0000-0000-0000-000000000000", [("a", later)])


@parametrize_backends()
async def test_iter_items_in_order_paged_and_filtered(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    size = 2_345  # more than two read chunks
    emails = [f"u{i}@x.test" for i in range(size)]
    batch = await store.create_batch(key.id, None, emails)
    results = ["deliverable", "undeliverable", "risky"]
    await store.save_results(
        batch.id,
        [(emails[p], _verdict(results[p % 3], "r", p=p)) for p in range(size) if p % 5],
    )

    streamed = [item async for item in store.iter_items(batch.id)]
    assert [i.position for i in streamed] == list(range(size))
    assert [i.email for i in streamed] == emails
    assert streamed[7].verdict == _verdict(results[1], "r", p=7) and streamed[5].verdict is None

    page = [i.position async for i in store.iter_items(batch.id, offset=1_500, limit=1_100)]
    assert page == list(range(1_500, 2_345))
    page = [i.position async for i in store.iter_items(batch.id, offset=999, limit=2)]
    assert page == [999, 1000]
    assert [i async for i in store.iter_items(batch.id, limit=0)] == []
    assert [i async for i in store.iter_items(batch.id, offset=size)] == []

    risky = [p for p in range(size) if p % 5 and p % 3 == 2]
    got = [i.position async for i in store.iter_items(batch.id, result="risky")]
    assert got == risky
    got = [
        i.position async for i in store.iter_items(batch.id, result="risky", offset=10, limit=1200)
    ]
    assert got == risky[10:1210]
    assert [i async for i in store.iter_items(batch.id, result="nothing\x00")] == []
    assert [i async for i in store.iter_items("no-such-batch")] == []
    with pytest.raises(ValueError):
        [i async for i in store.iter_items(batch.id, offset=-1)]


@parametrize_backends()
async def test_counts_by_result_and_reason(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    keys = ["a", "b", "a", "c", "d", "e"]
    batch = await store.create_batch(key.id, None, [f"{k}@x.test" for k in keys], keys=keys)
    assert await store.counts(batch.id) == BatchCounts({}, {})
    await store.save_results(
        batch.id,
        [
            ("a", _verdict("deliverable", "accepted_email")),
            ("b", _verdict("undeliverable", "rejected_email")),
            ("c", _verdict("undeliverable", "invalid_domain")),
            ("d", {"result": 42, "reason": None}),  # not text: counted nowhere
        ],
    )
    assert await store.counts(batch.id) == BatchCounts(
        by_result={"deliverable": 2, "undeliverable": 2},
        by_reason={"accepted_email": 2, "rejected_email": 1, "invalid_domain": 1},
    )
    assert await store.counts("no-such-batch") == BatchCounts({}, {})


@parametrize_backends()
async def test_list_batches_newest_first_paged(store: Store) -> None:
    owner, _ = await store.create_key("owner", Plan.PAID)
    other, _ = await store.create_key("other", Plan.PAID)
    ids = [(await store.create_batch(owner.id, f"b{i}", ["a@x.test"])).id for i in range(5)]
    await store.create_batch(other.id, "not mine", ["a@x.test"])
    listed = await store.list_batches(owner.id)
    assert [b.id for b in listed] == ids[::-1]
    assert listed[0] == await store.get_batch(owner.id, ids[-1])
    assert [b.id for b in await store.list_batches(owner.id, offset=1, limit=2)] == [
        ids[3],
        ids[2],
    ]
    assert await store.list_batches(owner.id, offset=5) == []
    assert await store.list_batches(owner.id, limit=0) == []
    assert await store.list_batches("no-such-key") == []
    assert len(await store.list_batches(other.id)) == 1


@parametrize_backends()
async def test_delete_batch_keeps_the_record_and_drops_the_items(store: Store) -> None:
    owner, _ = await store.create_key("owner", Plan.PAID)
    stranger, _ = await store.create_key("stranger", Plan.PAID)
    keys = ["a", "b", "a"]
    batch = await store.create_batch(owner.id, "gone", [f"{k}@x.test" for k in keys], keys=keys)
    kept = await store.create_batch(owner.id, "kept", ["a@x.test"])
    await store.save_results(batch.id, [("b", _verdict("deliverable", "accepted_email"))])
    await store.schedule_retries(batch.id, [("a", T0)])

    assert await store.delete_batch(stranger.id, batch.id) is False
    assert await store.delete_batch(owner.id, "00000000-0000-0000-0000-000000000000") is False
    assert await store.delete_batch(owner.id, batch.id) is True
    record = await store.get_batch(owner.id, batch.id)
    assert record is not None and record.deleted_at is not None
    assert record.size == 3 and record.done == 1 and record.retry_waiting == 0
    assert await store.get_batch(stranger.id, batch.id) is None
    assert [i async for i in store.iter_items(batch.id)] == []
    assert await store.next_work(batch.id, 10, T0 + timedelta(days=1)) == []
    assert await store.next_retry_at(batch.id) is None
    assert await store.counts(batch.id) == BatchCounts({}, {})
    await store.save_results(batch.id, [("a", {"late": True})])  # a runner's late save
    assert await store.unfinished_batches() == [kept.id]
    assert await store.delete_batch(owner.id, batch.id) is True  # again: still deleted
    assert await store.get_batch(owner.id, batch.id) == record
    listed = await store.list_batches(owner.id)
    assert [(b.id, b.deleted_at is not None) for b in listed] == [
        (kept.id, False),
        (batch.id, True),
    ]
    assert [i.email async for i in store.iter_items(kept.id)] == ["a@x.test"]


@parametrize_backends()
async def test_webhooks_due_and_their_results(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    hooked = await store.create_batch(key.id, None, ["a@x.test"], callback_url="https://h/1")
    plain = await store.create_batch(key.id, None, ["a@x.test"])
    dropped = await store.create_batch(key.id, None, ["a@x.test"], callback_url="https://h/2")
    now = datetime.now(UTC)
    assert await store.webhooks_due(now) == []  # not finished yet
    for batch in (hooked, plain, dropped):
        await store.finish_batch(batch.id)
    await store.delete_batch(key.id, dropped.id)
    due = await store.webhooks_due(now)
    assert [b.id for b in due] == [hooked.id]
    assert due[0] == await store.get_batch(key.id, hooked.id)

    assert due[0].webhook_attempts == 0
    await store.webhook_result(hooked.id, delivered=False, next_at=now + timedelta(seconds=30))
    assert await store.webhooks_due(now) == []
    retry = await store.webhooks_due(now + timedelta(seconds=30))
    assert [(b.id, b.webhook_attempts) for b in retry] == [(hooked.id, 1)]
    await store.webhook_result(hooked.id, delivered=True, next_at=None)
    assert await store.webhooks_due(now + timedelta(days=1)) == []
    record = await store.get_batch(key.id, hooked.id)
    assert record is not None and record.webhook_delivered_at is not None
    assert record.webhook_attempts == 2

    gave_up = await store.create_batch(key.id, None, ["a@x.test"], callback_url="https://h/3")
    await store.finish_batch(gave_up.id)
    assert [b.id for b in await store.webhooks_due(now)] == [gave_up.id]
    await store.webhook_result(gave_up.id, delivered=False, next_at=None)  # give up
    assert await store.webhooks_due(now + timedelta(days=1)) == []
    with pytest.raises(NotFoundError):
        await store.webhook_result("no-such-batch", delivered=True, next_at=None)
    with pytest.raises(ValueError, match="naive"):
        await store.webhooks_due(datetime(2026, 1, 1))


@parametrize_backends()
async def test_next_work_against_a_model(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random results and retries; next_work agrees with a plain model at every step.

    The SQL store's scans are made tiny so its walks cross many chunk boundaries."""
    import mailvet.storage.sql as sql_module

    monkeypatch.setattr(sql_module, "WORK_SCAN", 3)
    rng = random.Random(8)
    key, _ = await store.create_key("k", Plan.PAID)
    keys = [f"k{rng.randrange(40)}" for _ in range(120)]
    batch = await store.create_batch(key.id, None, [f"{k}@x.test" for k in keys], keys=keys)
    decided: set[str] = set()
    retry: dict[str, datetime] = {}
    attempts: dict[str, int] = {}
    for step in range(40):
        now = T0 + timedelta(minutes=step)
        limit = rng.choice([1, 2, 5, 50])
        expected: list[tuple[str, tuple[int, ...], int]] = []
        for k in keys:
            if k in decided or any(k == e[0] for e in expected) or len(expected) == limit:
                continue
            if k in retry and retry[k] > now:
                continue
            positions = tuple(p for p, other in enumerate(keys) if other == k)
            expected.append((k, positions, attempts.get(k, 0)))
        work = await store.next_work(batch.id, limit, now)
        assert [(w.key, w.positions, w.attempts) for w in work] == expected, step
        for item in work:
            if rng.random() < 0.4:
                when = now + timedelta(minutes=rng.randrange(1, 6))
                await store.schedule_retries(batch.id, [(item.key, when)])
                retry[item.key] = when
                attempts[item.key] = attempts.get(item.key, 0) + 1
            elif rng.random() < 0.7:
                await store.save_results(batch.id, [(item.key, {"result": "unknown"})])
                decided.add(item.key)
                retry.pop(item.key, None)
        waiting = [when for k, when in retry.items() if k not in decided]
        assert await store.next_retry_at(batch.id) == (min(waiting) if waiting else None)
    record = await store.get_batch(key.id, batch.id)
    assert record is not None
    assert record.done == sum(1 for k in keys if k in decided)
    assert record.retry_waiting == sum(1 for k in keys if k in retry and k not in decided)


@parametrize_backends(DURABLE_BACKENDS)
async def test_save_results_is_one_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 results: one commit, however many statements; a failure midway saves nothing."""
    import mailvet.storage.sql as sql_module

    assert isinstance(store, SqlStore)
    for name in ("SQLITE_CHUNK", "IN_CHUNK", "PG_CHUNK"):
        monkeypatch.setattr(sql_module, name, 100)  # several statements per call
    key, _ = await store.create_key("k", Plan.PAID)
    keys = [f"k{i % 500}" for i in range(2_000)]
    batch = await store.create_batch(key.id, None, [f"{k}@x.test" for k in keys], keys=keys)
    commits: list[int] = []
    event.listen(store.engine.sync_engine, "commit", lambda _conn: commits.append(1))
    verdict = _verdict("deliverable", "accepted_email")
    await store.save_results(batch.id, [(f"k{i}", verdict) for i in range(250)])
    assert len(commits) == 1
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 1_000

    # A database error on the 450th key (the fifth statement): nothing of the call stays.
    if store.dialect == "sqlite":
        trigger = [
            "CREATE TRIGGER boom BEFORE UPDATE OF verdict ON batch_items "
            "WHEN NEW.\"key\" = 'k450' BEGIN SELECT RAISE(ABORT, 'boom'); END"
        ]
        untrigger = ["DROP TRIGGER boom"]
    else:
        trigger = [
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'boom'; END $$",
            "CREATE TRIGGER boom BEFORE UPDATE ON batch_items FOR EACH ROW "
            "WHEN (NEW.key = 'k450') EXECUTE FUNCTION boom()",
        ]
        untrigger = ["DROP TRIGGER boom ON batch_items", "DROP FUNCTION boom()"]
    async with store.engine.begin() as conn:
        for statement in trigger:
            await conn.execute(text(statement))
    try:
        with pytest.raises(StorageError, match="boom"):
            await store.save_results(batch.id, [(f"k{i}", verdict) for i in range(250, 500)])
    finally:
        async with store.engine.begin() as conn:
            for statement in untrigger:
                await conn.execute(text(statement))
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 1_000
    assert (await store.counts(batch.id)).by_result == {"deliverable": 1_000}
    work = await store.next_work(batch.id, 1_000, T0)
    assert [w.key for w in work] == [f"k{i}" for i in range(250, 500)]
    await store.save_results(batch.id, [(w.key, verdict) for w in work])
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 2_000


@pytest.mark.slow
@parametrize_backends()
async def test_iter_items_memory_stays_bounded(store: Store) -> None:
    """Streaming 100,000 items allocates a chunk's worth at a time, not the batch's."""
    key, _ = await store.create_key("k", Plan.PAID)
    size = 100_000
    emails = [f"user{i}@d{i % 997}.example" for i in range(size)]
    batch = await store.create_batch(key.id, None, emails)
    filler = "x" * 200
    await store.save_results(
        batch.id,
        [
            (e, _verdict("deliverable", "accepted_email", p=p, f=filler))
            for p, e in enumerate(emails)
        ],
    )

    async def streamed_peak(**kwargs: Any) -> tuple[int, int]:
        count = 0
        tracemalloc.start()
        try:
            async for item in store.iter_items(batch.id, **kwargs):
                assert item.verdict is not None
                count += 1
            return count, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    count, peak = await streamed_peak()
    assert count == size
    count, filtered_peak = await streamed_peak(result="deliverable", offset=90_000)
    assert count == size - 90_000

    tracemalloc.start()  # the control: the whole batch held at once
    try:
        whole = [i async for i in store.iter_items(batch.id)]
        whole_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(whole) == size
    del whole
    assert whole_peak > 50_000_000
    assert peak < 10_000_000 and peak * 10 < whole_peak, (peak, whole_peak)
    assert filtered_peak < 10_000_000, filtered_peak


def _plan_text(rows: list[Any], dialect: str) -> str:
    if dialect == "sqlite":
        return "\n".join(str(row[-1]) for row in rows)
    return "\n".join(str(row[0]) for row in rows)


async def _explain(store: SqlStore, statement: Any, params: Any = None) -> str:
    """The database's plan for a statement (Core, with its values inlined, or raw SQL)."""
    if isinstance(statement, str):
        sql = statement
    else:
        compiled = statement.compile(
            dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}
        )
        sql = str(compiled)
    prefix = "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "
    async with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            rows = (await conn.exec_driver_sql(prefix + sql, params or ())).all()
        else:
            rows = (await conn.execute(text(prefix + sql), params or {})).all()
    return _plan_text(list(rows), store.dialect)


@pytest.mark.slow
@parametrize_backends(DURABLE_BACKENDS)
async def test_a_million_item_batch_is_worked_through_indexes(store: Store) -> None:
    """next_work, save_results, retries and reads on 1,000,000 items: every query the
    engine repeats walks an index (EXPLAIN on the database itself), none the batch."""
    import mailvet.storage.sql as sql_module

    assert isinstance(store, SqlStore)
    key, _ = await store.create_key("k", Plan.PAID)
    size = 1_000_000
    keys = [f"user{i % 900_000}@d{i % 2_000}.example" for i in range(size)]  # some twice
    batch = await store.create_batch(key.id, "big", keys, keys=keys)
    now = datetime.now(UTC)
    work = await store.next_work(batch.id, 1_000, now)
    assert len(work) == 1_000 and work[0].positions == (0, 900_000)
    verdict = _verdict("deliverable", "accepted_email")
    await store.save_results(batch.id, [(w.key, verdict) for w in work[:500]])
    await store.schedule_retries(
        batch.id, [(w.key, now + timedelta(minutes=5)) for w in work[500:]]
    )
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 1_000 and record.retry_waiting == 1_000
    after = await store.next_work(batch.id, 1_000, now)
    assert after[0].key == keys[1_000] and after[0].positions == (1_000, 901_000)
    due = await store.next_work(batch.id, 10, now + timedelta(minutes=5))
    assert due[0].key == work[500].key and due[0].attempts == 1

    chosen = [w.key for w in after[:500]]
    plans = {
        "todo": await _explain(store, sql_module.todo_query(batch.id, 5_000, 1_000)),
        "due": await _explain(store, sql_module.due_query(batch.id, now, 5_000, 1_000)),
        "positions": await _explain(store, sql_module.key_positions_query(batch.id, chosen)),
        "window": await _explain(store, sql_module.window_query(batch.id, 5_000, 6_000, None)),
        "filtered": await _explain(
            store, sql_module.window_query(batch.id, 5_000, 6_000, "deliverable")
        ),
    }
    if store.dialect == "sqlite":
        plans["save"] = await _explain(
            store,
            sql_module._SQLITE_SAVE_RESULT,
            ("{}", "deliverable", "accepted_email", "2026-11-30", batch.id, chosen[0]),
        )
        for name, plan in plans.items():
            for line in plan.splitlines():  # SEARCH: an index range; SCAN: everything
                assert line.startswith(("SEARCH", "USE TEMP B-TREE")), (name, plan)
        assert "USING INDEX ix_batch_items_todo (batch_id=? AND position>?)" in plans["todo"]
        assert "TEMP B-TREE" not in plans["todo"]
        assert "USING INDEX ix_batch_items_waiting (batch_id=? AND position>?)" in plans["due"]
        assert "USING INDEX ix_batch_items_key (batch_id=? AND key=?)" in plans["positions"]
        assert "USING INDEX ix_batch_items_key (batch_id=? AND key=?)" in plans["save"]
        assert "(batch_id=? AND position>? AND position<?)" in plans["window"]
    else:
        plans["save"] = await _explain(
            store,
            sql_module._PG_SAVE_RESULTS.text,
            {
                "batch_id": batch.id,
                "now": now,
                "keys": chosen,
                "verdicts": ["{}"] * len(chosen),
                "results": ["deliverable"] * len(chosen),
                "reasons": ["accepted_email"] * len(chosen),
            },
        )
        plans["count"] = await _explain(
            store,
            sql_module._PG_COUNT_KEYS_PENDING.text,
            {"batch_id": batch.id, "keys": chosen},
        )
        for name, plan in plans.items():
            assert "Seq Scan on batch_items" not in plan, (name, plan)
        # While nearly every item is to do, the primary key serves as well as the todo
        # index: either way the walk is in position order and stops after the limit.
        assert "Index Scan using" in plans["todo"] and "Sort" not in plans["todo"]
        assert "ix_batch_items_waiting" in plans["due"] or "ix_batch_items_retry" in plans["due"]
        for name in ("positions", "save", "count"):
            assert "ix_batch_items_key" in plans[name], (name, plans[name])
            conditions = [line for line in plans[name].splitlines() if "Index Cond" in line]
            assert any("key" in line for line in conditions), (name, plans[name])
        assert "pk_batch_items" in plans["window"]

    if store.dialect == "postgresql":
        # Once most of the batch is done and the statistics say so (autovacuum's ANALYZE),
        # the walk goes through the todo index, skipping the done items.
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE batch_items SET verdict = '{}', result = 'unknown' "
                    "WHERE batch_id = :b AND position < 850000 AND verdict IS NULL "
                    "AND retry_at IS NULL"
                ),
                {"b": batch.id},
            )
            await conn.execute(text("ANALYZE batch_items"))
        plan = await _explain(store, sql_module.todo_query(batch.id, -1, 1_000))
        assert "Index Scan using ix_batch_items_todo" in plan and "Sort" not in plan, plan
        late = await store.next_work(batch.id, 1, now)
        assert late[0].key == keys[850_000] and late[0].positions == (850_000,)

    streamed = [i.position async for i in store.iter_items(batch.id, offset=999_000)]
    assert streamed == list(range(999_000, size))
    assert await store.delete_batch(key.id, batch.id) is True
    assert await store.next_work(batch.id, 10, now) == []


# --- key_hash (the HMAC key of batch webhooks) ---


@parametrize_backends()
async def test_key_hash_is_the_hex_sha256_of_the_secret(store: Store) -> None:
    key, secret = await store.create_key("hooks", Plan.PAID)
    expected = hashlib.sha256(secret.encode()).hexdigest()
    assert await store.key_hash(key.id) == expected
    assert await store.revoke_key(key.id)
    assert await store.key_hash(key.id) == expected  # a revoked key's batches still sign
    assert await store.key_hash(str(uuid.uuid4())) is None
    assert await store.key_hash("bad\x00id") is None


# --- v0006: admin keys, usage per key per day per result ---


@parametrize_backends()
async def test_admin_keys_and_get_key(store: Store) -> None:
    admin, admin_secret = await store.create_key("ops", Plan.PAID, admin=True)
    plain, _ = await store.create_key("app", Plan.FREE)
    assert admin.admin and not plain.admin
    assert await store.get_key(admin.id) == admin
    assert await store.get_key(plain.id) == plain
    assert {k.id: k.admin for k in await store.list_keys()} == {admin.id: True, plain.id: False}
    found = await store.authenticate(admin_secret)
    assert found is not None and found.admin
    assert await store.revoke_key(plain.id)
    revoked = await store.get_key(plain.id)
    assert revoked is not None and revoked.revoked_at is not None  # revoked keys are found
    assert await store.get_key(str(uuid.uuid4())) is None
    assert await store.get_key("bad\x00id") is None


@parametrize_backends()
async def test_usage_adds_up_per_key_day_and_result(store: Store) -> None:
    from datetime import date

    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    d1, d2, d3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
    await store.add_usage([(a, d1, "deliverable", 2), (a, d1, "risky", 1), (b, d2, "unknown", 4)])
    await store.add_usage([(a, d1, "deliverable", 3), (a, d3, "undeliverable", 1)])
    await store.add_usage([])
    rows = await store.usage(since=d1, key_id=a)
    assert [(r.day, r.result, r.count) for r in rows] == [
        (d1, "deliverable", 5),
        (d1, "risky", 1),
        (d3, "undeliverable", 1),
    ]
    assert [(r.key_id, r.day) for r in await store.usage(since=d2, until=d2)] == [(b, d2)]
    later = await store.usage(since=d2, key_id=a)
    assert [(r.day, r.result, r.count) for r in later] == [(d3, "undeliverable", 1)]
    assert await store.usage(since=d1, key_id="nobody\x00") == []


@parametrize_backends()
async def test_save_results_counts_each_position_once_as_the_owners_usage(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    keys = ["a", "b", "a", "c"]
    batch = await store.create_batch(key.id, None, [f"{k}@x.test" for k in keys], keys=keys)
    ok = _verdict("deliverable", "accepted_email")
    bad = _verdict("undeliverable", "rejected_email")
    today = datetime.now(UTC).date()

    async def usage() -> dict[str, int]:
        rows = await store.usage(since=today - timedelta(days=1), key_id=key.id)
        return {r.result: r.count for r in rows}

    await store.save_results(batch.id, [("a", ok)])
    assert await usage() == {"deliverable": 2}  # both positions of "a"
    await store.save_results(batch.id, [("a", bad), ("b", bad), ("nobody", ok)])
    assert await usage() == {"deliverable": 2, "undeliverable": 1}  # "a" was decided before
    await store.delete_batch(key.id, batch.id)
    await store.save_results(batch.id, [("c", ok)])
    assert await usage() == {"deliverable": 2, "undeliverable": 1}  # a deleted batch takes none


@parametrize_backends()
async def test_set_plan_of_a_live_key(store: Store) -> None:
    key, secret = await store.create_key("k", Plan.FREE)
    assert await store.set_plan(key.id, Plan.PAID)
    found = await store.authenticate(secret)
    assert found is not None and found.plan is Plan.PAID
    assert not await store.set_plan(str(uuid.uuid4()), Plan.FREE)
    assert await store.revoke_key(key.id)
    assert not await store.set_plan(key.id, Plan.FREE)
    again = await store.get_key(key.id)
    assert again is not None and again.plan is Plan.PAID

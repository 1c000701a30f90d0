"""MemoryStore (storage/memory.py) and the helpers it shares with the SQL store.

The full behavioural suite runs over memory, SQLite and PostgreSQL in
tests/integration/test_storage_sql.py; these are the fast memory-only checks.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from mailvet.storage import MemoryStore, NotFoundError, Plan, Store, open_store
from mailvet.storage.common import PREFIX_LENGTH, hash_secret

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.fixture
async def store() -> MemoryStore:
    store = MemoryStore()
    await store.migrate()
    return store


def test_open_store_memory() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


def test_memory_store_satisfies_protocol() -> None:
    store: Store = MemoryStore()  # mypy checks the protocol; this checks it imports
    assert store is not None


async def test_key_create_authenticate_revoke(store: MemoryStore) -> None:
    key, secret = await store.create_key("ci", Plan.PAID)
    assert secret.startswith("mv_")
    assert len(secret) >= 3 + 43
    assert key.prefix == secret[:PREFIX_LENGTH]
    assert key.plan is Plan.PAID
    assert key.created_at.tzinfo is UTC
    assert await store.authenticate(secret) == key
    assert await store.authenticate(secret + "x") is None
    assert await store.authenticate("") is None
    assert await store.revoke_key(key.id) is True
    assert await store.revoke_key(key.id) is False
    assert await store.authenticate(secret) is None
    (listed,) = await store.list_keys()
    assert listed.revoked_at is not None


async def test_secret_is_not_kept(store: MemoryStore) -> None:
    _, secret = await store.create_key("ci", Plan.FREE)
    assert secret not in repr(vars(store))
    assert hash_secret(secret) in repr(vars(store))


async def test_revoke_by_prefix_needs_a_unique_match(store: MemoryStore) -> None:
    key, secret = await store.create_key("a", Plan.FREE)
    assert await store.revoke_key("mv_") is False  # too short to mean one key
    assert await store.revoke_key(key.prefix) is True
    assert await store.authenticate(secret) is None


async def test_batch_lifecycle(store: MemoryStore) -> None:
    key, _ = await store.create_key("a", Plan.PAID)
    other, _ = await store.create_key("b", Plan.PAID)
    emails = [f"user{i}@example.com" for i in range(10)]
    batch = await store.create_batch(key.id, "list", emails)
    assert batch.size == 10 and batch.done == 0 and batch.finished_at is None
    assert await store.get_batch(key.id, batch.id) == batch
    assert await store.get_batch(other.id, batch.id) is None
    assert await store.unfinished_batches() == [batch.id]

    pending = await store.next_work(batch.id, 3, T0)
    assert [w.positions for w in pending] == [(0,), (1,), (2,)]
    await store.save_results(batch.id, [(emails[1], {"result": "deliverable"})])
    await store.save_results(
        batch.id, [(emails[1], {"result": "risky"}), (emails[0], {"result": "unknown"})]
    )
    pending = await store.next_work(batch.id, 100, T0)
    assert [w.positions for w in pending] == [(p,) for p in range(2, 10)]
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 2
    items = [i async for i in store.iter_items(batch.id)]
    assert [i.email for i in items] == emails
    assert items[1].verdict == {"result": "risky"}

    await store.save_results(batch.id, [(e, {"result": "unknown"}) for e in emails])
    assert await store.next_work(batch.id, 100, T0) == []
    await store.finish_batch(batch.id)
    await store.finish_batch(batch.id)
    record = await store.get_batch(key.id, batch.id)
    assert record is not None and record.done == 10 and record.finished_at is not None
    assert await store.unfinished_batches() == []


async def test_errors(store: MemoryStore) -> None:
    key, _ = await store.create_key("a", Plan.PAID)
    with pytest.raises(NotFoundError):
        await store.create_batch("no-such-key", None, ["a@b.c"])
    with pytest.raises(NotFoundError):
        await store.save_results("nope", [("a@b.c", {})])
    with pytest.raises(NotFoundError):
        await store.finish_batch("nope")
    with pytest.raises(ValueError, match="NUL"):
        await store.create_batch(key.id, None, ["a\x00@b.c"])
    with pytest.raises(ValueError, match="surrogate"):
        await store.create_batch(key.id, None, ["ok@b.c", "\udcff@b.c"])
    with pytest.raises(ValueError, match="surrogate"):
        await store.create_batch(key.id, "\ud800", ["ok@b.c"])
    assert [i async for i in store.iter_items("nope")] == []
    assert await store.next_work("nope", 10, T0) == []


async def test_verdicts_are_copies(store: MemoryStore) -> None:
    key, _ = await store.create_key("a", Plan.PAID)
    batch = await store.create_batch(key.id, None, ["a@b.c"])
    verdict: dict[str, object] = {"flags": [1, 2]}
    await store.save_results(batch.id, [("a@b.c", verdict)])
    verdict["flags"] = []
    (item,) = [i async for i in store.iter_items(batch.id)]
    assert item.verdict == {"flags": [1, 2]}


async def test_concurrent_saves_count_once(store: MemoryStore) -> None:
    key, _ = await store.create_key("a", Plan.PAID)
    batch = await store.create_batch(key.id, None, [f"u{i}@x.test" for i in range(200)])
    await asyncio.gather(
        *(
            store.save_results(batch.id, [(f"u{p}@x.test", {"n": n}) for p in range(n % 7, 200, 3)])
            for n in range(30)
        )
    )
    record = await store.get_batch(key.id, batch.id)
    items = [i async for i in store.iter_items(batch.id)]
    assert record is not None
    assert record.done == sum(1 for i in items if i.verdict is not None)

"""The in-process batch runner (mailvet.jobs.inprocess): chunks, resume, crash safety."""

from __future__ import annotations

import asyncio

from mailvet.jobs.inprocess import BatchRunner
from mailvet.storage.base import Plan
from mailvet.storage.memory import MemoryStore

from .kit import FakeEngine, make_settings


async def _store_with_batch(n: int) -> tuple[MemoryStore, str, list[str]]:
    store = MemoryStore()
    key, _ = await store.create_key("k", Plan.PAID)
    emails = [f"u{i}@deliverable.test" for i in range(n)]
    record = await store.create_batch(key.id, None, emails)
    return store, record.id, emails


class StopAfter(FakeEngine):
    """Answers ``limit`` verifications, then hangs (a process about to crash)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    async def verify(self, raw: str, *, offline: bool = False):  # type: ignore[no-untyped-def]
        if len(self.calls) >= self.limit:
            self.calls.append(raw)
            await asyncio.sleep(3600)
        return await super().verify(raw, offline=offline)


async def test_runner_finishes_a_batch_on_start() -> None:
    store, batch_id, emails = await _store_with_batch(9)
    engine = FakeEngine()
    runner = BatchRunner(store, engine, make_settings(batch_concurrency=2))  # type: ignore[arg-type]
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    record = await store.get_batch((await store.list_keys())[0].id, batch_id)
    assert record is not None and record.finished_at is not None and record.done == 9
    assert engine.calls == emails  # in submitted order, each once
    assert await store.unfinished_batches() == []


async def test_crash_repeats_at_most_the_in_flight_chunk() -> None:
    store, batch_id, emails = await _store_with_batch(10)
    settings = make_settings(batch_concurrency=2)  # chunks of 4
    first = StopAfter(6)  # chunk 1 (4) saved; chunk 2 hangs after 2 answers
    runner = BatchRunner(store, first, settings)  # type: ignore[arg-type]
    runner.start()
    for _ in range(500):
        if len(first.calls) >= 7:
            break
        await asyncio.sleep(0.01)
    await runner.stop()  # the "crash": chunk 2 never saved
    assert [item.position for item in await store.pending_items(batch_id, 100)] == list(
        range(4, 10)
    )

    second = FakeEngine()
    runner = BatchRunner(store, second, settings)  # type: ignore[arg-type]
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    assert second.calls == emails[4:]  # the saved chunk is not repeated
    items = await store.batch_items(batch_id)
    assert all(item.verdict is not None for item in items)


async def test_wake_picks_up_new_batches_and_engine_errors_do_not_stop_it() -> None:
    store = MemoryStore()
    key, _ = await store.create_key("k", Plan.PAID)

    class Flaky(FakeEngine):
        async def verify(self, raw: str, *, offline: bool = False):  # type: ignore[no-untyped-def]
            if raw.startswith("boom"):
                raise RuntimeError("engine bug")
            return await super().verify(raw, offline=offline)

    runner = BatchRunner(store, Flaky(), make_settings())  # type: ignore[arg-type]
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 10)
    record = await store.create_batch(key.id, "later", ["boom@deliverable.test", "a@b.test"])
    runner.wake()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    items = await store.batch_items(record.id)
    assert items[0].verdict is not None
    assert (items[0].verdict["result"], items[0].verdict["reason"]) == ("unknown", "invalid_smtp")
    assert items[1].verdict is not None

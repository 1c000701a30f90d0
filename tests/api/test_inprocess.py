"""The in-process batch runner (mailvet.jobs.inprocess) driving an engine without network
stages (FakeEngine: the ``verify`` path): slices, resume, crash safety, back-off, logs.
The lanes on the simulated internet: tests/integration/test_scheduler.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from mailvet.engine import Checked
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

    async def verify(
        self, raw: str, *, offline: bool = False, deadline: float | None = None
    ) -> Checked:
        if len(self.calls) >= self.limit:
            self.calls.append(raw)
            await asyncio.sleep(3600)
        return await super().verify(raw, offline=offline, deadline=deadline)


async def test_runner_finishes_a_batch_on_start() -> None:
    store, batch_id, emails = await _store_with_batch(9)
    engine = FakeEngine()
    runner = BatchRunner(store, engine, make_settings(batch_concurrency=2))
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    record = await store.get_batch((await store.list_keys())[0].id, batch_id)
    assert record is not None and record.finished_at is not None and record.done == 9
    assert engine.calls == emails  # in submitted order, each once
    assert await store.unfinished_batches() == []


async def test_a_stop_saves_what_was_reached_and_a_restart_asks_only_the_rest() -> None:
    store, batch_id, emails = await _store_with_batch(10)
    settings = make_settings(batch_concurrency=2)  # 4 addresses in flight at most
    first = StopAfter(6)  # 4 answered and saved; of the next 4, 2 answer, 2 hang
    runner = BatchRunner(store, first, settings, flush_interval=60.0)
    runner.start()
    await _until(lambda: len(first.calls) >= 8)
    await runner.stop()  # the 2 answers reached are saved on the way out
    assert [item.position for item in await store.pending_items(batch_id, 100)] == list(
        range(6, 10)
    )

    second = FakeEngine()
    runner = BatchRunner(store, second, settings)
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    assert second.calls == emails[6:]  # nothing saved is asked again
    assert set(second.calls) & set(first.calls) == set(emails[6:8])  # only the in-flight
    items = await store.batch_items(batch_id)
    assert all(item.verdict is not None for item in items)


async def test_duplicates_are_asked_once_and_every_position_gets_the_verdict() -> None:
    store = MemoryStore()
    key, _ = await store.create_key("k", Plan.PAID)
    emails = ["a@deliverable.test", "b@rejecting.test", "A@deliverable.test", "a@deliverable.test"]
    keys = ["a@deliverable.test", "b@rejecting.test", "a@deliverable.test", "a@deliverable.test"]
    record = await store.create_batch(key.id, None, emails, keys=keys)
    engine = FakeEngine()
    runner = BatchRunner(store, engine, make_settings())
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    assert sorted(engine.calls) == ["a@deliverable.test", "b@rejecting.test"]
    items = await store.batch_items(record.id)
    assert [i.verdict["result"] if i.verdict else None for i in items] == [
        "deliverable",
        "undeliverable",
        "deliverable",
        "deliverable",
    ]


async def test_wake_picks_up_new_batches_and_engine_errors_do_not_stop_it() -> None:
    store = MemoryStore()
    key, _ = await store.create_key("k", Plan.PAID)

    class Flaky(FakeEngine):
        async def verify(
            self, raw: str, *, offline: bool = False, deadline: float | None = None
        ) -> Checked:
            if raw.startswith("boom"):
                raise RuntimeError("engine bug")
            return await super().verify(raw, offline=offline, deadline=deadline)

    runner = BatchRunner(store, Flaky(), make_settings())
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 10)
    record = await store.create_batch(key.id, "later", ["boom@deliverable.test", "a@b.test"])
    runner.wake()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    items = await store.batch_items(record.id)
    assert items[0].verdict is not None
    # the crash is no evidence about the mailbox: "the network stages did not run"
    assert (items[0].verdict["result"], items[0].verdict["reason"]) == ("unknown", "not_checked")
    assert items[1].verdict is not None


class Recording(MemoryStore):
    """A MemoryStore that records finishes and can fail ``save_results`` for one batch."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: list[str] = []
        self.broken: str | None = None
        self.save_attempts: dict[str, int] = {}

    async def save_results(self, batch_id: str, results: list[tuple[str, dict[str, Any]]]) -> None:
        self.save_attempts[batch_id] = self.save_attempts.get(batch_id, 0) + 1
        if batch_id == self.broken:
            raise RuntimeError("disk full")
        await super().save_results(batch_id, results)

    async def finish_batch(self, batch_id: str) -> None:
        self.finished.append(batch_id)
        await super().finish_batch(batch_id)


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_small_batch_submitted_later_does_not_wait_for_a_large_one() -> None:
    store = Recording()
    key, _ = await store.create_key("k", Plan.PAID)
    large = await store.create_batch(
        key.id, "large", [f"l{i}@deliverable.test" for i in range(200)]
    )
    engine = FakeEngine()
    engine.gate = asyncio.Event()
    runner = BatchRunner(store, engine, make_settings(batch_concurrency=2))
    runner.start()
    await _until(lambda: engine.in_flight > 0)  # the large batch's first chunk is running
    small = await store.create_batch(key.id, "small", ["s1@deliverable.test", "s2@b.test"])
    runner.wake()
    engine.gate.set()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    assert store.finished == [small.id, large.id]
    small_calls = [i for i, email in enumerate(engine.calls) if email.startswith("s")]
    assert max(small_calls) < 20  # within a few chunks of the large batch, not after 200


async def test_a_failing_batch_backs_off_without_blocking_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Recording()
    key, _ = await store.create_key("k", Plan.PAID)
    broken = await store.create_batch(key.id, "broken", ["a@deliverable.test"])
    healthy = await store.create_batch(key.id, "healthy", ["b@deliverable.test"])
    store.broken = broken.id
    # a long back-off: once it starts, the broken batch is not tried again in this test
    engine = FakeEngine()
    runner = BatchRunner(store, engine, make_settings(), retry_delay=60.0, max_failures=3)
    runner.start()
    await asyncio.wait_for(_until(lambda: healthy.id in store.finished), 10)
    await _until(lambda: runner.failing.get(broken.id) == 3)
    for _ in range(20):  # the loop waits; it does not spin on the broken batch
        await asyncio.sleep(0.01)
    assert store.save_attempts[broken.id] == 3
    await runner.stop()  # (which tries once more to save what it holds)
    assert store.save_attempts[healthy.id] == 1
    assert broken.id not in store.finished
    assert any("next try in 60.0 s" in r.getMessage() for r in caplog.records)


async def test_on_checked_errors_do_not_break_the_loop() -> None:
    store, batch_id, _ = await _store_with_batch(5)

    def hook(checked: object) -> None:
        raise RuntimeError("metrics bug")

    engine = FakeEngine()
    runner = BatchRunner(store, engine, make_settings(), on_checked=hook, retry_delay=60.0)
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    assert await store.unfinished_batches() == []
    assert all(item.verdict is not None for item in await store.batch_items(batch_id))


async def test_wait_idle_does_not_return_early_when_wake_races_an_empty_lookup() -> None:
    class Slow(MemoryStore):
        """``unfinished_batches`` answers from a snapshot taken before the test releases it."""

        def __init__(self) -> None:
            super().__init__()
            self.entered = asyncio.Event()
            self.release = asyncio.Event()
            self.held = False

        async def unfinished_batches(self) -> list[str]:
            snapshot = await super().unfinished_batches()
            if not self.held:
                self.held = True
                self.entered.set()
                await self.release.wait()
            return snapshot

    store = Slow()
    key, _ = await store.create_key("k", Plan.PAID)
    runner = BatchRunner(store, FakeEngine(), make_settings())
    runner.start()
    await asyncio.wait_for(store.entered.wait(), 10)  # the runner's look-up saw no batch
    record = await store.create_batch(key.id, None, ["a@deliverable.test"])
    runner.wake()
    store.release.set()  # ... and now answers [] after the wake
    await asyncio.wait_for(runner.wait_idle(), 10)
    finished = await store.get_batch(key.id, record.id)
    await runner.stop()
    assert finished is not None and finished.finished_at is not None


async def test_a_failed_save_is_retried_without_asking_the_mail_servers_again() -> None:
    class FlakySave(Recording):
        async def save_results(
            self, batch_id: str, results: list[tuple[str, dict[str, Any]]]
        ) -> None:
            if self.save_attempts.get(batch_id, 0) < 2:  # the first two saves fail
                self.save_attempts[batch_id] = self.save_attempts.get(batch_id, 0) + 1
                raise RuntimeError("database restarting")
            await super().save_results(batch_id, results)

    store = FlakySave()
    key, _ = await store.create_key("k", Plan.PAID)
    emails = [f"u{i}@deliverable.test" for i in range(3)]
    record = await store.create_batch(key.id, None, emails)
    engine = FakeEngine()
    runner = BatchRunner(store, engine, make_settings(), retry_delay=0.01, max_failures=5)
    runner.start()
    await asyncio.wait_for(_until(lambda: record.id in store.finished), 10)
    await runner.stop()
    assert store.save_attempts[record.id] == 3
    assert engine.calls == emails  # each address probed once, not once per save attempt
    assert all(item.verdict is not None for item in await store.batch_items(record.id))


async def test_batch_start_finish_and_back_off_are_logged_without_addresses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import re

    from mailvet.logs import JsonFormatter, TextFormatter

    caplog.set_level(logging.INFO, logger="mailvet")
    store = Recording()
    key, _ = await store.create_key("k", Plan.PAID)
    emails = ["u1@deliverable.test", "u2@rejecting.test", "u3@catchall.test"]
    good = await store.create_batch(key.id, "good", emails)
    broken = await store.create_batch(key.id, "broken", ["secret.person@deliverable.test"])
    store.broken = broken.id
    engine: Any = FakeEngine()
    runner = BatchRunner(store, engine, make_settings(), retry_delay=60.0, max_failures=1)
    runner.start()
    await asyncio.wait_for(_until(lambda: good.id in store.finished), 10)
    await _until(lambda: runner.failing.get(broken.id) == 1)
    await runner.stop()

    records = [r for r in caplog.records if r.name == "mailvet.jobs.inprocess"]
    messages = [r.getMessage() for r in records]
    assert f"batch {good.id} started" in messages
    finished = [m for m in messages if m.startswith(f"batch {good.id} finished")]
    assert len(finished) == 1
    assert re.fullmatch(
        rf"batch {good.id} finished: 3 checked in \d+\.\d\d s "
        r"\(deliverable=1 undeliverable=1 risky=1 unknown=0\)",
        finished[0],
    )
    assert any(
        m.startswith(f"batch {broken.id}: store calls failed 1 times in a row; backing off")
        for m in messages
    )
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    for record in records:
        text = TextFormatter().format(record)
        assert re.match(rf"{stamp} (INFO|ERROR) mailvet\.jobs\.inprocess: batch ", text)
        line = orjson.loads(JsonFormatter().format(record))
        assert re.fullmatch(stamp, line["time"]) and line["level"] in ("INFO", "ERROR")
        for address in [*emails, "secret.person@deliverable.test"]:
            assert address not in text and address not in str(line)

"""The in-process batch runner (mailvet.jobs.inprocess) driving an engine without network
stages (FakeEngine: the ``verify`` path): slices, resume, crash safety, back-off, logs.
The lanes on the simulated internet: tests/integration/test_scheduler.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
import pytest

from mailvet.engine import Checked
from mailvet.engine.facts import DnsFacts, DnsOutcome, MxHost, SmtpFacts, SmtpOutcome
from mailvet.engine.pipeline import Engine
from mailvet.engine.smtp import Pace
from mailvet.engine.transcript import Transcript
from mailvet.jobs.inprocess import BatchRunner
from mailvet.storage.base import Plan, WorkItem
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
    undecided = [item.position async for item in store.iter_items(batch_id) if item.verdict is None]
    assert undecided == list(range(6, 10))

    second = FakeEngine()
    runner = BatchRunner(store, second, settings)
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    assert second.calls == emails[6:]  # nothing saved is asked again
    assert set(second.calls) & set(first.calls) == set(emails[6:8])  # only the in-flight
    items = [i async for i in store.iter_items(batch_id)]
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
    items = [i async for i in store.iter_items(record.id)]
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
    items = [i async for i in store.iter_items(record.id)]
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
    assert all([item.verdict is not None async for item in store.iter_items(batch_id)])


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
    assert all([item.verdict is not None async for item in store.iter_items(record.id)])


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


# --- lanes: the scheduler behind the runner, on a fake network -----------------------


class FakeNetwork:
    """DNS and SMTP sessions for the lanes: every domain's MX is mx.<domain>; RCPT is
    accepted, greylisted once ("grey..." local parts) or held (``hold`` set)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.hold: asyncio.Event | None = None
        self.greylisted: set[str] = set()

    async def lookup(self, ascii_domain: str, transcript: Transcript | None = None) -> DnsFacts:
        return DnsFacts(DnsOutcome.OK, (MxHost(10, f"mx.{ascii_domain}", ("127.0.0.1",)),))

    async def open(self, host: str, ip: str) -> FakeSession:
        return FakeSession(self, host)


class FakeSession:
    def __init__(self, net: FakeNetwork, host: str) -> None:
        self.net = net
        self.host = host

    async def rcpt_many(
        self, addresses: Sequence[str], *, pace: Pace | None = None
    ) -> list[SmtpFacts]:
        if pace is not None:
            await pace(len(addresses))
        out = []
        for address in addresses:
            if self.net.hold is not None:
                await self.net.hold.wait()
            self.net.asked.append(address)
            if address.startswith("grey") and address not in self.net.greylisted:
                self.net.greylisted.add(address)
                text = "Greylisted, try again in 1 seconds"
                out.append(SmtpFacts(SmtpOutcome.TEMPORARY, self.host, 450, "4.2.0", text))
            else:
                out.append(SmtpFacts(SmtpOutcome.ACCEPTED, self.host, 250, "2.1.5", "Ok"))
        return out

    async def catch_all(self, domain: str) -> bool | None:
        return False

    async def close(self) -> None:
        return None


class Counting(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.saves: list[int] = []
        self.limits: list[int] = []
        self.retries: list[int] = []

    async def next_work(self, batch_id: str, limit: int, now: datetime) -> list[WorkItem]:
        self.limits.append(limit)
        return await super().next_work(batch_id, limit, now)

    async def save_results(self, batch_id: str, results: list[tuple[str, dict[str, Any]]]) -> None:
        self.saves.append(len(results))
        await super().save_results(batch_id, results)

    async def schedule_retries(self, batch_id: str, retries: list[tuple[str, datetime]]) -> None:
        self.retries.append(len(retries))
        await super().schedule_retries(batch_id, retries)


def lane_runner(store: MemoryStore, net: FakeNetwork, **kwargs: Any) -> BatchRunner:
    settings = make_settings(
        allowed_special_domains=["test"], allow_private_mx=True, greylist_schedule=[1.0]
    )
    return BatchRunner(
        store, Engine(settings), settings, open_session=net.open, resolver=net, **kwargs
    )


async def test_lanes_read_the_batch_in_slices_and_save_in_bulk() -> None:
    store = Counting()
    key, _ = await store.create_key("k", Plan.PAID)
    emails = [f"u{i}@d{i % 7}.test" for i in range(500)]
    record = await store.create_batch(key.id, None, emails)
    net = FakeNetwork()
    runner = lane_runner(store, net, max_in_flight=50, flush_size=40)
    runner.start()
    await asyncio.wait_for(runner.wait_idle(), 30)
    await runner.stop()
    assert sorted(net.asked) == sorted(emails)  # each asked once
    assert max(store.limits) <= 50  # never more of the batch in memory than that
    assert sum(store.saves) == 500 and len(store.saves) <= 500 // 20  # saved in bulk
    items = [i async for i in store.iter_items(record.id)]
    assert all(i.verdict is not None and i.verdict["result"] == "deliverable" for i in items)


async def test_a_greylisted_address_waits_for_its_retry_before_the_batch_finishes() -> None:
    store = Counting()
    key, _ = await store.create_key("k", Plan.PAID)
    record = await store.create_batch(key.id, None, ["grey@a.test", "plain@a.test"])
    net = FakeNetwork()
    runner = lane_runner(store, net)
    runner.start()
    await _until(lambda: store.retries == [1])
    assert await store.next_retry_at(record.id) is not None
    waiting = await store.get_batch(key.id, record.id)
    assert waiting is not None and waiting.finished_at is None and waiting.retry_waiting == 1
    await asyncio.wait_for(runner.wait_idle(), 30)
    await runner.stop()
    assert net.asked.count("grey@a.test") == 2
    items = [i async for i in store.iter_items(record.id)]
    assert [i.verdict["result"] if i.verdict else None for i in items] == [
        "deliverable",
        "deliverable",
    ]
    assert await store.next_retry_at(record.id) is None


async def test_a_deleted_batch_is_left_alone() -> None:
    store = Counting()
    key, _ = await store.create_key("k", Plan.PAID)
    record = await store.create_batch(key.id, None, [f"u{i}@a.test" for i in range(200)])
    net = FakeNetwork()
    net.hold = asyncio.Event()
    runner = lane_runner(store, net)
    runner.start()
    await _until(lambda: runner.in_flight(record.id) > 0)
    assert await store.delete_batch(key.id, record.id)
    runner.wake()
    await asyncio.wait_for(runner.wait_idle(), 10)
    net.hold.set()
    await asyncio.sleep(0.05)
    await runner.stop()
    assert len(net.asked) < 200  # the queued rest was dropped, not asked

"""The in-process batch runner used by ``mailvet serve`` and ``mailvet batch`` (embedded).

One background task drives every unfinished batch of the store through the per-MX
``Scheduler`` (``jobs/scheduler.py``):

- it reads each batch's work in slices (``Store.next_work``: distinct addresses without
  a verdict whose retry is due), at most ``max_in_flight`` addresses of a batch at once,
  so a million-address batch never sits in memory;
- ``Planner`` (``jobs/plan.py``) decides what needs no SMTP and puts the rest on the
  lanes of their MX hosts; lanes are shared by all batches, which take turns on them;
- verdicts are saved in bulk (``save_results``) every ``flush_size`` results or
  ``flush_interval`` seconds, greylisted addresses get their retry time
  (``schedule_retries``); an address stays "in flight" (never read again) until its
  result is saved, so nothing is asked twice in one process;
- a batch is finished when ``next_work`` has nothing, nothing is in flight or unsaved,
  and ``next_retry_at`` is None; while retries wait, the runner sleeps until the first.

Progress lives only in the store: after a crash (``kill -9``) a restart resumes with
what was saved, and at most the addresses in flight at the crash are asked again.

An engine without network stages (``mailvet.testing.engine.FakeEngine``, any
``Engine`` that is not the pipeline) is driven through ``Engine.verify`` instead, one
address at a time with ``batch_concurrency`` at once; everything else is the same.

A batch whose store calls keep failing (a save raising, say) is retried ``max_failures
- 1`` times, then backs off exponentially (``retry_delay`` doubling up to
``max_backoff``) while the other batches go on; its unsaved results are kept and saved
on the next try without asking the mail servers again. A success resets it.

Logged (INFO, never an address): a batch starting in this process, a batch finished
(addresses checked here, time taken, counts by result) and, at ERROR, failures and
back-off. Run one ``serve`` process per database (docs/API.md, "Running several API
processes"): the runner does not coordinate with others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mailvet.engine.protocol import Checked
from mailvet.engine.scoring import decide
from mailvet.jobs.limits import Limiter
from mailvet.jobs.plan import LaneWork, Planner, Resolver, Work
from mailvet.jobs.scheduler import OpenSession, Scheduler
from mailvet.settings import Settings
from mailvet.verdict import Verdict

if TYPE_CHECKING:
    from mailvet.engine import Engine

__all__ = ["BatchRunner", "WorkStore"]

log = logging.getLogger(__name__)

OnChecked = Callable[[Checked], None]

MAX_FAILURES = 3  # consecutive failures of one batch before it backs off
MAX_BACKOFF = 300.0  # seconds
RESULTS = ("deliverable", "undeliverable", "risky", "unknown")
FLUSH_SIZE = 500  # results saved in one write at most ...
FLUSH_INTERVAL = 1.0  # ... or after this many seconds
# addresses of one batch read from the store and not yet saved: wide enough that the
# busiest lane keeps its sessions full while the others drain (bench/batch.py: 2,000 gave
# 1.18x the caps' bound on 100,000 addresses and a 103 MB peak, 10,000 gave 1.06x, 115 MB)
MAX_IN_FLIGHT = 10_000


class WorkStore(Protocol):
    """What the runner needs of ``storage.base.Store``."""

    async def unfinished_batches(self) -> list[str]: ...
    async def finish_batch(self, batch_id: str) -> None: ...
    async def next_work(self, batch_id: str, limit: int, now: datetime) -> Sequence[Work]: ...
    async def save_results(
        self, batch_id: str, results: list[tuple[str, dict[str, Any]]]
    ) -> None: ...
    async def schedule_retries(
        self, batch_id: str, retries: list[tuple[str, datetime]]
    ) -> None: ...
    async def next_retry_at(self, batch_id: str) -> datetime | None: ...


@runtime_checkable
class _Stages(Protocol):
    """An engine with network stages the lanes can use (``pipeline.Engine``)."""

    @property
    def dns(self) -> Any: ...
    @property
    def smtp(self) -> Any: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Batch:
    """What this process holds of one batch."""

    id: str
    planner: Planner | None
    started: float  # loop time
    in_flight: set[str] = field(default_factory=set)  # keys read and not yet saved
    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # unsaved
    retries: list[tuple[str, datetime]] = field(default_factory=list)  # unsaved
    settled: set[str] = field(default_factory=set)  # keys in results / retries
    flushed_at: float = 0.0  # loop time of the last save
    more: bool = True  # next_work may have more than what is in flight
    retry_due: datetime | None = None  # the first waiting retry, when nothing else is left
    checked: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    retry_at: float = 0.0  # loop time before which the batch is left alone (back-off)
    planning: asyncio.Task[None] | None = None  # the slice being planned (DNS look-ups)

    @property
    def planned(self) -> bool:
        return self.planning is None or self.planning.done()


class BatchRunner:
    """``start()`` it once; ``wake()`` it when a batch is created; ``stop()`` at shutdown."""

    def __init__(
        self,
        store: WorkStore,
        engine: Engine,
        settings: Settings,
        *,
        on_checked: OnChecked | None = None,
        retry_delay: float = 1.0,
        max_failures: int = MAX_FAILURES,
        max_backoff: float = MAX_BACKOFF,
        limiter: Limiter | None = None,
        open_session: OpenSession | None = None,
        resolver: Resolver | None = None,
        scheduler_options: dict[str, Any] | None = None,
        flush_size: int = FLUSH_SIZE,
        flush_interval: float = FLUSH_INTERVAL,
        max_in_flight: int = MAX_IN_FLIGHT,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.concurrency = max(1, settings.batch_concurrency)
        self.on_checked = on_checked
        self.retry_delay = retry_delay
        self.max_failures = max(1, max_failures)
        self.max_backoff = max_backoff
        self.flush_size = max(1, flush_size)
        self.flush_interval = flush_interval
        self.now = now
        self.resolver = resolver
        self.scheduler: Scheduler | None = None
        lanes = open_session is not None or isinstance(engine, _Stages)
        if lanes:
            if open_session is None or resolver is None:
                open_session, resolver = _engine_stages(engine, settings, open_session, resolver)
            self.resolver = resolver
            stage_cache = getattr(getattr(engine, "smtp", None), "catch_all_cached", None)
            options: dict[str, Any] = {"catch_all_cached": stage_cache}
            options.update(scheduler_options or {})
            self.scheduler = Scheduler(
                open_session,
                settings,
                on_final=self._lane_final,
                on_retry=self._lane_retry,
                limiter=limiter,
                **options,
            )
            self.max_in_flight = max(1, max_in_flight)
        else:  # verify() one address at a time: slices of twice the concurrency
            self.max_in_flight = self.concurrency * 2
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._direct: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._generation = 0  # bumped by wake(): an empty look-up older than it proves nothing
        self._batches: dict[str, _Batch] = {}

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def failing(self) -> dict[str, int]:
        """Batches whose last store calls failed, with how many times in a row."""
        return {b.id: b.failures for b in self._batches.values() if b.failures}

    def in_flight(self, batch_id: str) -> int:
        batch = self._batches.get(batch_id)
        return len(batch.in_flight) if batch is not None else 0

    def start(self) -> None:
        """Start the loop; it first resumes every unfinished batch in the store."""
        if self.running:
            return
        self._idle.clear()  # a restart has not looked at the store yet
        self._wake.set()  # look at the store straight away: resume after a restart
        self._task = asyncio.create_task(self._loop(), name="mailvet-batch-runner")

    def wake(self) -> None:
        """A batch was created: look for work now."""
        self._generation += 1
        self._idle.clear()
        self._wake.set()

    async def stop(self) -> None:
        """Stop; results already reached are saved (briefly, best effort), work in
        flight is left pending in the store for the next start."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        planning = [b.planning for b in self._batches.values() if b.planning is not None]
        for t in planning:
            t.cancel()
        await asyncio.gather(*planning, return_exceptions=True)
        if self.scheduler is not None:
            await self.scheduler.stop()
        direct = list(self._direct)
        for t in direct:
            t.cancel()
        await asyncio.gather(*direct, return_exceptions=True)
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(5.0):
                for batch in list(self._batches.values()):
                    await self._flush(batch)
        self._batches.clear()

    async def wait_idle(self) -> None:
        """Until every batch known to the store is finished (for tests and the CLI)."""
        await self._idle.wait()

    # --- the loop ---

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch runner failed; retrying in %.1f s", self.retry_delay)
                await asyncio.sleep(self.retry_delay)
                self._wake.set()

    async def _drain(self) -> None:
        """Pass after pass over the unfinished batches until none is left."""
        loop = asyncio.get_running_loop()
        while True:
            generation = self._generation
            batch_ids = await self.store.unfinished_batches()
            self._forget_except(batch_ids)
            if not batch_ids:
                if generation == self._generation:  # no wake() while we looked: truly idle
                    self._idle.set()
                    return
                continue
            finished = False
            for batch_id in batch_ids:
                batch = self._batches.get(batch_id)
                if batch is None:
                    batch = self._batches[batch_id] = self._new_batch(batch_id, loop.time())
                if batch.retry_at > loop.time():
                    continue
                await self._step(batch)
                finished = finished or batch_id not in self._batches
            if not finished:  # else look at the store again at once (idle, or new work)
                await self._pause(loop.time())

    async def _pause(self, now: float) -> None:
        """Sleep until something may have changed: a result, a wake(), a flush due, a
        retry due or a back-off over."""
        delays: list[float] = []
        wall = self.now()
        for batch in self._batches.values():
            if batch.retry_at > now:
                delays.append(batch.retry_at - now)
                continue
            if batch.results or batch.retries:
                delays.append(max(0.0, batch.flushed_at + self.flush_interval - now))
            if batch.planned and batch.more and len(batch.in_flight) < self.max_in_flight // 2:
                delays.append(0.0)
            if batch.retry_due is not None:  # (never a busy loop, whatever the clocks say)
                delays.append(max(0.05, (batch.retry_due - wall).total_seconds()))
        timeout = min(delays) if delays else None
        if timeout is not None and timeout <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        self._wake.clear()

    def _new_batch(self, batch_id: str, now: float) -> _Batch:
        planner = None
        if self.scheduler is not None and self.resolver is not None:
            planner = Planner(self.engine, self.resolver, self.settings)
        log.info("batch %s started", batch_id)
        return _Batch(batch_id, planner, now, flushed_at=now)

    async def _step(self, batch: _Batch) -> None:
        """Save what is due, read more work, finish when nothing is left; a failure
        counts against this batch only."""
        loop = asyncio.get_running_loop()
        try:
            if batch.results or batch.retries:
                due = loop.time() - batch.flushed_at >= self.flush_interval
                full = len(batch.results) + len(batch.retries) >= self.flush_size
                if due or full or len(batch.settled) == len(batch.in_flight):
                    await self._flush(batch)
            if batch.planned and len(batch.in_flight) <= self.max_in_flight // 2:
                await self._refill(batch)
            if batch.planned and not batch.in_flight and not batch.more:
                await self._finish_or_wait(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._failed(batch)
            return
        batch.failures = 0
        batch.retry_at = 0.0

    async def _flush(self, batch: _Batch) -> None:
        """Save the batch's results and retries; on failure they stay for the next try
        (what the mail servers said is never asked again because a save failed)."""
        results, batch.results = batch.results, []
        try:
            if results:
                await self.store.save_results(batch.id, results)
        except BaseException:
            batch.results = results + batch.results
            raise
        _settle(batch, results)
        retries, batch.retries = batch.retries, []
        try:
            if retries:
                await self.store.schedule_retries(batch.id, retries)
        except BaseException:
            batch.retries = retries + batch.retries
            raise
        _settle(batch, retries)
        batch.flushed_at = asyncio.get_running_loop().time()

    async def _refill(self, batch: _Batch) -> None:
        want = self.max_in_flight - len(batch.in_flight)
        if want <= 0:
            return
        limit = len(batch.in_flight) + want
        items = await self.store.next_work(batch.id, limit, self.now())
        batch.more = len(items) >= limit
        fresh = [item for item in items if item.key not in batch.in_flight]
        if not fresh:
            return
        batch.retry_due = None
        for item in fresh:
            batch.in_flight.add(item.key)
        if self.scheduler is None or batch.planner is None:
            for item in fresh:
                self._start_direct(batch, item)
            return
        # DNS look-ups may take seconds: planned beside the loop, which keeps saving
        batch.planning = asyncio.create_task(self._plan(batch, batch.planner, fresh))

    async def _plan(self, batch: _Batch, planner: Planner, items: Sequence[Work]) -> None:
        assert self.scheduler is not None
        try:
            plan = await planner.plan(batch.id, items)
        except asyncio.CancelledError:
            raise
        except Exception:  # the keys go back to the store's pending work
            log.exception("batch %s: planning failed; trying again", batch.id)
            for item in items:
                batch.in_flight.discard(item.key)
            batch.more = True
            self._wake.set()
            return
        if self._batches.get(batch.id) is not batch:
            return  # finished, deleted or stopped meanwhile
        for key, checked in plan.decided:
            self._settle(batch, key, checked)
        for route, works in plan.lanes.values():
            self.scheduler.submit(route, works)
        self._wake.set()

    async def _finish_or_wait(self, batch: _Batch) -> None:
        due = await self.store.next_retry_at(batch.id)
        if due is not None:
            batch.retry_due = due
            if due <= self.now():
                batch.more = True  # a retry is due: next_work returns it
            return
        await self.store.finish_batch(batch.id)
        self._batches.pop(batch.id, None)
        elapsed = asyncio.get_running_loop().time() - batch.started
        counts = " ".join(f"{name}={batch.counts[name]}" for name in RESULTS)
        log.info(
            "batch %s finished: %d checked in %.2f s (%s)",
            batch.id,
            batch.checked,
            elapsed,
            counts,
        )

    def _failed(self, batch: _Batch) -> None:
        batch.failures += 1
        count = batch.failures
        if count < self.max_failures:
            log.exception("batch %s: store call failed (%d in a row); retrying", batch.id, count)
            return
        exponent = min(count - self.max_failures, 30)
        delay = min(self.retry_delay * 2.0**exponent, self.max_backoff)
        batch.retry_at = asyncio.get_running_loop().time() + delay
        log.exception(
            "batch %s: store calls failed %d times in a row; backing off, next try in %.1f s",
            batch.id,
            count,
            delay,
        )

    def _forget_except(self, batch_ids: list[str]) -> None:
        """Drop the state of batches that are finished, deleted or gone."""
        live = set(batch_ids)
        for batch_id in [b for b in self._batches if b not in live]:
            batch = self._batches.pop(batch_id)
            if batch.planning is not None:
                batch.planning.cancel()
            if self.scheduler is not None:
                self.scheduler.drop(batch_id)

    # --- results ---

    def _settle(self, batch: _Batch, key: str, checked: Checked) -> None:
        if key in batch.settled or key not in batch.in_flight:
            return  # pragma: no cover - defensive: one result per key
        batch.settled.add(key)
        verdict = checked.verdict
        batch.results.append((key, verdict.as_dict()))
        batch.checked += 1
        batch.counts[verdict.result.value] += 1
        if self.on_checked is not None:
            try:
                self.on_checked(checked)
            except Exception:  # a metrics hook must never stop the batch
                log.exception("on_checked hook failed for a batch item")
        self._nudge(batch)

    def _nudge(self, batch: _Batch) -> None:
        """Wake the loop when a save is due now, or to start the flush timer."""
        pending = len(batch.results) + len(batch.retries)
        if pending == 1 or pending >= self.flush_size or len(batch.settled) == len(batch.in_flight):
            self._wake.set()

    def _lane_final(self, work: LaneWork, verdict: Verdict) -> None:
        batch = self._batches.get(work.batch_id)
        if batch is not None:
            self._settle(batch, work.key, Checked(verdict, work.facts))

    def _lane_retry(self, work: LaneWork, at: datetime) -> None:
        batch = self._batches.get(work.batch_id)
        if batch is None or work.key in batch.settled or work.key not in batch.in_flight:
            return
        batch.settled.add(work.key)
        batch.retries.append((work.key, at))
        self._nudge(batch)

    # --- engines without network stages: verify() one address at a time ---

    def _start_direct(self, batch: _Batch, item: Work) -> None:
        task = asyncio.create_task(self._verify(batch, item))
        self._direct.add(task)
        task.add_done_callback(self._direct.discard)

    async def _verify(self, batch: _Batch, item: Work) -> None:
        async with self._semaphore:
            if self._batches.get(batch.id) is not batch:
                return  # deleted (or stopped) while this waited for its turn
            try:
                checked = await self.engine.verify(item.email)
            except Exception:  # the engine never raises; if it does, one item must not
                log.exception("verifying a batch item failed")
                checked = _failed(self.engine, item.email)
        if self._batches.get(batch.id) is batch:
            self._settle(batch, item.key, checked)


def _engine_stages(
    engine: Engine,
    settings: Settings,
    open_session: OpenSession | None,
    resolver: Resolver | None,
) -> tuple[OpenSession, Resolver]:
    """The lanes' session opener (batch timeouts) and resolver, from the engine's stages."""
    stages: Any = engine
    if resolver is None:
        resolver = stages.dns
    if open_session is None:
        open_session = _opener(stages.smtp, settings)
    assert resolver is not None
    return open_session, resolver


def _opener(smtp: Any, settings: Settings) -> OpenSession:
    from mailvet.engine.smtp import SessionTimeouts

    timeouts = SessionTimeouts.batch(settings)

    async def open_session(host: str, ip: str) -> Any:
        return await smtp.open_session(host, ip, timeouts=timeouts)

    return open_session


def _failed(engine: Engine, raw: str) -> Checked:
    """The verdict for an item whose verification crashed: what the offline stages know,
    decided by the one verdict function with the network stages marked as not run."""
    facts = engine.check_offline(raw)
    facts.offline = False
    return Checked(decide(facts), facts)


def _settle(batch: _Batch, saved: Sequence[tuple[str, object]]) -> None:
    """The keys just saved (a verdict or a retry) are no longer in flight."""
    for key, _ in saved:
        batch.in_flight.discard(key)
        batch.settled.discard(key)

"""The in-process batch runner used by ``mailvet serve`` (embedded, SQLite).

One background task works through unfinished batches **round-robin by chunk**:
each round takes the next chunk of pending items of every unfinished batch in turn
(oldest batch first), verifies it with bounded concurrency and saves the verdicts
of the chunk in one write; a batch is finished once nothing of it is pending. So a
small batch submitted after a large one finishes after a few of the large one's
chunks, not after all of them.

A batch whose chunk keeps failing (say its save raises) is retried on the next round
``max_failures - 1`` times, then backs off exponentially (``retry_delay`` doubling up
to ``max_backoff``) while the other batches go on. A success resets it.

Progress lives only in the store, so a restart resumes where the last saved chunk
ended: a crash loses and repeats at most the chunk that was in flight.

Logged (INFO, never an address): a batch starting in this process, a batch finished
(items checked here, time taken, counts by result) and, at ERROR, failed chunks and
back-off.

The runner runs in every ``mailvet serve`` process and does not coordinate with
others: run one ``serve`` process per database (docs/API.md, "Running several
API processes").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailvet.engine.scoring import decide
from mailvet.settings import Settings
from mailvet.storage.base import BatchItem, Store

if TYPE_CHECKING:
    from mailvet.engine import Checked, Engine

__all__ = ["BatchRunner"]

log = logging.getLogger(__name__)

OnChecked = Callable[["Checked"], None]

MAX_FAILURES = 3  # consecutive failures of one batch before it backs off
MAX_BACKOFF = 300.0  # seconds
RESULTS = ("deliverable", "undeliverable", "risky", "unknown")


@dataclass
class _Progress:
    """What this process did for one batch, for the log lines (counts only)."""

    started: float  # loop time
    checked: int = 0
    results: Counter[str] = field(default_factory=Counter)


class BatchRunner:
    """``start()`` it once; ``wake()`` it when a batch is created; ``stop()`` at shutdown."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        settings: Settings,
        *,
        on_checked: OnChecked | None = None,
        retry_delay: float = 1.0,
        max_failures: int = MAX_FAILURES,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.concurrency = max(1, settings.batch_concurrency)
        self.chunk_size = self.concurrency * 2
        self.on_checked = on_checked
        self.retry_delay = retry_delay
        self.max_failures = max(1, max_failures)
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._generation = 0  # bumped by wake(): an empty look-up older than it proves nothing
        self._failures: dict[str, int] = {}  # batch id -> consecutive failed chunks
        # batch id -> verdicts whose save failed, saved on the next try without re-probing
        self._unsaved: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._retry_at: dict[str, float] = {}  # batch id -> loop time of its next try
        self._progress: dict[str, _Progress] = {}  # batch id -> counts for the log

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def failing(self) -> dict[str, int]:
        """Batches whose last chunks failed, with how many times in a row."""
        return dict(self._failures)

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
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def wait_idle(self) -> None:
        """Until every batch known to the store is finished (for tests and the CLI)."""
        await self._idle.wait()

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
        """Round after round, one chunk of each ready batch, until no batch is unfinished."""
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
            now = loop.time()
            ready = [b for b in batch_ids if self._retry_at.get(b, now) <= now]
            if not ready:  # every batch is backing off: sleep until the first is due
                delay = min(self._retry_at[b] for b in batch_ids) - now
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.clear()
                continue
            for batch_id in ready:
                await self._step(batch_id)

    async def _step(self, batch_id: str) -> None:
        """One chunk of one batch; a failure counts against that batch only."""
        try:
            await self.run_chunk(batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._failed(batch_id)
            return
        self._failures.pop(batch_id, None)
        self._retry_at.pop(batch_id, None)

    async def run_chunk(self, batch_id: str) -> bool:
        """Verify and save the next chunk of ``batch_id``; finish it when none is left.

        Returns True when the batch is finished."""
        progress = self._progress.get(batch_id)
        if progress is None:
            progress = self._progress[batch_id] = _Progress(asyncio.get_running_loop().time())
            log.info("batch %s started (chunks of %d)", batch_id, self.chunk_size)
        results = self._unsaved.pop(batch_id, None)
        if results is None:
            items = await self.store.pending_items(batch_id, self.chunk_size)
            semaphore = asyncio.Semaphore(self.concurrency)
            results = list(await asyncio.gather(*(self._check(i, semaphore) for i in items)))
        if results:
            try:
                await self.store.save_verdicts(batch_id, results)
            except BaseException:
                # keep what the mail servers told us: a storage fault must not make us
                # ask them again (politeness), only the save is retried
                self._unsaved[batch_id] = results
                raise
            progress.checked += len(results)
            progress.results.update(str(verdict.get("result")) for _, verdict in results)
        if len(results) < self.chunk_size:  # that was the last chunk
            await self.store.finish_batch(batch_id)
            self._progress.pop(batch_id, None)
            elapsed = asyncio.get_running_loop().time() - progress.started
            counts = " ".join(f"{name}={progress.results[name]}" for name in RESULTS)
            log.info(
                "batch %s finished: %d checked in %.2f s (%s)",
                batch_id,
                progress.checked,
                elapsed,
                counts,
            )
            return True
        return False

    def _failed(self, batch_id: str) -> None:
        count = self._failures.get(batch_id, 0) + 1
        self._failures[batch_id] = count
        if count < self.max_failures:
            log.exception("batch %s: chunk failed (%d in a row); retrying", batch_id, count)
            return
        exponent = min(count - self.max_failures, 30)
        delay = min(self.retry_delay * 2.0**exponent, self.max_backoff)
        self._retry_at[batch_id] = asyncio.get_running_loop().time() + delay
        log.exception(
            "batch %s: chunk failed %d times in a row; backing off, next try in %.1f s",
            batch_id,
            count,
            delay,
        )

    def _forget_except(self, batch_ids: list[str]) -> None:
        """Drop the failure state of batches that are finished (or gone)."""
        if self._failures:
            live = set(batch_ids)
            for batch_id in [b for b in self._failures if b not in live]:
                self._failures.pop(batch_id, None)
                self._retry_at.pop(batch_id, None)
                self._unsaved.pop(batch_id, None)
        if self._progress:
            live = set(batch_ids)
            for batch_id in [b for b in self._progress if b not in live]:
                self._progress.pop(batch_id, None)

    async def _check(
        self, item: BatchItem, semaphore: asyncio.Semaphore
    ) -> tuple[int, dict[str, Any]]:
        async with semaphore:
            try:
                checked = await self.engine.verify(item.email)
            except Exception:  # the engine never raises; if it does, one item must not
                log.exception("verifying batch item %d failed", item.position)
                return item.position, _failed(self.engine, item.email)
        if self.on_checked is not None:
            try:
                self.on_checked(checked)
            except Exception:  # a metrics hook must never stop the batch
                log.exception("on_checked hook failed for batch item %d", item.position)
        return item.position, checked.verdict.as_dict()


def _failed(engine: Engine, raw: str) -> dict[str, Any]:
    """The verdict for an item whose verification crashed: what the offline stages know,
    decided by the one verdict function with the network stages marked as not run."""
    facts = engine.check_offline(raw)
    facts.offline = False
    return decide(facts).as_dict()

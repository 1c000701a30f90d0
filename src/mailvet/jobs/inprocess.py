"""The in-process batch runner used by ``mailvet serve`` (embedded, SQLite).

One background task works through unfinished batches, oldest first: it takes the
next chunk of pending items, verifies them with bounded concurrency, saves the
verdicts of the chunk in one write, and finishes the batch when nothing is pending.
Progress lives only in the store, so a restart resumes where the last saved chunk
ended: a crash loses and repeats at most the chunk that was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mailvet.settings import Settings
from mailvet.storage.base import BatchItem, Store
from mailvet.verdict import Reason, Result, Verdict

if TYPE_CHECKING:
    from mailvet.engine.pipeline import Checked, Engine

__all__ = ["BatchRunner"]

log = logging.getLogger(__name__)

OnChecked = Callable[["Checked"], None]


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
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.concurrency = max(1, settings.batch_concurrency)
        self.chunk_size = self.concurrency * 2
        self.on_checked = on_checked
        self.retry_delay = retry_delay
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop; it first resumes every unfinished batch in the store."""
        if self.running:
            return
        self._wake.set()  # look at the store straight away: resume after a restart
        self._task = asyncio.create_task(self._loop(), name="mailvet-batch-runner")

    def wake(self) -> None:
        """A batch was created: look for work now."""
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
                while batch_ids := await self.store.unfinished_batches():
                    for batch_id in batch_ids:
                        await self.run_batch(batch_id)
                self._idle.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch runner failed; retrying in %.1f s", self.retry_delay)
                await asyncio.sleep(self.retry_delay)
                self._wake.set()

    async def run_batch(self, batch_id: str) -> None:
        """Verify every pending item of one batch, chunk by chunk, then finish it."""
        semaphore = asyncio.Semaphore(self.concurrency)
        while items := await self.store.pending_items(batch_id, self.chunk_size):
            results = await asyncio.gather(*(self._check(item, semaphore) for item in items))
            await self.store.save_verdicts(batch_id, list(results))
        await self.store.finish_batch(batch_id)
        log.info("batch %s finished", batch_id)

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
            self.on_checked(checked)
        return item.position, checked.verdict.as_dict()


def _failed(engine: Engine, raw: str) -> dict[str, Any]:
    """An ``unknown`` verdict for an item whose verification crashed."""
    verdict: Verdict = engine.verdict_offline(raw)
    if verdict.result is not Result.UNDELIVERABLE:
        verdict = verdict._replace(result=Result.UNKNOWN, reason=Reason.INVALID_SMTP, score=40)
    return verdict.as_dict()

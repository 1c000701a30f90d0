"""Usage per key: verdicts counted per key, per UTC day, per result, as they are made.

Real-time verdicts (``/v1/validate``, the dashboard's check) are counted here in memory
and written to the store (``Store.add_usage``) every ``FLUSH_SECONDS`` by the app's
lifespan, and once more at shutdown: the hot path never waits for the database. A
process killed with SIGKILL loses at most the last few seconds of counts. Batch
verdicts are counted by the store itself, in the transaction that saves them
(``save_results``), so each position counts once whatever process saved it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, date, datetime

from mailvet.storage.base import Store
from mailvet.storage.common import StorageError

__all__ = ["FLUSH_SECONDS", "UsageCounter", "flush", "flush_forever", "today"]

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0


def today() -> date:
    return datetime.now(UTC).date()


class UsageCounter:
    """Counts not yet written, by ``(key id, day, result)``."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, date, str]] = Counter()

    def add(self, key_id: str, result: str, n: int = 1, *, day: date | None = None) -> None:
        self._counts[(key_id, day or today(), result)] += n

    def take(self) -> list[tuple[str, date, str, int]]:
        """Everything counted so far (and forget it): the rows for ``Store.add_usage``."""
        rows = [(k, d, r, n) for (k, d, r), n in self._counts.items() if n > 0]
        self._counts = Counter()
        return rows

    def give_back(self, rows: list[tuple[str, date, str, int]]) -> None:
        """Rows a failed write did not store: counted again, for the next flush."""
        for key_id, day, result, n in rows:
            self._counts[(key_id, day, result)] += n

    def __len__(self) -> int:
        return len(self._counts)


async def flush(counter: UsageCounter, store: Store) -> None:
    """Write what ``counter`` holds; on a storage fault keep it for the next flush."""
    rows = counter.take()
    if not rows:
        return
    try:
        await store.add_usage(rows)
    except StorageError as exc:
        counter.give_back(rows)
        log.warning("usage counts not saved (kept for the next try): %s", exc)


async def flush_forever(counter: UsageCounter, store: Store, every: float = FLUSH_SECONDS) -> None:
    """``flush`` every ``every`` seconds until cancelled."""
    while True:
        await asyncio.sleep(every)
        await flush(counter, store)

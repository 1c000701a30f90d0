"""A MemoryStore with part T's batch reads, until the real ones land (i8-storage).

Only what the batch API and the webhook sender call: ``create_batch(callback_url=)``,
``iter_items``, ``counts``, ``list_batches``, ``delete_batch``, ``webhooks_due``,
``webhook_result`` and ``key_hash``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime

from mailvet.storage.base import BatchCounts, BatchItem, BatchRecord
from mailvet.storage.common import load_verdict, utcnow
from mailvet.storage.memory import MemoryStore

CHUNK = 1000


class BatchMemoryStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self._webhook_next: dict[str, datetime | None] = {}
        self.webhook_attempts: Counter[str] = Counter()
        self.chunks_read = 0  # how many chunks iter_items took, to show it streams

    async def create_batch(
        self,
        user_id: str,
        name: str | None,
        emails: list[str],
        *,
        keys: list[str] | None = None,
        callback_url: str | None = None,
    ) -> BatchRecord:
        record = await super().create_batch(user_id, name, emails)
        record = replace(record, callback_url=callback_url)
        with self._lock:
            self._batches[record.id].record = record
        return record

    async def iter_items(
        self,
        batch_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        result: str | None = None,
    ) -> AsyncIterator[BatchItem]:
        end = None if limit is None else offset + limit
        position = offset
        while end is None or position < end:
            stop = position + CHUNK if end is None else min(position + CHUNK, end)
            with self._lock:
                batch = self._batches.get(batch_id)
                if batch is None:
                    return
                pairs = list(
                    zip(batch.emails[position:stop], batch.verdicts[position:stop], strict=True)
                )
            self.chunks_read += 1
            if not pairs:
                return
            for i, (email, text) in enumerate(pairs):
                verdict = load_verdict(text)
                if result is not None and (verdict is None or verdict.get("result") != result):
                    continue
                yield BatchItem(position + i, email, verdict)
            position = stop

    async def counts(self, batch_id: str) -> BatchCounts:
        by_result: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        async for item in self.iter_items(batch_id):
            if item.verdict is not None:
                by_result[str(item.verdict["result"])] += 1
                by_reason[str(item.verdict["reason"])] += 1
        return BatchCounts(dict(by_result), dict(by_reason))

    async def list_batches(
        self, user_id: str, *, offset: int = 0, limit: int = 50
    ) -> list[BatchRecord]:
        with self._lock:
            records = [b.record for b in self._batches.values() if b.record.user_id == user_id]
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records[offset : offset + limit]

    async def delete_batch(self, user_id: str, batch_id: str) -> bool:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None or batch.record.user_id != user_id:
                return False
            now = utcnow()
            batch.emails = []
            batch.verdicts = []
            batch.record = replace(batch.record, deleted_at=now, updated_at=now)
            return True

    async def webhooks_due(self, now: datetime) -> list[BatchRecord]:
        with self._lock:
            return [
                b.record
                for b in self._batches.values()
                if b.record.finished_at is not None
                and b.record.deleted_at is None
                and b.record.callback_url is not None
                and b.record.webhook_delivered_at is None
                and _due(self._webhook_next.get(b.record.id, now), now)
            ]

    async def webhook_result(
        self, batch_id: str, *, delivered: bool, next_at: datetime | None
    ) -> None:
        with self._lock:
            batch = self._batches[batch_id]
            self.webhook_attempts[batch_id] += 1
            if delivered:
                batch.record = replace(batch.record, webhook_delivered_at=utcnow())
            else:
                self._webhook_next[batch_id] = next_at  # None: given up

    async def key_hash(self, key_id: str) -> str | None:
        with self._lock:
            return self._key_hash.get(key_id)


def _due(next_at: datetime | None, now: datetime) -> bool:
    return next_at is not None and next_at <= now

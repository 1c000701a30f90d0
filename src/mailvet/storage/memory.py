"""In-memory ``Store``: for tests, the API's development mode and one-shot CLI runs.

Same behaviour as the SQL store (keys hashed the same way, same errors, verdicts
round-tripped through JSON) but nothing survives the process. Every method body
runs under one ``threading.Lock`` without awaiting, so it is safe for concurrent
tasks and for callers on other threads or event loops.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from mailvet.storage.base import (
    ApiKey,
    BatchCounts,
    BatchItem,
    BatchRecord,
    Plan,
    UploadInfo,
    UsageRow,
    WorkItem,
)
from mailvet.storage.common import (
    MIN_REVOKE_PREFIX,
    NotFoundError,
    check_cells,
    check_emails,
    check_keys,
    check_text,
    check_when,
    dump_upload,
    dump_verdict,
    hash_secret,
    load_cells,
    load_upload,
    load_verdict,
    new_secret,
    secret_matches,
    secret_prefix,
    utcnow,
    verdict_labels,
)

__all__ = ["MemoryStore"]

READ_CHUNK = 1_000  # items copied under the lock at a time by iter_items


@dataclass(slots=True)
class _Batch:
    record: BatchRecord  # retry_waiting is computed on reading
    emails: list[str]
    keys: list[str]
    verdicts: list[str | None]  # JSON text, as the SQL store keeps it
    labels: list[tuple[str | None, str | None] | None]  # (result, reason) per position
    positions: dict[str, list[int]]  # key -> its positions, ascending
    low: int = 0  # every position below this has a verdict
    retry_at: dict[str, datetime] = field(default_factory=dict)  # waiting keys
    attempts: dict[str, int] = field(default_factory=dict)  # key -> retries done
    first_try_at: dict[str, datetime] = field(default_factory=dict)
    webhook_next_at: datetime | None = None
    cells: list[str] | None = None  # per position, as stored (storage.common.dump_cells)

    def waiting(self) -> int:
        """Items without a verdict whose key waits for a retry."""
        return sum(
            1
            for key in self.retry_at
            for position in self.positions[key]
            if self.verdicts[position] is None
        )

    def first_pending(self) -> int:
        """The first position without a verdict (or the end), remembered in ``low``."""
        position = min(self.low, len(self.verdicts))
        while position < len(self.verdicts) and self.verdicts[position] is not None:
            position += 1
        self.low = position
        return position

    def current(self) -> BatchRecord:
        return replace(self.record, retry_waiting=self.waiting())


class MemoryStore:
    """A ``Store`` kept in dictionaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}  # by id, in creation order
        self._hashes: dict[str, str] = {}  # secret hash -> key id
        self._key_hash: dict[str, str] = {}  # key id -> secret hash
        self._batches: dict[str, _Batch] = {}  # by id, in creation order
        self._usage: Counter[tuple[str, date, str]] = Counter()  # (key id, day, result)

    async def migrate(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # --- keys ---

    async def create_key(self, name: str, plan: Plan, *, admin: bool = False) -> tuple[ApiKey, str]:
        check_text(name, "key name")
        plan = Plan(plan)
        secret = new_secret()
        digest = hash_secret(secret)
        key = ApiKey(
            id=str(uuid.uuid4()),
            name=name,
            plan=plan,
            prefix=secret_prefix(secret),
            created_at=utcnow(),
            admin=bool(admin),
        )
        with self._lock:
            self._keys[key.id] = key
            self._hashes[digest] = key.id
            self._key_hash[key.id] = digest
        return key, secret

    async def authenticate(self, secret: str) -> ApiKey | None:
        if not isinstance(secret, str) or not secret:
            return None
        digest = hash_secret(secret)
        with self._lock:
            key_id = self._hashes.get(digest)
            if key_id is None:
                return None
            key = self._keys[key_id]
            stored = self._key_hash[key_id]
        if not secret_matches(stored, secret) or key.revoked_at is not None:
            return None
        return key

    async def key_hash(self, key_id: str) -> str | None:
        with self._lock:
            return self._key_hash.get(key_id)

    async def list_keys(self) -> list[ApiKey]:
        with self._lock:
            return list(self._keys.values())

    async def get_key(self, key_id: str) -> ApiKey | None:
        with self._lock:
            return self._keys.get(key_id)

    async def set_plan(self, key_id: str, plan: Plan) -> bool:
        plan = Plan(plan)
        with self._lock:
            key = self._keys.get(key_id)
            if key is None or key.revoked_at is not None:
                return False
            self._keys[key_id] = replace(key, plan=plan)
            return True

    async def revoke_key(self, key_id_or_prefix: str) -> bool:
        wanted = key_id_or_prefix.strip()
        with self._lock:
            key = self._keys.get(wanted)
            if key is None and len(wanted) >= MIN_REVOKE_PREFIX:
                matches = [
                    k
                    for k in self._keys.values()
                    if k.revoked_at is None and k.prefix.startswith(wanted)
                ]
                if len(matches) == 1:
                    key = matches[0]
            if key is None or key.revoked_at is not None:
                return False
            self._keys[key.id] = replace(key, revoked_at=utcnow())
            return True

    # --- batches ---

    async def create_batch(
        self,
        user_id: str,
        name: str | None,
        emails: list[str],
        *,
        keys: list[str] | None = None,
        callback_url: str | None = None,
        upload: UploadInfo | None = None,
        cells: list[str] | None = None,
    ) -> BatchRecord:
        if name is not None:
            check_text(name, "batch name")
        if callback_url is not None:
            check_text(callback_url, "callback_url")
        emails = list(check_emails(emails))
        item_keys = list(check_keys(emails, keys))
        check_cells(emails, upload, cells)
        if upload is not None:  # as the SQL store: checked, and read back as stored
            upload = load_upload(dump_upload(upload))
        positions: dict[str, list[int]] = {}
        for position, key in enumerate(item_keys):
            positions.setdefault(key, []).append(position)
        now = utcnow()
        record = BatchRecord(
            id=str(uuid.uuid4()),
            user_id=user_id,
            name=name,
            size=len(emails),
            created_at=now,
            updated_at=now,
            callback_url=callback_url,
            upload=upload,
        )
        with self._lock:
            if user_id not in self._keys:
                raise NotFoundError(f"no API key with id {user_id!r}")
            self._batches[record.id] = _Batch(
                record=record,
                emails=emails,
                keys=item_keys,
                verdicts=[None] * len(emails),
                labels=[None] * len(emails),
                positions=positions,
                cells=None if cells is None else list(cells),
            )
        return record

    async def get_batch(self, user_id: str, batch_id: str) -> BatchRecord | None:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None or batch.record.user_id != user_id:
                return None
            return batch.current()

    async def list_batches(
        self, user_id: str, *, offset: int = 0, limit: int = 50
    ) -> list[BatchRecord]:
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        with self._lock:
            mine = [b for b in self._batches.values() if b.record.user_id == user_id]
            mine.sort(key=lambda b: (b.record.created_at, b.record.id), reverse=True)
            return [b.current() for b in mine[offset : offset + limit]]

    async def delete_batch(self, user_id: str, batch_id: str) -> bool:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None or batch.record.user_id != user_id:
                return False
            if batch.record.deleted_at is None:
                now = utcnow()
                batch.record = replace(batch.record, deleted_at=now, updated_at=now)
                batch.emails, batch.keys, batch.verdicts, batch.labels = [], [], [], []
                batch.cells = None
                batch.positions, batch.retry_at = {}, {}
                batch.attempts, batch.first_try_at = {}, {}
                batch.low = 0
            return True

    async def finish_batch(self, batch_id: str) -> None:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            if batch.record.finished_at is not None:
                return
            now: datetime = utcnow()
            batch.record = replace(batch.record, finished_at=now, updated_at=now)

    async def unfinished_batches(self) -> list[str]:
        with self._lock:
            records = [
                b.record
                for b in self._batches.values()
                if b.record.finished_at is None and b.record.deleted_at is None
            ]
        records.sort(key=lambda r: r.created_at)
        return [r.id for r in records]

    # --- the batch engine ---

    async def next_work(self, batch_id: str, limit: int, now: datetime) -> list[WorkItem]:
        check_when(now, "now")
        if limit <= 0:
            return []
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return []
            verdicts = batch.verdicts
            position = batch.first_pending()
            work: list[WorkItem] = []
            seen: set[str] = set()
            while position < len(verdicts) and len(work) < limit:
                key = batch.keys[position]
                if verdicts[position] is None and key not in seen:
                    seen.add(key)
                    retry_at = batch.retry_at.get(key)
                    if retry_at is None or retry_at <= now:
                        work.append(
                            WorkItem(
                                key=key,
                                email=batch.emails[position],
                                positions=tuple(
                                    p for p in batch.positions[key] if verdicts[p] is None
                                ),
                                attempts=batch.attempts.get(key, 0),
                                first_try_at=batch.first_try_at.get(key),
                            )
                        )
                position += 1
            return work

    async def save_results(self, batch_id: str, results: list[tuple[str, dict[str, Any]]]) -> None:
        # Serialise before taking the lock: a bad verdict changes nothing.
        latest = {key: (dump_verdict(verdict), verdict_labels(verdict)) for key, verdict in results}
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            if batch.record.deleted_at is not None or not latest:
                return
            newly_done = 0
            today = utcnow().date()
            for key, (text, labels) in latest.items():
                for position in batch.positions.get(key, ()):
                    if batch.verdicts[position] is None:
                        newly_done += 1
                        if labels[0] is not None:
                            self._usage[(batch.record.user_id, today, labels[0])] += 1
                    batch.verdicts[position] = text
                    batch.labels[position] = labels
                batch.retry_at.pop(key, None)
            batch.record = replace(
                batch.record, done=batch.record.done + newly_done, updated_at=utcnow()
            )

    async def add_usage(self, rows: list[tuple[str, date, str, int]]) -> None:
        checked = [
            (check_text(k, "key id"), d, check_text(r, "result"), int(n)) for k, d, r, n in rows
        ]
        with self._lock:
            for key_id, day, result, count in checked:
                self._usage[(key_id, day, result)] += count

    async def usage(
        self, *, since: date, until: date | None = None, key_id: str | None = None
    ) -> list[UsageRow]:
        with self._lock:
            rows = [
                UsageRow(k, d, r, n)
                for (k, d, r), n in self._usage.items()
                if d >= since and (until is None or d <= until) and key_id in (None, k)
            ]
        return sorted(rows, key=lambda row: (row.day, row.key_id, row.result))

    async def schedule_retries(self, batch_id: str, retries: list[tuple[str, datetime]]) -> None:
        latest = {key: check_when(when, "retry_at") for key, when in retries}
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            now = utcnow()
            for key, when in latest.items():
                positions = batch.positions.get(key, ())
                if not any(batch.verdicts[p] is None for p in positions):
                    continue  # unknown, or decided already
                batch.retry_at[key] = when
                batch.attempts[key] = batch.attempts.get(key, 0) + 1
                batch.first_try_at.setdefault(key, now)

    async def next_retry_at(self, batch_id: str) -> datetime | None:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None or not batch.retry_at:
                return None
            return min(batch.retry_at.values())

    async def iter_items(
        self,
        batch_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        result: str | None = None,
        reason: str | None = None,
    ) -> AsyncIterator[BatchItem]:
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must not be negative")
        remaining = limit
        filtered = result is not None or reason is not None
        skip = offset if filtered else 0
        position = 0 if filtered else offset
        while remaining is None or remaining > 0:
            size = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
            chunk: list[tuple[int, str, str | None, str | None]] = []
            with self._lock:  # copy one chunk, then yield it without the lock
                batch = self._batches.get(batch_id)
                if batch is None:
                    return
                end = len(batch.verdicts)
                cells = batch.cells
                while position < end and len(chunk) < size:
                    labels = batch.labels[position]
                    if not filtered or (
                        labels is not None
                        and (result is None or labels[0] == result)
                        and (reason is None or labels[1] == reason)
                    ):
                        if skip:
                            skip -= 1
                        else:
                            chunk.append(
                                (
                                    position,
                                    batch.emails[position],
                                    batch.verdicts[position],
                                    None if cells is None else cells[position],
                                )
                            )
                    position += 1
            for item_position, email, text, row in chunk:
                yield BatchItem(item_position, email, load_verdict(text), load_cells(row))
            if position >= end:
                return
            if remaining is not None:
                remaining -= len(chunk)

    async def counts(self, batch_id: str) -> BatchCounts:
        by_result: dict[str, int] = {}
        by_reason: dict[str, int] = {}
        with self._lock:
            batch = self._batches.get(batch_id)
            labels = [] if batch is None else batch.labels
            for position, label in enumerate(labels):
                if label is None or batch is None or batch.verdicts[position] is None:
                    continue
                result, reason = label
                if result is not None:
                    by_result[result] = by_result.get(result, 0) + 1
                if reason is not None:
                    by_reason[reason] = by_reason.get(reason, 0) + 1
        return BatchCounts(by_result, by_reason)

    # --- webhooks ---

    async def webhooks_due(self, now: datetime) -> list[BatchRecord]:
        check_when(now, "now")
        with self._lock:
            due = [
                b
                for b in self._batches.values()
                if b.record.callback_url is not None
                and b.record.webhook_delivered_at is None
                and b.record.finished_at is not None
                and b.record.deleted_at is None
                and (
                    (b.webhook_next_at is None and b.record.webhook_attempts == 0)
                    or (b.webhook_next_at is not None and b.webhook_next_at <= now)
                )
            ]
            due.sort(key=lambda b: (b.record.finished_at or now, b.record.id))
            return [b.current() for b in due]

    async def webhook_result(
        self, batch_id: str, *, delivered: bool, next_at: datetime | None
    ) -> None:
        if next_at is not None:
            check_when(next_at, "next_at")
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            attempts = batch.record.webhook_attempts + 1
            if delivered:
                batch.record = replace(
                    batch.record, webhook_attempts=attempts, webhook_delivered_at=utcnow()
                )
                batch.webhook_next_at = None
            else:
                batch.record = replace(batch.record, webhook_attempts=attempts)
                batch.webhook_next_at = next_at

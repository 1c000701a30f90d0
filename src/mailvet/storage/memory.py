"""In-memory ``Store``: for tests, the API's development mode and one-shot CLI runs.

Same behaviour as the SQL store (keys hashed the same way, same errors, verdicts
round-tripped through JSON) but nothing survives the process. Every method body
runs under one ``threading.Lock`` without awaiting, so it is safe for concurrent
tasks and for callers on other threads or event loops.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from mailvet.storage.base import ApiKey, BatchItem, BatchRecord, Plan
from mailvet.storage.common import (
    MIN_REVOKE_PREFIX,
    NotFoundError,
    check_emails,
    check_text,
    dump_verdict,
    hash_secret,
    load_verdict,
    new_secret,
    secret_matches,
    secret_prefix,
    utcnow,
)

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Batch:
    record: BatchRecord
    emails: list[str]
    verdicts: list[str | None]  # JSON text, as the SQL store keeps it
    low: int = 0  # every position below this has a verdict


class MemoryStore:
    """A ``Store`` kept in dictionaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}  # by id, in creation order
        self._hashes: dict[str, str] = {}  # secret hash -> key id
        self._key_hash: dict[str, str] = {}  # key id -> secret hash
        self._batches: dict[str, _Batch] = {}  # by id, in creation order

    async def migrate(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # --- keys ---

    async def create_key(self, name: str, plan: Plan) -> tuple[ApiKey, str]:
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

    async def list_keys(self) -> list[ApiKey]:
        with self._lock:
            return list(self._keys.values())

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

    async def create_batch(self, user_id: str, name: str | None, emails: list[str]) -> BatchRecord:
        if name is not None:
            check_text(name, "batch name")
        emails = list(check_emails(emails))
        now = utcnow()
        record = BatchRecord(
            id=str(uuid.uuid4()),
            user_id=user_id,
            name=name,
            size=len(emails),
            created_at=now,
            updated_at=now,
        )
        with self._lock:
            if user_id not in self._keys:
                raise NotFoundError(f"no API key with id {user_id!r}")
            self._batches[record.id] = _Batch(
                record=record,
                emails=emails,
                verdicts=[None] * len(emails),
            )
        return record

    async def get_batch(self, user_id: str, batch_id: str) -> BatchRecord | None:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None or batch.record.user_id != user_id:
                return None
            return batch.record

    async def batch_items(self, batch_id: str) -> list[BatchItem]:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return []
            pairs = list(zip(batch.emails, batch.verdicts, strict=True))
        return [
            BatchItem(position=i, email=email, verdict=load_verdict(text))
            for i, (email, text) in enumerate(pairs)
        ]

    async def pending_items(self, batch_id: str, limit: int) -> list[BatchItem]:
        if limit <= 0:
            return []
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return []
            verdicts = batch.verdicts
            position = batch.low
            while position < len(verdicts) and verdicts[position] is not None:
                position += 1
            batch.low = position
            items: list[BatchItem] = []
            while position < len(verdicts) and len(items) < limit:
                if verdicts[position] is None:
                    items.append(BatchItem(position, batch.emails[position], None))
                position += 1
            return items

    async def save_verdicts(
        self, batch_id: str, verdicts: list[tuple[int, dict[str, Any]]]
    ) -> None:
        # Serialise before taking the lock: a bad verdict changes nothing.
        latest = {int(position): dump_verdict(verdict) for position, verdict in verdicts}
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            size = batch.record.size
            bad = [p for p in latest if not 0 <= p < size]
            if bad:
                raise ValueError(f"positions out of range for a batch of {size}: {bad[:5]}")
            if not latest:
                return
            newly_done = 0
            for position, text in latest.items():
                if batch.verdicts[position] is None:
                    newly_done += 1
                batch.verdicts[position] = text
            batch.record = replace(
                batch.record, done=batch.record.done + newly_done, updated_at=utcnow()
            )

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

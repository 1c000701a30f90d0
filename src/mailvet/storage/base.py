"""The storage interface: small enough for an in-memory version.

The API and the batch runners talk only to ``Store``; the SQLAlchemy implementation
(SQLite embedded, PostgreSQL at scale) and the in-memory one both satisfy it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "ApiKey",
    "BatchCounts",
    "BatchItem",
    "BatchRecord",
    "Plan",
    "Store",
    "UploadInfo",
    "UsageRow",
    "WorkItem",
]


class Plan(StrEnum):
    FREE = "free"
    PAID = "paid"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # uuid
    name: str
    plan: Plan
    prefix: str  # first characters of the secret, for display; the secret is never stored
    created_at: datetime
    revoked_at: datetime | None = None
    admin: bool = False  # may manage keys in the dashboard (v0006)


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """What a batch keeps of the file it was uploaded from (the dashboard), so that its
    downloads give the file's columns back, in their order."""

    filename: str  # as the browser named it
    fmt: str  # csv, plain, jsonl or xlsx
    columns: tuple[str, ...]  # the file's header, the address's column included
    email_column: int  # the address's index in ``columns``
    delimiter: str = ","  # a CSV's (downloads use it again)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: str  # uuid
    user_id: str  # the owning ApiKey.id
    name: str | None
    size: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    deleted_at: datetime | None = None
    done: int = 0  # items with a verdict
    callback_url: str | None = None  # called once the batch is finished (webhook)
    retry_waiting: int = 0  # items without a verdict waiting for a retry (greylisting)
    webhook_delivered_at: datetime | None = None
    webhook_attempts: int = 0  # webhook calls made so far (an addition to the fields)
    upload: UploadInfo | None = None  # the uploaded file's columns (v0005), if uploaded


@dataclass(frozen=True, slots=True)
class BatchItem:
    position: int  # 0-based position in the submitted list
    email: str
    verdict: dict[str, Any] | None  # the single-validate data object, once known
    # an uploaded row's other cells, in the file's order without the address's (v0005)
    cells: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One distinct address of a batch still to verify (``next_work``)."""

    key: str  # the de-duplication key (the normalised address), computed by the caller
    email: str  # as submitted, the spelling at the key's first position
    positions: tuple[int, ...]  # every position of the batch with this key, ascending
    attempts: int  # retries done so far (greylisting)
    first_try_at: datetime | None  # when it was first tried (for greylist_max_wait)


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """Items with a verdict, counted by its ``result`` and by its ``reason``."""

    by_result: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Verdicts given to one key on one UTC day with one result (v0006)."""

    key_id: str
    day: date
    result: str
    count: int


class Store(Protocol):
    """Async storage. Every method is safe to call concurrently."""

    async def migrate(self) -> None:
        """Create or upgrade the schema to the latest revision."""

    async def close(self) -> None: ...

    # --- keys: the secret is hashed before it touches storage ---
    async def create_key(self, name: str, plan: Plan, *, admin: bool = False) -> tuple[ApiKey, str]:
        """Create a key; return it with its secret, which is never retrievable again.
        An ``admin`` key may also manage keys in the dashboard."""

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The live (not revoked) key with this secret, compared in constant time."""

    async def list_keys(self) -> list[ApiKey]: ...

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not; None for an unknown id (the dashboard's
        session check: a session names its key by id, never by secret)."""

    async def key_hash(self, key_id: str) -> str | None:
        """The stored hash of a key's secret (hex SHA-256), revoked keys included; None
        for an unknown id. The HMAC key of the key's batch webhooks (jobs/webhook.py)."""

    async def revoke_key(self, key_id_or_prefix: str) -> bool: ...

    async def set_plan(self, key_id: str, plan: Plan) -> bool:
        """Change a live key's plan; False for an unknown or revoked key."""

    # --- batches: durable, owned by one key ---
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
        """Store a batch and its items. ``keys[i]`` is the de-duplication key of
        ``emails[i]`` (without ``keys``, each email is its own key). ``upload`` describes
        the file the batch came from; ``cells[i]`` is ``emails[i]``'s row's other cells as
        ``storage.common.dump_cells`` wrote them (both or neither)."""

    async def get_batch(self, user_id: str, batch_id: str) -> BatchRecord | None:
        """The batch if it exists *and* belongs to ``user_id``; else None.

        A deleted batch is still returned (``deleted_at`` set, ``size`` kept)."""

    async def list_batches(
        self, user_id: str, *, offset: int = 0, limit: int = 50
    ) -> list[BatchRecord]:
        """The key's batches, newest first (deleted ones included, ``deleted_at`` set)."""

    async def delete_batch(self, user_id: str, batch_id: str) -> bool:
        """Set ``deleted_at`` and remove the batch's items (addresses and verdicts).

        True when the batch exists and belongs to ``user_id`` (deleted before or not);
        False for another key's or unknown ids. A deleted batch is never worked on."""

    async def finish_batch(self, batch_id: str) -> None: ...

    async def unfinished_batches(self) -> list[str]:
        """Ids of batches neither finished nor deleted, oldest first (for resuming)."""

    # --- the batch engine: work by de-duplication key ---
    async def next_work(self, batch_id: str, limit: int, now: datetime) -> list[WorkItem]:
        """Up to ``limit`` distinct keys without a verdict whose retry is due (``retry_at``
        NULL or <= ``now``), in the order of their first position; each with every
        position of the key still without a verdict."""

    async def save_results(self, batch_id: str, results: list[tuple[str, dict[str, Any]]]) -> None:
        """``(key, verdict data)``: every position with that key gets the verdict (and its
        ``result`` and ``reason``), its retry cleared; ``done`` counts positions.
        Idempotent (a repeat overwrites, counted once), one transaction. Unknown keys
        match nothing; a deleted batch takes nothing. NotFoundError for an unknown batch.
        The positions newly decided count as the batch owner's usage (``add_usage``),
        today (UTC), by result, in the same transaction."""

    async def schedule_retries(self, batch_id: str, retries: list[tuple[str, datetime]]) -> None:
        """``(key, retry_at)`` for keys without a verdict: ``attempts`` += 1 and
        ``first_try_at`` set (to now) where it was NULL."""

    async def next_retry_at(self, batch_id: str) -> datetime | None:
        """The earliest ``retry_at`` of an item without a verdict; None when none waits."""

    def iter_items(
        self,
        batch_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        result: str | None = None,
        reason: str | None = None,
    ) -> AsyncIterator[BatchItem]:
        """Items in position order, read in chunks (never the whole batch at once).

        ``result`` (``reason``) keeps only the items whose verdict has that result
        (reason); ``offset`` and ``limit`` count the items kept."""

    async def counts(self, batch_id: str) -> BatchCounts:
        """Items with a verdict by result and by reason."""

    # --- usage (v0006) ---
    async def add_usage(self, rows: list[tuple[str, date, str, int]]) -> None:
        """``(key id, UTC day, result, count)``: add ``count`` to that day's verdicts of
        that result for that key (one transaction)."""

    async def usage(
        self, *, since: date, until: date | None = None, key_id: str | None = None
    ) -> list[UsageRow]:
        """The counts from ``since`` to ``until`` (inclusive; default: no end), of one key
        or of all, ordered by day, key id and result."""

    # --- webhooks ---
    async def webhooks_due(self, now: datetime) -> list[BatchRecord]:
        """Finished, not deleted batches with a ``callback_url`` not yet delivered whose
        next attempt is due: never tried, or ``webhook_next_at`` <= ``now``."""

    async def webhook_result(
        self, batch_id: str, *, delivered: bool, next_at: datetime | None
    ) -> None:
        """Record an attempt: ``webhook_attempts`` += 1; delivered: ``webhook_delivered_at``
        = now; else ``webhook_next_at`` = ``next_at`` (None: give up, never due again)."""

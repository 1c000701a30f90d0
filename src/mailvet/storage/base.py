"""The storage interface: small enough for an in-memory version.

The API and the batch runners talk only to ``Store``; the SQLAlchemy implementation
(SQLite embedded, PostgreSQL at scale) and the in-memory one both satisfy it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

__all__ = ["ApiKey", "BatchItem", "BatchRecord", "Plan", "Store"]


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


@dataclass(frozen=True, slots=True)
class BatchItem:
    position: int  # 0-based position in the submitted list
    email: str
    verdict: dict[str, Any] | None  # the single-validate data object, once known


class Store(Protocol):
    """Async storage. Every method is safe to call concurrently."""

    async def migrate(self) -> None:
        """Create or upgrade the schema to the latest revision."""

    async def close(self) -> None: ...

    # --- keys: the secret is hashed before it touches storage ---
    async def create_key(self, name: str, plan: Plan) -> tuple[ApiKey, str]:
        """Create a key; return it with its secret, which is never retrievable again."""

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The live (not revoked) key with this secret, compared in constant time."""

    async def list_keys(self) -> list[ApiKey]: ...

    async def revoke_key(self, key_id_or_prefix: str) -> bool: ...

    # --- batches: durable, owned by one key ---
    async def create_batch(self, user_id: str, name: str | None, emails: list[str]) -> BatchRecord:
        ...

    async def get_batch(self, user_id: str, batch_id: str) -> BatchRecord | None:
        """The batch if it exists *and* belongs to ``user_id``; else None."""

    async def batch_items(self, batch_id: str) -> list[BatchItem]:
        """All items in submitted order."""

    async def pending_items(self, batch_id: str, limit: int) -> list[BatchItem]:
        """Items without a verdict yet, in submitted order."""

    async def save_verdicts(
        self, batch_id: str, verdicts: list[tuple[int, dict[str, Any]]]
    ) -> None:
        """Record verdicts by item position; idempotent (a repeat overwrites)."""

    async def finish_batch(self, batch_id: str) -> None: ...

    async def unfinished_batches(self) -> list[str]:
        """Ids of batches not finished, oldest first (for resuming after a restart)."""

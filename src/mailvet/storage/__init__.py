"""mailvet.storage: the ``Store`` interface and its implementations.

``open_store(url)`` picks one from a database URL; call ``await store.migrate()``
before first use and ``await store.close()`` at the end.
"""

from __future__ import annotations

from mailvet.storage.base import ApiKey, BatchItem, BatchRecord, Plan, Store
from mailvet.storage.common import NotFoundError
from mailvet.storage.memory import MemoryStore

__all__ = [
    "ApiKey",
    "BatchItem",
    "BatchRecord",
    "MemoryStore",
    "NotFoundError",
    "Plan",
    "Store",
    "normalise_url",
    "open_store",
]

_SQLITE_SCHEMES = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}
_POSTGRES_SCHEMES = {
    "postgres",
    "postgresql",
    "postgresql+psycopg",
    "postgresql+psycopg_async",
    "postgresql+psycopg2",
}


def normalise_url(url: str) -> str:
    """The async-driver form of a database URL (``sqlite+aiosqlite``, ``postgresql+psycopg``).

    Raises ValueError for anything that is neither SQLite nor PostgreSQL.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    scheme = scheme.lower()
    if scheme in _SQLITE_SCHEMES:
        return "sqlite+aiosqlite://" + rest
    if scheme in _POSTGRES_SCHEMES:
        return "postgresql+psycopg://" + rest
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: use memory://, sqlite:///path "
        "or postgresql://user@host/db"
    )


def open_store(url: str) -> Store:
    """The store for ``url``: ``memory://``, ``sqlite:///path`` or ``postgresql://...``.

    Plain URLs are normalised to the async drivers (aiosqlite, psycopg). Nothing
    connects until first use; call ``await store.migrate()`` before that.
    """
    if url.strip().lower().startswith("memory:"):
        return MemoryStore()
    normalised = normalise_url(url.strip())
    from mailvet.storage.sql import SqlStore  # SQLAlchemy only when needed

    return SqlStore(normalised)

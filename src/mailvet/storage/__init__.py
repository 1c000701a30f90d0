"""mailvet.storage: the ``Store`` interface and its implementations.

``open_store(url)`` picks one from a database URL; call ``await store.migrate()``
before first use and ``await store.close()`` at the end.
"""

from __future__ import annotations

from pathlib import Path

from mailvet.storage.base import (
    ApiKey,
    BatchCounts,
    BatchItem,
    BatchRecord,
    Plan,
    Store,
    UploadInfo,
    WorkItem,
)
from mailvet.storage.common import NotFoundError, StorageError
from mailvet.storage.memory import MemoryStore

__all__ = [
    "ApiKey",
    "BatchCounts",
    "BatchItem",
    "BatchRecord",
    "MemoryStore",
    "NotFoundError",
    "Plan",
    "StorageError",
    "Store",
    "UploadInfo",
    "WorkItem",
    "describe_url",
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


def describe_url(url: str) -> str:
    """Where a database URL points, fit to print: a SQLite file's absolute path, a server
    URL with its password masked, ``memory (nothing is kept)``."""
    text = url.strip()
    if text.lower().startswith("memory:"):
        return "memory (nothing is kept)"
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(normalise_url(text))
    except Exception:  # not a URL we can open: show its scheme only, never the rest
        return f"unusable URL ({text.partition(':')[0][:20]}:...)"
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            return "SQLite in memory (nothing is kept)"
        return str(Path(database).resolve())
    return parsed.render_as_string(hide_password=True)


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

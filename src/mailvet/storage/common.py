"""Helpers shared by every store: API key secrets, clock, input checks, verdict JSON, errors.

Keys: a secret is ``mv_`` + 32 random bytes (``secrets.token_urlsafe``). Only its
SHA-256 and a short display prefix are stored. A slow password KDF (bcrypt, argon2)
buys nothing here: the secret carries 256 bits of entropy, so nobody can brute-force
it from the hash, while a fast hash keeps every authenticated request cheap and lets
the lookup be an indexed equality on the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from mailvet.storage.base import UploadInfo

__all__ = [
    "MIN_REVOKE_PREFIX",
    "PREFIX_LENGTH",
    "SECRET_PREFIX",
    "NotFoundError",
    "StorageError",
    "check_cells",
    "check_emails",
    "check_keys",
    "check_text",
    "check_when",
    "dump_cells",
    "dump_upload",
    "dump_verdict",
    "hash_secret",
    "load_cells",
    "load_upload",
    "load_verdict",
    "new_secret",
    "secret_matches",
    "secret_prefix",
    "utcnow",
    "verdict_labels",
]

SECRET_PREFIX = "mv_"
PREFIX_LENGTH = 11  # "mv_" + 8 random characters: enough to tell keys apart on a screen
MIN_REVOKE_PREFIX = 7  # "mv_" + 4: shorter prefixes never revoke anything


class NotFoundError(LookupError):
    """The batch (or key) a write names does not exist."""


class StorageError(RuntimeError):
    """The database failed (unreachable, locked, read-only, full, schema broken).

    A fault of the service, not of the request: the API answers 503 with Retry-After.
    Its text names the failure and never a statement's parameters (addresses).
    """


def new_secret() -> str:
    """A fresh API key secret: ``mv_`` + 32 random bytes, URL-safe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a secret: hex SHA-256 (see the module docstring for why fast)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(stored_hash: str, secret: str) -> bool:
    """Constant-time comparison of a stored hash with the hash of ``secret``."""
    return hmac.compare_digest(stored_hash.encode("ascii"), hash_secret(secret).encode("ascii"))


def secret_prefix(secret: str) -> str:
    """The display prefix kept for a secret (never enough to authenticate)."""
    return secret[:PREFIX_LENGTH]


_clock_lock = threading.Lock()
_last_now = datetime.min.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """Aware UTC now, microsecond precision, strictly increasing within the process.

    Strictly increasing so that "oldest first" orders by creation even when two
    batches are created within the same clock tick.
    """
    global _last_now
    now = datetime.now(UTC)
    with _clock_lock:
        if now <= _last_now:
            now = _last_now + timedelta(microseconds=1)
        _last_now = now
    return now


def check_text(value: str, what: str) -> str:
    """Reject strings no backend can store faithfully, with a clear ValueError.

    NUL characters: PostgreSQL text cannot hold them. Lone surrogates (``"\\ud800"``,
    what ``surrogateescape`` makes of broken UTF-8): not encodable as UTF-8, so no
    database can hold them. The API rejects both earlier; every store rejects them
    the same way so behaviour never depends on the backend.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character, which cannot be stored")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} is not valid Unicode text (lone surrogate at index {exc.start})"
        ) from None
    return value


def check_emails(emails: list[str]) -> list[str]:
    """``check_text`` over a whole list, fast on the common all-clean path."""
    if not isinstance(emails, list):
        raise TypeError(f"emails must be a list, not {type(emails).__name__}")
    try:
        joined = "\n".join(emails)
        if "\x00" not in joined:
            joined.encode("utf-8")
            return emails
    except (TypeError, UnicodeEncodeError):
        pass
    for index, email in enumerate(emails):
        check_text(email, f"emails[{index}]")
    return emails  # pragma: no cover - the loop above raised


def check_keys(emails: list[str], keys: list[str] | None) -> list[str]:
    """The de-duplication keys of a batch's items: ``keys`` checked, or the emails."""
    if keys is None:
        return emails
    if not isinstance(keys, list):
        raise TypeError(f"keys must be a list, not {type(keys).__name__}")
    if len(keys) != len(emails):
        raise ValueError(f"{len(keys)} keys for {len(emails)} emails")
    try:
        return check_emails(keys)
    except ValueError as exc:
        raise ValueError(str(exc).replace("emails[", "keys[", 1)) from None


def check_when(value: datetime, what: str) -> datetime:
    """An aware datetime (the store keeps UTC); naive ones are a ValueError."""
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} is a naive datetime; use aware UTC datetimes")
    return value


RESULT_LENGTH = 16  # batch_items.result
REASON_LENGTH = 32  # batch_items.reason


def verdict_labels(verdict: dict[str, Any]) -> tuple[str | None, str | None]:
    """The verdict's ``result`` and ``reason`` as the item's columns keep them (None
    where missing, not text, or not storable)."""
    return (
        _label(verdict.get("result"), RESULT_LENGTH),
        _label(verdict.get("reason"), REASON_LENGTH),
    )


def _label(value: Any, length: int) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return check_text(value[:length], "label")
    except ValueError:
        return None


def dump_verdict(verdict: dict[str, Any]) -> str:
    """Serialise a verdict for storage.

    ``ensure_ascii`` escapes everything outside ASCII (NUL and lone surrogates
    included), so any JSON-able dict round-trips exactly on every backend.
    """
    if not isinstance(verdict, dict):
        raise TypeError(f"a verdict must be a dict, not {type(verdict).__name__}")
    try:
        return json.dumps(verdict, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"verdict is not JSON-serialisable: {exc}") from None


def load_verdict(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("stored verdict is not a JSON object")
    return value


# --- uploaded columns (v0005): the batch's file header, each item's other cells ---


def dump_cells(cells: Sequence[str]) -> str:
    """An uploaded row's other cells as stored: a JSON array of strings. Any string
    round-trips (NUL escaped; lone surrogates, which no file decodes to, as ``\\udXXX``)."""
    try:
        return orjson.dumps(list(cells)).decode()
    except TypeError:  # a lone surrogate (orjson refuses them) or a non-string
        if not all(isinstance(cell, str) for cell in cells):
            raise TypeError("cells must be strings") from None
        return json.dumps(list(cells), ensure_ascii=True, separators=(",", ":"))


def load_cells(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    value = orjson.loads(text)
    if not isinstance(value, list) or not all(isinstance(cell, str) for cell in value):
        raise ValueError("stored cells are not a JSON array of strings")
    return tuple(value)


def check_cells(emails: list[str], upload: UploadInfo | None, cells: list[str] | None) -> None:
    """``create_batch``'s ``upload`` and ``cells``: both or neither, one row per email."""
    if (upload is None) != (cells is None):
        raise ValueError("upload and cells go together")
    if cells is None:
        return
    if not isinstance(cells, list):
        raise TypeError(f"cells must be a list, not {type(cells).__name__}")
    if len(cells) != len(emails):
        raise ValueError(f"{len(cells)} rows of cells for {len(emails)} emails")


def dump_upload(upload: UploadInfo) -> str:
    """The batch's ``upload`` column: a JSON object, checked on the way in."""
    columns = list(upload.columns)
    if not columns or not all(isinstance(c, str) for c in columns):
        raise ValueError("an upload's columns must be one or more strings")
    if not 0 <= upload.email_column < len(columns):
        raise ValueError(f"email_column {upload.email_column} is not one of the columns")
    if not isinstance(upload.delimiter, str) or len(upload.delimiter) != 1:
        raise ValueError("an upload's delimiter is one character")
    data = {
        "filename": upload.filename,
        "fmt": upload.fmt,
        "columns": columns,
        "email_column": upload.email_column,
        "delimiter": upload.delimiter,
    }
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"))


def load_upload(text: str | None) -> UploadInfo | None:
    from mailvet.storage.base import UploadInfo

    if text is None:
        return None
    data = json.loads(text)
    return UploadInfo(
        filename=str(data["filename"]),
        fmt=str(data["fmt"]),
        columns=tuple(str(c) for c in data["columns"]),
        email_column=int(data["email_column"]),
        delimiter=str(data.get("delimiter") or ","),
    )

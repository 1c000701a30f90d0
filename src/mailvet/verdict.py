"""The one result model and the result / reason vocabulary (Mails.so's words).

This is the bottom of the import graph: engine, storage, jobs and api all import it,
it imports none of them.

``Verdict`` is an immutable named tuple, not a pydantic model: one is built for every
address checked, and a tuple costs a fraction of a validated model (docs/BENCHMARKS.md,
"Offline pipeline"). ``scoring.decide`` builds it positionally from typed facts;
``Verdict.make`` is the validating, keyword constructor for everyone else, and
``as_dict`` gives the JSON-ready ``data`` object. The pydantic description of the wire
shape (for OpenAPI) lives in ``api/wire.py``.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = ["Reason", "Result", "Verdict", "new_id", "new_ids"]


class Result(StrEnum):
    DELIVERABLE = "deliverable"
    UNDELIVERABLE = "undeliverable"
    RISKY = "risky"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    # anchors of the Mails.so contract
    ACCEPTED_EMAIL = "accepted_email"
    INVALID_FORMAT = "invalid_format"
    INVALID_DOMAIN = "invalid_domain"
    REJECTED_EMAIL = "rejected_email"
    CATCH_ALL = "catch_all"
    DISPOSABLE = "disposable"
    MAILBOX_FULL = "mailbox_full"
    NO_CONNECT = "no_connect"
    TIMEOUT = "timeout"
    UNAVAILABLE_SMTP = "unavailable_smtp"
    INVALID_SMTP = "invalid_smtp"
    # mailvet's additive reasons (clients pass them through)
    DENIED = "denied"  # operator deny list
    BLOCKED_DOMAIN = "blocked_domain"  # domain on a configured DNS block list
    DNS_ERROR = "dns_error"  # SERVFAIL / REFUSED / broken answer: unknown, never invalid
    PRIVATE_MX = "private_mx"  # MX resolves to a private/loopback address; refused
    UNVERIFIABLE = "unverifiable"  # provider accepts any RCPT: acceptance proves little
    NOT_CHECKED = "not_checked"  # the network stages did not run (offline, or a crash)
    GREYLISTED = "greylisted"  # a batch retried a greylisted address until its max wait


# --- ids ---
# Every verdict gets a fresh random id, so ids are on the offline hot path. They are made
# a batch at a time, all in C: one os.urandom call, its hex digits spread over a byte
# template of canonical UUID text with extended-slice assignments, the variant digit
# mapped by bytes.translate. ~0.1 us an id against ~2 us for str(uuid.uuid4()).
_BATCH = 256
# where hex digit k (0..30) of an id goes in "xxxxxxxx-xxxx-4xxx-Vxxx-xxxxxxxxxxxx"
_POSITIONS = tuple(p for p in range(36) if p not in (8, 13, 14, 18, 23))
_VARIANT_POS = 19  # RFC 4122 variant: top two bits 10, so the digit is 8, 9, a or b
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_TEMPLATE = b"xxxxxxxx-xxxx-4xxx-xxxx-xxxxxxxxxxxx " * _BATCH
_POOL: list[str] = []


def _make_ids(n: int = _BATCH) -> list[str]:
    digits = os.urandom(16 * n).hex().encode("ascii")  # 32 random hex digits an id
    text = bytearray(_TEMPLATE if n == _BATCH else _TEMPLATE[:37] * n)
    for k, pos in enumerate(_POSITIONS):
        column = digits[k::32]
        text[pos::37] = column.translate(_VARIANT) if pos == _VARIANT_POS else column
    return text.decode("ascii").split()


def new_ids(n: int) -> list[str]:
    """``n`` fresh ids (``new_id``'s), made in one go: for bulk writers, which take a
    block's ids at once rather than one call per row."""
    return _make_ids(n) if n > 0 else []


def new_id() -> str:
    """A random (version 4) UUID in its canonical text form, as ``str(uuid.uuid4())``.

    122 random bits from ``os.urandom``, drawn a few hundred ids at a time. The pool is
    emptied in a forked child (``os.register_at_fork``), so forked workers never share
    ids; ``list.pop`` is atomic, so threads never get the same one.
    """
    try:
        return _POOL.pop()
    except IndexError:
        _POOL.extend(_make_ids())
        return _POOL.pop()


os.register_at_fork(after_in_child=_POOL.clear)


# --- the verdict ---


class Verdict(NamedTuple):
    """The single-validate ``data`` object, field for field, in wire order.

    Build it with ``Verdict.make(...)`` (validated, with defaults); positional
    construction is for ``scoring.decide``, whose values are valid by construction.
    """

    id: str
    email: str
    username: str | None
    domain: str | None
    did_you_mean: str | None
    mx_record: str | None
    provider: str | None
    score: int
    isv_format: bool | None
    isv_domain: bool | None
    isv_mx: bool | None
    isv_noblock: bool | None
    isv_nocatchall: bool | None
    isv_nogeneric: bool | None
    is_disposable: bool | None
    is_free: bool | None
    result: Result
    reason: Reason

    @classmethod
    def make(cls, **fields: Any) -> Verdict:
        """The validating constructor: ``email``, ``score``, ``result`` and ``reason``
        are required, ``id`` defaults to ``new_id()``, everything else to ``None``.
        Raises ``ValueError`` for an unknown or missing field, a wrong type, a score
        outside 0..100, or a result / reason outside the vocabulary."""
        unknown = fields.keys() - _FIELD_SET
        if unknown:
            raise ValueError(f"unknown Verdict fields: {', '.join(sorted(unknown))}")
        missing = _REQUIRED - fields.keys()
        if missing:
            raise ValueError(f"missing Verdict fields: {', '.join(sorted(missing))}")
        values: dict[str, Any] = dict.fromkeys(cls._fields)
        values.update(fields)
        if values["id"] is None:
            values["id"] = new_id()
        score = values["score"]
        if type(score) is not int or not 0 <= score <= 100:
            raise ValueError(f"score must be an int in 0..100, not {score!r}")
        try:
            values["result"] = Result(values["result"])
            values["reason"] = Reason(values["reason"])
        except ValueError as exc:
            raise ValueError(f"not a Verdict result / reason: {exc}") from None
        for name in _STRINGS:
            value = values[name]
            if not isinstance(value, str) and (value is not None or name in _REQUIRED):
                raise ValueError(f"{name} must be a string, not {value!r}")
        for name in _FLAGS:
            value = values[name]
            if value is not None and type(value) is not bool:
                raise ValueError(f"{name} must be true, false or null, not {value!r}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready ``data`` object, in field order (result and reason plain strings)."""
        data = dict(zip(_FIELDS, self, strict=True))
        data["result"] = self.result.value
        data["reason"] = self.reason.value
        return data


_FIELDS: tuple[str, ...] = Verdict._fields
_FIELD_SET = frozenset(_FIELDS)
_REQUIRED = frozenset({"email", "score", "result", "reason"})
_STRINGS = ("id", "email", "username", "domain", "did_you_mean", "mx_record", "provider")
_FLAGS = tuple(name for name in _FIELDS if name.startswith(("isv_", "is_")))

"""The one result model and the result / reason vocabulary (Mails.so's words).

This is the bottom of the import graph: engine, storage, jobs and api all import it,
it imports none of them.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Reason", "Result", "Verdict", "new_id"]


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
    NOT_CHECKED = "not_checked"  # offline mode: the network stages did not run


def new_id() -> str:
    """A random (version 4) UUID in its canonical text form.

    Same source and format as ``str(uuid.uuid4())`` at a fifth of the cost (no ``UUID``
    object): every verdict gets one, so it is on the offline hot path.
    """
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# RFC 4122 variant: the top two bits of the clock-sequence octet are 10 (hex 8 to b)
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class Verdict(BaseModel):
    """The single-validate ``data`` object, field for field."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id)
    email: str
    username: str | None = None
    domain: str | None = None
    did_you_mean: str | None = None
    mx_record: str | None = None
    provider: str | None = None
    score: int = Field(ge=0, le=100)
    isv_format: bool | None = None
    isv_domain: bool | None = None
    isv_mx: bool | None = None
    isv_noblock: bool | None = None
    isv_nocatchall: bool | None = None
    isv_nogeneric: bool | None = None
    is_disposable: bool | None = None
    is_free: bool | None = None
    result: Result
    reason: Reason

    @classmethod
    def trusted(cls, values: dict[str, Any]) -> Verdict:
        """Build a verdict from values that are valid by construction, skipping validation.

        For ``scoring.decide`` only (its inputs are typed facts and its scores come from
        a table), where validation cost ~1 us of the ~8 us of an offline verdict. The
        result equals what ``Verdict(**values)`` gives: same field order, same
        ``model_fields_set``, a fresh ``id`` unless one is passed. ``model_construct``
        does the same but is slower than validating.
        """
        if not _REQUIRED.issubset(values) or not _FIELDS.issuperset(values):
            return cls(**values)  # let validation report what is wrong
        data = _TEMPLATE.copy()
        data["id"] = new_id()
        data.update(values)
        verdict = cls.__new__(cls)
        _set(verdict, "__dict__", data)
        _set(verdict, "__pydantic_fields_set__", set(values))
        _set(verdict, "__pydantic_extra__", None)
        _set(verdict, "__pydantic_private__", None)
        return verdict


_set = object.__setattr__
_FIELDS = frozenset(Verdict.model_fields)
_REQUIRED = frozenset(name for name, f in Verdict.model_fields.items() if f.is_required())
# every field in declaration order (the order of ``model_dump``), defaults filled in
_TEMPLATE: dict[str, Any] = {
    name: None if f.is_required() else f.get_default(call_default_factory=False)
    for name, f in Verdict.model_fields.items()
}

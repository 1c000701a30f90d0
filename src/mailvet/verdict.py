"""The one result model and the result / reason vocabulary (Mails.so's words).

This is the bottom of the import graph: engine, storage, jobs and api all import it,
it imports none of them.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Reason", "Result", "Verdict"]


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


class Verdict(BaseModel):
    """The single-validate ``data`` object, field for field."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
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

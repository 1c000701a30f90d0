"""What each pipeline stage found out: plain frozen data, no behaviour.

Stages return these; ``scoring.decide`` turns them into a ``Verdict``. Outcomes are
data, never exceptions: "the server refused the mailbox" is an ``SmtpOutcome``.
A field that is ``None`` means the check did not run or did not conclude.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "DnsFacts",
    "DnsOutcome",
    "Facts",
    "ListFacts",
    "MxHost",
    "SmtpFacts",
    "SmtpOutcome",
    "SyntaxFacts",
    "TranscriptEntry",
]


@dataclass(frozen=True, slots=True)
class SyntaxFacts:
    """Result of the syntax stage.

    ``email`` is the normalised address when ``ok`` (local part NFC, domain lower-case
    and in its Unicode form), else the input as given (possibly truncated for display).
    ``ascii_domain`` is the IDNA A-label form used for DNS.
    """

    ok: bool
    email: str
    local: str | None = None
    domain: str | None = None
    ascii_domain: str | None = None
    error: str | None = None  # human-readable reason when not ok
    smtputf8: bool = False  # the local part needs SMTPUTF8
    # the special-use name (RFC 6761, e.g. "test") the domain falls under when it is not
    # in ``allowed_special_domains``: it can never take mail from the internet
    special_use: str | None = None
    notes: tuple[str, ...] = ()  # remarks for the transcript (a local part over 64 octets)


@dataclass(frozen=True, slots=True)
class ListFacts:
    is_disposable: bool = False
    is_free: bool = False
    is_role: bool = False
    did_you_mean: str | None = None
    allowed: bool = False  # operator allow list: trust the domain
    denied: bool = False  # operator deny list: refuse the domain


class DnsOutcome(StrEnum):
    OK = "ok"  # mail hosts found (MX, or implicit MX from A/AAAA)
    NXDOMAIN = "nxdomain"  # the domain does not exist
    NULL_MX = "null_mx"  # RFC 7505: the domain says it takes no mail
    NO_MAIL_HOST = "no_mail_host"  # no MX and no A/AAAA
    TIMEOUT = "timeout"  # resolver timed out: unknown, never invalid
    ERROR = "error"  # SERVFAIL, REFUSED, broken answer: unknown, never invalid


@dataclass(frozen=True, slots=True)
class MxHost:
    preference: int
    host: str  # without the trailing dot, lower-case
    addresses: tuple[str, ...] = ()  # resolved IPv4/IPv6, filled in by the DNS stage


@dataclass(frozen=True, slots=True)
class DnsFacts:
    outcome: DnsOutcome
    mx_hosts: tuple[MxHost, ...] = ()  # preference order
    implicit_mx: bool = False  # mail host is the domain itself (RFC 5321 5.1)
    blocklisted: bool | None = None  # on a configured DNSBL; None = not checked
    blocklists: tuple[str, ...] = ()  # which zones listed it
    error: str | None = None


class SmtpOutcome(StrEnum):
    ACCEPTED = "accepted"  # 250/251 to RCPT
    USER_UNKNOWN = "user_unknown"  # explicit 5xx about the mailbox
    DISABLED = "disabled"  # explicit 5xx: mailbox disabled / inactive
    MAILBOX_FULL = "mailbox_full"  # 452 4.2.2 / 552 5.2.2
    TEMPORARY = "temporary"  # 4xx, greylisting, 421
    BLOCKED = "blocked"  # policy block of *our* IP / sender (5.7.x, Spamhaus)
    NO_CONNECT = "no_connect"  # no MX host reachable
    TIMEOUT = "timeout"  # connect / command / overall deadline hit mid-session
    INVALID_SMTP = "invalid_smtp"  # the server spoke nonsense
    PRIVATE_MX = "private_mx"  # refused to probe a private/loopback address


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One piece of evidence: a DNS answer, an SMTP command or a reply."""

    at_ms: float  # since the validation started
    kind: str  # "dns", "connect", "send", "recv", "note"
    text: str
    host: str | None = None


@dataclass(frozen=True, slots=True)
class SmtpFacts:
    outcome: SmtpOutcome
    mx_host: str | None = None  # the host that gave the answer
    code: int | None = None  # reply code to our RCPT (or the failing command)
    enhanced: str | None = None  # RFC 3463 code, e.g. "5.1.1"
    message: str | None = None  # reply text, bounded in size
    catch_all: bool | None = None  # random address also accepted; None = not known
    tls: bool = False
    unreliable_accept: bool = False  # provider answers 250 to any RCPT (Yahoo, M365)


@dataclass(slots=True)
class Facts:
    """Everything the pipeline learned about one address."""

    syntax: SyntaxFacts
    lists: ListFacts | None = None
    dns: DnsFacts | None = None
    smtp: SmtpFacts | None = None
    provider: str | None = None
    deadline_hit: bool = False
    offline: bool = False
    transcript: list[TranscriptEntry] = field(default_factory=list)
    # a batch retried this address while the server greylisted it, until
    # greylist_max_wait (or the schedule) ran out; ``smtp`` is the last reply
    greylisted: bool = False

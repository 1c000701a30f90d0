"""The one pure verdict function: stage facts in, ``Verdict`` out.

Every row of the contract table in DESIGN.md is decided here and nowhere else. The
order of the checks is the order of precedence: a format error beats everything, a
domain that takes no mail beats any SMTP answer, an explicit 5xx about the mailbox
beats list facts, and so on. The function never raises and does no I/O.
"""

from __future__ import annotations

from mailvet.engine.facts import DnsOutcome, Facts, SmtpOutcome
from mailvet.verdict import Reason, Result, Verdict, new_id

__all__ = ["SCORES", "decide"]

# Scores by situation. Kept in one table so the docs and the tests can quote it.
SCORES: dict[str, int] = {
    "deliverable": 100,
    "deliverable_role": 85,
    "deliverable_catch_all_unknown": 95,
    "catch_all": 80,
    "unverifiable": 70,
    "timeout_sound": 60,
    "timeout_unsound": 40,
    "mailbox_full": 50,
    "unavailable_smtp": 50,
    "invalid_smtp": 50,
    "not_checked": 50,
    "greylisted": 50,
    "dns_error": 40,
    "no_connect": 40,
    "private_mx": 30,
    "blocked_domain": 20,
    "disposable": 10,
    "rejected_email": 5,
    "invalid_format": 0,
    "invalid_domain": 0,
    "denied": 0,
}

_SMTP_UNKNOWN: dict[SmtpOutcome, tuple[Reason, str]] = {
    SmtpOutcome.TEMPORARY: (Reason.UNAVAILABLE_SMTP, "unavailable_smtp"),
    SmtpOutcome.BLOCKED: (Reason.UNAVAILABLE_SMTP, "unavailable_smtp"),
    SmtpOutcome.NO_CONNECT: (Reason.NO_CONNECT, "no_connect"),
    SmtpOutcome.INVALID_SMTP: (Reason.INVALID_SMTP, "invalid_smtp"),
    SmtpOutcome.PRIVATE_MX: (Reason.PRIVATE_MX, "private_mx"),
}


def _verdict(facts: Facts, result: Result, reason: Reason, score: str) -> Verdict:
    """The verdict, built positionally (in ``Verdict`` field order): its values are
    valid by construction. Flags are ``None`` where their check did not conclude."""
    syn, lists, dns, smtp = facts.syntax, facts.lists, facts.dns, facts.smtp
    if lists is not None:
        is_disposable: bool | None = lists.is_disposable
        is_free: bool | None = lists.is_free
        isv_nogeneric: bool | None = not lists.is_role
        did_you_mean = lists.did_you_mean
    else:
        is_disposable = is_free = isv_nogeneric = did_you_mean = None
    isv_domain: bool | None = None
    isv_mx: bool | None = None
    isv_noblock: bool | None = None
    mx_record: str | None = None
    if syn.special_use is not None:  # the name can never exist in the public DNS
        isv_domain = isv_mx = False
    if dns is not None:
        if dns.outcome in (DnsOutcome.OK, DnsOutcome.NULL_MX, DnsOutcome.NO_MAIL_HOST):
            isv_domain = True
        elif dns.outcome is DnsOutcome.NXDOMAIN:
            isv_domain = False
        if dns.outcome is DnsOutcome.OK:
            isv_mx = True
        elif dns.outcome in (DnsOutcome.NXDOMAIN, DnsOutcome.NULL_MX, DnsOutcome.NO_MAIL_HOST):
            isv_mx = False
        if dns.blocklisted is not None:
            isv_noblock = not dns.blocklisted
        if dns.mx_hosts:
            mx_record = dns.mx_hosts[0].host
    isv_nocatchall: bool | None = None
    if smtp is not None:
        if smtp.catch_all is not None:
            isv_nocatchall = not smtp.catch_all
        if smtp.mx_host:
            mx_record = smtp.mx_host
    return Verdict(
        new_id(),
        syn.email,
        syn.local,
        syn.domain,
        did_you_mean,
        mx_record,
        facts.provider,
        SCORES[score],
        syn.ok,
        isv_domain,
        isv_mx,
        isv_noblock,
        isv_nocatchall,
        isv_nogeneric,
        is_disposable,
        is_free,
        result,
        reason,
    )


def decide(facts: Facts) -> Verdict:
    """Turn the stage facts about one address into its verdict."""
    if not facts.syntax.ok:
        return _verdict(facts, Result.UNDELIVERABLE, Reason.INVALID_FORMAT, "invalid_format")
    lists, dns, smtp = facts.lists, facts.dns, facts.smtp
    if lists is not None and lists.denied:
        return _verdict(facts, Result.UNDELIVERABLE, Reason.DENIED, "denied")

    # a special-use name (RFC 6761: .test, .invalid ...) is known to take no mail
    # without asking the DNS
    if facts.syntax.special_use is not None:
        return _verdict(facts, Result.UNDELIVERABLE, Reason.INVALID_DOMAIN, "invalid_domain")
    if dns is not None and dns.outcome in (
        DnsOutcome.NXDOMAIN,
        DnsOutcome.NULL_MX,
        DnsOutcome.NO_MAIL_HOST,
    ):
        return _verdict(facts, Result.UNDELIVERABLE, Reason.INVALID_DOMAIN, "invalid_domain")

    # Only an explicit 5xx about the mailbox makes an address undeliverable.
    if smtp is not None and smtp.outcome in (SmtpOutcome.USER_UNKNOWN, SmtpOutcome.DISABLED):
        return _verdict(facts, Result.UNDELIVERABLE, Reason.REJECTED_EMAIL, "rejected_email")

    if lists is not None and lists.is_disposable and not lists.allowed:
        return _verdict(facts, Result.RISKY, Reason.DISPOSABLE, "disposable")
    if dns is not None and dns.blocklisted and not (lists is not None and lists.allowed):
        return _verdict(facts, Result.RISKY, Reason.BLOCKED_DOMAIN, "blocked_domain")

    if dns is not None and dns.outcome is DnsOutcome.TIMEOUT:
        return _verdict(facts, Result.UNKNOWN, Reason.TIMEOUT, "timeout_unsound")
    if dns is not None and dns.outcome is DnsOutcome.ERROR:
        return _verdict(facts, Result.UNKNOWN, Reason.DNS_ERROR, "dns_error")

    if smtp is None:
        if facts.deadline_hit:
            sound = dns is not None and dns.outcome is DnsOutcome.OK
            score = "timeout_sound" if sound else "timeout_unsound"
            return _verdict(facts, Result.UNKNOWN, Reason.TIMEOUT, score)
        return _verdict(facts, Result.UNKNOWN, Reason.NOT_CHECKED, "not_checked")

    if smtp.outcome is SmtpOutcome.ACCEPTED:
        # A provider that may answer 250 to any RCPT (Yahoo, Microsoft 365) proves nothing
        # by accepting, unless the domain refuses an unknown recipient: the random RCPT
        # answered "user unknown" (catch_all False: Microsoft 365 with Directory-Based
        # Edge Blocking, "550 5.4.1 ... Access denied. AS(201806281)"), now or in the
        # cached check. Accepted too (True) or not concluded (None): unverifiable.
        if smtp.unreliable_accept and smtp.catch_all is not False:
            return _verdict(facts, Result.UNKNOWN, Reason.UNVERIFIABLE, "unverifiable")
        if smtp.catch_all:
            return _verdict(facts, Result.RISKY, Reason.CATCH_ALL, "catch_all")
        if lists is not None and lists.is_role:
            return _verdict(facts, Result.DELIVERABLE, Reason.ACCEPTED_EMAIL, "deliverable_role")
        if smtp.catch_all is None:
            score = "deliverable_catch_all_unknown"
            return _verdict(facts, Result.DELIVERABLE, Reason.ACCEPTED_EMAIL, score)
        return _verdict(facts, Result.DELIVERABLE, Reason.ACCEPTED_EMAIL, "deliverable")
    if smtp.outcome is SmtpOutcome.MAILBOX_FULL:
        return _verdict(facts, Result.RISKY, Reason.MAILBOX_FULL, "mailbox_full")
    if smtp.outcome is SmtpOutcome.TIMEOUT:
        sound = dns is not None and dns.outcome is DnsOutcome.OK
        return _verdict(
            facts, Result.UNKNOWN, Reason.TIMEOUT, "timeout_sound" if sound else "timeout_unsound"
        )
    if facts.greylisted and smtp.outcome is SmtpOutcome.TEMPORARY:
        return _verdict(facts, Result.UNKNOWN, Reason.GREYLISTED, "greylisted")
    reason, score = _SMTP_UNKNOWN[smtp.outcome]
    return _verdict(facts, Result.UNKNOWN, reason, score)

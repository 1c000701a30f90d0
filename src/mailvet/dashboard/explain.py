"""Plain words for a verdict and its evidence: what each reason means, what each DNS
answer and each line of the SMTP dialogue says.

Pure functions over the engine's facts and transcript (``engine/facts.py``); the page
shows each explanation next to the raw line it explains. The raw lines come from
servers we do not control: they are returned as plain text here and escaped by the
template like everything else.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from mailvet.engine.facts import Facts, SmtpOutcome, TranscriptEntry
from mailvet.engine.replies import classify
from mailvet.verdict import Reason, Result

__all__ = [
    "REASON_TEXT",
    "RESULT_TEXT",
    "Line",
    "evidence",
    "explain_dns",
    "explain_reason",
    "explain_reply",
    "explain_transcript",
    "server_said",
]

RESULT_TEXT: dict[Result, str] = {
    Result.DELIVERABLE: "Deliverable: safe to send to.",
    Result.RISKY: "Risky: mail may arrive, but the address may not be read or may hurt your "
    "sending reputation.",
    Result.UNDELIVERABLE: "Undeliverable: mail to this address will bounce. Remove it from "
    "your list.",
    Result.UNKNOWN: "Unknown: nothing could be concluded this time. Try again later; do not "
    "treat it as bad.",
}

# One sentence for every reason the engine gives (tests/unit/test_explain.py checks
# that none is missing).
REASON_TEXT: dict[Reason, str] = {
    Reason.ACCEPTED_EMAIL: "The mail server said the mailbox exists and accepts mail, and it "
    "refused a made-up address on the same domain, so its yes means something.",
    Reason.INVALID_FORMAT: "This is not a valid email address: it breaks the address syntax "
    "(RFC 5321/5322), so no server was asked.",
    Reason.INVALID_DOMAIN: "The domain cannot receive email: it does not exist, publishes a "
    "null MX (it says it takes no mail), has no mail server at all, or is a reserved name.",
    Reason.REJECTED_EMAIL: "The mail server said this mailbox does not exist or is disabled.",
    Reason.CATCH_ALL: "The mail server accepts mail for any address on this domain (catch-all), "
    "even a made-up one, so its yes says nothing about this mailbox.",
    Reason.DISPOSABLE: "The domain hands out throwaway addresses (a disposable-email service): "
    "people use them to avoid hearing from you again.",
    Reason.MAILBOX_FULL: "The mail server said the mailbox is full (over quota): the address "
    "exists but mail to it will bounce until it is emptied.",
    Reason.NO_CONNECT: "None of the domain's mail servers could be reached, so the mailbox "
    "could not be checked.",
    Reason.TIMEOUT: "A server took too long to answer (DNS or SMTP), so the check ran out of "
    "time before it could conclude.",
    Reason.UNAVAILABLE_SMTP: "The mail server refused to answer about the mailbox for now: a "
    "temporary refusal (often greylisting) or a block of the checking server, not of the "
    "mailbox.",
    Reason.INVALID_SMTP: "The mail server did not speak proper SMTP (its replies could not be "
    "understood), so nothing could be concluded.",
    Reason.DENIED: "The domain is on this server's deny list: the operator chose to refuse it.",
    Reason.BLOCKED_DOMAIN: "The domain is listed on a DNS block list this server consults "
    "(a domain known for spam or abuse).",
    Reason.DNS_ERROR: "The DNS failed to answer properly (server failure or a broken answer), "
    "so it is not known whether the domain takes mail. This is not proof it does not.",
    Reason.PRIVATE_MX: "The domain's mail server is on a private or local network address, "
    "which this server refuses to contact.",
    Reason.UNVERIFIABLE: "This provider answers yes for every address, existing or not, so its "
    "yes proves nothing about this mailbox.",
    Reason.NOT_CHECKED: "Only the offline checks ran (syntax and lists); no server was asked.",
    Reason.GREYLISTED: "The mail server kept asking us to come back later (greylisting) until "
    "the retries ran out.",
}


def explain_reason(reason: str) -> str:
    """The sentence for a reason of the vocabulary; a generic one for any other string
    (a verdict stored by a newer version)."""
    try:
        return REASON_TEXT[Reason(reason)]
    except ValueError:
        return "mailvet gave a reason this dashboard does not know yet."


@dataclass(frozen=True, slots=True)
class Line:
    """One transcript entry and what it means."""

    who: str  # "DNS", "mailvet", "server", "note"
    raw: str  # the line as recorded (plain text: the template escapes it)
    meaning: str
    tone: str = "neutral"  # "good", "bad", "warn" or "neutral": a symbol on the page too
    host: str | None = None


_REPLY = re.compile(r"^(\d{3})(?:[ -]+(\d\.\d{1,3}\.\d{1,3}))?[ -]?(.*)$", re.S)
_RCPT = re.compile(r"^RCPT TO:\s*<([^>]*)>", re.I)
_DNS = re.compile(r"^(?P<type>[A-Z]+) (?P<name>\S+): (?P<body>.*?)(?P<cached> \[\w+\])?$", re.S)
_MX_PAIR = re.compile(r"(\d+) (\S+)")
_TTL = re.compile(r"\s*\(ttl \d+\)$")


def explain_reply(raw: str, command: str | None, *, checked: str | None = None) -> tuple[str, str]:
    """The meaning of a server's reply ``raw`` to ``command`` ("banner", "EHLO", "MAIL",
    "RCPT <address>", "QUIT", ...; None if not known), and its tone. ``checked`` is the
    address being verified: an RCPT for any other address is the made-up one mailvet
    sends to detect a catch-all."""
    m = _REPLY.match(raw.strip())
    if m is None:
        return (
            "This is not an SMTP reply (a reply starts with a three-digit code): the server "
            "does not speak SMTP properly.",
            "bad",
        )
    code = int(m.group(1))
    enhanced = m.group(2)
    text = m.group(3)
    said = f"the server said {_code_words(code)}"
    verb = (command or "").split(" ", 1)[0].upper()
    if verb == "BANNER":
        if code == 220:
            return "The server greeted us: it is ready to talk.", "good"
        return f"The server refused the connection: {said}.", "bad" if code >= 500 else "warn"
    if verb in ("EHLO", "HELO"):
        if code == 250:
            return "The server accepted our greeting and listed what it supports.", "good"
        return f"The server did not accept our greeting: {said}.", "warn"
    if verb == "STARTTLS":
        if code == 220:
            return "The server agreed to encrypt the conversation (TLS).", "good"
        return "The server would not encrypt the conversation.", "warn"
    if verb == "MAIL":
        if code == 250:
            return "The server accepted our sender address.", "good"
        return (
            f"The server refused our sender address: {said}. This is about the checking "
            "server, not the mailbox.",
            "warn",
        )
    if verb == "RCPT":
        address = command.split(" ", 1)[1] if command and " " in command else ""
        probe = checked is not None and address.lower() != checked.lower()
        return _rcpt_words(code, enhanced, text, probe=probe)
    if verb == "QUIT":
        return "We said goodbye and the server closed the conversation.", "neutral"
    if verb in ("RSET", "NOOP"):
        return "The server acknowledged.", "neutral"
    if code >= 400:
        return f"The server refused: {said}.", "warn"
    return "The server answered.", "neutral"


def _code_words(code: int) -> str:
    if code < 300:
        return f"yes ({code})"
    if code < 400:
        return f"go on ({code})"
    if code < 500:
        return f"not now, try later ({code}, a temporary refusal)"
    return f"no ({code}, a permanent refusal)"


def _rcpt_words(code: int, enhanced: str | None, text: str, *, probe: bool) -> tuple[str, str]:
    if code in (250, 251):
        if probe:
            return (
                "The server also accepted a made-up address: it takes mail for any address "
                "on this domain (catch-all).",
                "warn",
            )
        return "The server said the mailbox exists: it accepts mail for it.", "good"
    outcome = classify(code, enhanced, text)
    if probe:
        if outcome in (SmtpOutcome.USER_UNKNOWN, SmtpOutcome.DISABLED):
            return (
                "As expected, the server refused a made-up address: it really checks its "
                "mailboxes (not a catch-all).",
                "good",
            )
        return "The server did not accept the made-up address either.", "neutral"
    words: dict[SmtpOutcome, tuple[str, str]] = {
        SmtpOutcome.USER_UNKNOWN: ("The server said the mailbox does not exist.", "bad"),
        SmtpOutcome.DISABLED: ("The server said the mailbox is disabled.", "bad"),
        SmtpOutcome.MAILBOX_FULL: (
            "The server said the mailbox is full (over quota): it exists, but mail to it "
            "bounces for now.",
            "warn",
        ),
        SmtpOutcome.TEMPORARY: (
            "The server said to try again later (a temporary refusal, often greylisting): "
            "nothing is known about the mailbox yet.",
            "warn",
        ),
        SmtpOutcome.BLOCKED: (
            "The server refused us, not the mailbox: the checking server's address or "
            "sender is blocked by a policy or a block list. This says nothing about the "
            "mailbox.",
            "warn",
        ),
    }
    if outcome in words:
        return words[outcome]
    return f"The server answered {code}, which says nothing clear about the mailbox.", "neutral"


def explain_dns(raw: str) -> tuple[str, str]:
    """The meaning of one DNS transcript line, e.g. ``MX example.com: 10 mx.example.com
    (ttl 300)``, and its tone."""
    m = _DNS.match(raw.strip())
    if m is None:
        if raw.startswith("no MX for"):
            return (
                "The domain has no MX record, but it has an address: mail goes to the "
                "domain itself (RFC 5321 5.1).",
                "neutral",
            )
        return "A DNS answer.", "neutral"
    rtype, name, body = m.group("type"), m.group("name"), _TTL.sub("", m.group("body"))
    cached = " (from mailvet's DNS cache)" if m.group("cached") else ""
    if body.startswith("NXDOMAIN"):
        return f"The domain {name} does not exist{cached}.", "bad"
    if body.startswith("TIMEOUT"):
        return f"The DNS did not answer in time for {name}{cached}.", "warn"
    if body.startswith("ERROR"):
        return (
            f"The DNS failed to answer for {name} (a server failure){cached}: nothing can "
            "be concluded from it.",
            "warn",
        )
    if rtype == "MX":
        if body.startswith("NODATA"):
            return f"{name} has no MX record{cached}.", "neutral"
        pairs = _MX_PAIR.findall(body)
        if any(host == "." for _, host in pairs):
            return (
                f"{name} publishes a null MX{cached}: it says it accepts no email (RFC 7505).",
                "bad",
            )
        hosts = ", ".join(host for _, host in pairs)
        count = len(pairs)
        noun = "mail server" if count == 1 else "mail servers, in order of preference"
        return f"{name} receives email through {count} {noun}: {hosts}{cached}.", "good"
    if rtype in ("A", "AAAA"):
        version = "IPv4" if rtype == "A" else "IPv6"
        if body.startswith("NODATA"):
            return f"{name} has no {version} address{cached}.", "neutral"
        return f"The {version} address of {name}{cached}.", "neutral"
    return f"A {rtype} answer for {name}{cached}.", "neutral"


def _note_words(raw: str) -> tuple[str, str]:
    text = raw.lower()
    if text.startswith("round trips"):
        return "How many times mailvet waited for the server during the conversation.", "neutral"
    if "in time" in text or "time limit" in text or text.startswith("deadline"):
        return "The server (or the whole check) ran out of time.", "warn"
    if text.startswith("not an smtp reply"):
        return "The server's reply was not SMTP: the conversation was stopped.", "bad"
    if text.startswith("refused non-public address"):
        return "The mail server's address is private or local: mailvet does not contact it.", "warn"
    if text.startswith("cannot connect") or "connect call failed" in text:
        return "Nothing answered at the mail server's address.", "bad"
    if "tls handshake failed" in text:
        return "Encryption (TLS) failed, so mailvet tried again without it.", "warn"
    if text.startswith("no address for this mx"):
        return "This mail server has no address in the DNS, so it was skipped.", "warn"
    return "A remark mailvet made during the check.", "neutral"


def explain_transcript(facts: Facts, checked: str | None = None) -> tuple[list[Line], list[Line]]:
    """The transcript as ``(dns lines, smtp lines)``, each with its meaning. SMTP replies
    are paired with the command they answer (commands may be pipelined: sent together,
    answered in order); ``checked`` is the verified address (default: the facts')."""
    address = checked if checked is not None else facts.syntax.email
    dns_lines: list[Line] = []
    smtp_lines: list[Line] = []
    waiting: dict[str | None, deque[str]] = {}
    unreliable = facts.smtp is not None and facts.smtp.unreliable_accept
    for entry in facts.transcript:
        if entry.kind == "dns":
            meaning, tone = explain_dns(entry.text)
            dns_lines.append(Line("DNS", entry.text, meaning, tone, entry.host))
        elif entry.kind == "connect":
            waiting[entry.host] = deque(["banner"])
            smtp_lines.append(
                Line(
                    "mailvet",
                    f"connect {entry.text}",
                    f"mailvet connected to the mail server {entry.host or ''} at {entry.text}.",
                    "neutral",
                    entry.host,
                )
            )
        elif entry.kind == "send":
            command = _command(entry)
            waiting.setdefault(entry.host, deque()).append(command)
            smtp_lines.append(
                Line("mailvet", entry.text, _send_words(command, address), "neutral", entry.host)
            )
        elif entry.kind == "recv":
            queue = waiting.get(entry.host)
            answered = queue.popleft() if queue else None
            meaning, tone = explain_reply(entry.text, answered, checked=address)
            if tone == "good" and unreliable and meaning.endswith("it accepts mail for it."):
                meaning, tone = (
                    "The server said yes, but this provider says yes to every address, "
                    "existing or not: it proves little.",
                    "warn",
                )
            smtp_lines.append(Line("server", entry.text, meaning, tone, entry.host))
        else:
            meaning, tone = _note_words(entry.text)
            smtp_lines.append(Line("note", entry.text, meaning, tone, entry.host))
    return dns_lines, smtp_lines


def _command(entry: TranscriptEntry) -> str:
    text = entry.text.strip()
    m = _RCPT.match(text)
    if m:
        return f"RCPT {m.group(1)}"
    verb = text.split(" ", 1)[0].split(":", 1)[0].upper()
    return verb or "?"


def _send_words(command: str, checked: str | None) -> str:
    verb, _, rest = command.partition(" ")
    if verb in ("EHLO", "HELO"):
        return "mailvet introduced itself."
    if verb == "STARTTLS":
        return "mailvet asked to encrypt the conversation."
    if verb == "MAIL":
        return "mailvet gave a sender address (no message is ever sent)."
    if verb == "RCPT":
        if checked is not None and rest.lower() != checked.lower():
            return "mailvet asked about a made-up address on the same domain (catch-all test)."
        return "mailvet asked whether the mailbox exists."
    if verb == "QUIT":
        return "mailvet ended the conversation before any message."
    if verb == "RSET":
        return "mailvet reset the conversation."
    return "mailvet sent a command."


def server_said(facts: Facts) -> tuple[str, str] | None:
    """The mail server's answer about the mailbox: its meaning and its raw words, e.g.
    ("The server said the mailbox does not exist", "550 5.1.1 ..."); None when no server
    answered about it."""
    smtp = facts.smtp
    if smtp is None or smtp.code is None:
        return None
    raw = " ".join(str(p) for p in (smtp.code, smtp.enhanced, smtp.message) if p)
    meaning, _ = explain_reply(raw, f"RCPT {facts.syntax.email}", checked=facts.syntax.email)
    if smtp.unreliable_accept and smtp.code < 300:
        meaning = "The server said yes, but this provider says yes to every address."
    return meaning.rstrip("."), raw


def _yes_no(value: bool | None, yes: str, no: str) -> str:
    if value is None:
        return "not checked"
    return yes if value else no


def evidence(data: dict[str, Any], facts: Facts) -> list[tuple[str, str]]:
    """The verdict's evidence as ``(label, plain value)`` rows, in reading order."""
    rows: list[tuple[str, str]] = [("Score", f"{data.get('score')} out of 100")]
    syn = facts.syntax
    rows.append(("Format", "valid" if syn.ok else f"invalid: {syn.error or 'bad syntax'}"))
    if data.get("did_you_mean"):
        rows.append(("Did you mean", str(data["did_you_mean"])))
    lists = facts.lists
    if lists is not None:
        rows.append(("Disposable domain", "yes" if lists.is_disposable else "no"))
        rows.append(("Free email provider", "yes" if lists.is_free else "no"))
        rows.append(
            ("Role address", "yes (a shared inbox such as info@)" if lists.is_role else "no")
        )
    if data.get("provider"):
        rows.append(("Provider", str(data["provider"])))
    dns = facts.dns
    if dns is not None:
        if dns.mx_hosts:
            hosts = ", ".join(f"{h.host} ({h.preference})" for h in dns.mx_hosts)
            rows.append(("Mail servers (MX)", hosts + (" (implicit)" if dns.implicit_mx else "")))
        else:
            rows.append(("Mail servers (MX)", f"none ({dns.outcome.value})"))
        if dns.blocklisted is not None:
            listed = ", ".join(dns.blocklists)
            rows.append(("Domain block lists", f"listed on {listed}" if listed else "not listed"))
    smtp = facts.smtp
    if smtp is not None:
        rows.append(("Answered by", smtp.mx_host or "unknown"))
        reply = " ".join(str(p) for p in (smtp.code, smtp.enhanced, smtp.message) if p)
        rows.append(("Reply to our question", reply or smtp.outcome.value))
        rows.append(
            (
                "Catch-all",
                _yes_no(smtp.catch_all, "yes: accepts any address", "no: refuses made-up ones"),
            )
        )
        rows.append(("Encrypted (TLS)", "yes" if smtp.tls else "no"))
    if facts.deadline_hit:
        rows.append(("Time limit", "reached before the check concluded"))
    return rows

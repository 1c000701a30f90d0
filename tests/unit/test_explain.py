"""Plain words for verdicts, DNS answers and the SMTP dialogue (dashboard/explain.py)."""

from __future__ import annotations

import pytest

from mailvet.dashboard.explain import (
    REASON_TEXT,
    RESULT_TEXT,
    evidence,
    explain_dns,
    explain_reason,
    explain_reply,
    explain_transcript,
    server_said,
)
from mailvet.engine.facts import (
    DnsFacts,
    DnsOutcome,
    Facts,
    ListFacts,
    MxHost,
    SmtpFacts,
    SmtpOutcome,
    SyntaxFacts,
    TranscriptEntry,
)
from mailvet.verdict import Reason, Result


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_of_the_vocabulary_has_its_own_sentence(reason: Reason) -> None:
    text = explain_reason(reason.value)
    assert text == REASON_TEXT[reason] and text.endswith(".") and len(text) > 40
    others = {r: t for r, t in REASON_TEXT.items() if r is not reason}
    assert text not in others.values()


def test_every_result_has_a_sentence_and_unknown_reasons_a_generic_one() -> None:
    assert set(RESULT_TEXT) == set(Result)
    assert "does not know" in explain_reason("from_the_future")


ME = "alice@example.com"


@pytest.mark.parametrize(
    ("raw", "command", "words", "tone"),
    [
        ("220 mx.example.com ESMTP", "banner", "greeted us", "good"),
        ("554 5.7.1 go away", "banner", "refused the connection", "bad"),
        ("421 4.3.2 busy", "banner", "try later", "warn"),
        ("250 mx.example.com PIPELINING", "EHLO", "accepted our greeting", "good"),
        ("220 2.0.0 Ready to start TLS", "STARTTLS", "encrypt", "good"),
        ("250 2.1.0 Ok", "MAIL", "accepted our sender", "good"),
        ("550 5.7.1 sender rejected", "MAIL", "not the mailbox", "warn"),
        ("250 2.1.5 Ok", f"RCPT {ME}", "the mailbox exists", "good"),
        ("250 2.1.5 Ok", "RCPT xq1z@example.com", "any address", "warn"),
        ("550 5.1.1 <alice@example.com>: user unknown", f"RCPT {ME}", "does not exist", "bad"),
        (
            "550 5.1.1 The email account that you tried to reach does not exist.",
            f"RCPT {ME}",
            "the mailbox does not exist",
            "bad",
        ),
        ("550 5.2.1 The email account is disabled", f"RCPT {ME}", "is disabled", "bad"),
        ("452 4.2.2 over quota", f"RCPT {ME}", "is full", "warn"),
        ("450 4.2.0 Greylisted, try again in 300 seconds", f"RCPT {ME}", "try again later", "warn"),
        (
            "554 5.7.1 Client host [1.2.3.4] blocked using zen.spamhaus.org",
            f"RCPT {ME}",
            "refused us, not the mailbox",
            "warn",
        ),
        ("550 5.1.1 no such user", "RCPT zz9@example.com", "As expected", "good"),
        ("221 2.0.0 Bye", "QUIT", "said goodbye", "neutral"),
        ("\x00\x16\x03 garbage", "banner", "not an SMTP reply", "bad"),
        ("250 ok", None, "answered", "neutral"),
    ],
)
def test_replies_in_plain_words(raw: str, command: str | None, words: str, tone: str) -> None:
    meaning, got_tone = explain_reply(raw, command, checked=ME)
    assert words in meaning
    assert got_tone == tone


@pytest.mark.parametrize(
    ("raw", "words", "tone"),
    [
        (
            "MX example.com: 10 mx1.example.com, 20 mx2.example.com (ttl 300)",
            "2 mail servers",
            "good",
        ),
        ("MX example.com: 10 mx.example.com (ttl 300) [cached]", "DNS cache", "good"),
        ("MX nullmx.test: 0 . (ttl 299)", "null MX", "bad"),
        ("MX nxdomain.test: NXDOMAIN", "does not exist", "bad"),
        ("MX servfail.test: ERROR (SERVFAIL)", "failed to answer", "warn"),
        ("MX slow.test: TIMEOUT", "did not answer in time", "warn"),
        ("MX a.test: NODATA", "has no MX record", "neutral"),
        ("A mx.example.com: 192.0.2.1 (ttl 300)", "IPv4 address of mx.example.com", "neutral"),
        ("AAAA mx.example.com: NODATA", "no IPv6 address", "neutral"),
        ("no MX for a.test: implicit MX (RFC 5321 5.1)", "domain itself", "neutral"),
    ],
)
def test_dns_answers_in_plain_words(raw: str, words: str, tone: str) -> None:
    meaning, got_tone = explain_dns(raw)
    assert words in meaning and got_tone == tone


def _facts(transcript: list[TranscriptEntry], **extra: object) -> Facts:
    syntax = SyntaxFacts(ok=True, email=ME, local="alice", domain="example.com")
    return Facts(syntax=syntax, transcript=transcript, **extra)  # type: ignore[arg-type]


def test_pipelined_commands_are_paired_with_their_replies_in_order() -> None:
    host = "mx.example.com"

    def e(kind: str, text: str) -> TranscriptEntry:
        return TranscriptEntry(0.0, kind, text, host)

    facts = _facts(
        [
            TranscriptEntry(0.0, "dns", "MX example.com: 10 mx.example.com (ttl 60)"),
            e("connect", "192.0.2.1:25"),
            e("recv", "220 hi"),
            e("send", "EHLO mailvet.localhost"),
            e("recv", "250 hello"),
            e("send", "MAIL FROM:<verify@mailvet.localhost>"),
            e("send", f"RCPT TO:<{ME}>"),
            e("send", "RCPT TO:<zz9@example.com>"),
            e("send", "QUIT"),
            e("recv", "250 2.1.0 Ok"),
            e("recv", "550 5.1.1 user unknown"),
            e("recv", "550 5.1.1 user unknown"),
            e("recv", "221 Bye"),
            e("note", "round trips: 3"),
        ]
    )
    dns, smtp = explain_transcript(facts)
    assert [line.who for line in dns] == ["DNS"]
    got = [(line.who, line.meaning) for line in smtp]
    assert [who for who, _ in got] == ["mailvet", "server", "mailvet", "server"] + [
        "mailvet"
    ] * 4 + ["server"] * 4 + ["note"]
    meanings = [m for _, m in got]
    assert "connected to the mail server mx.example.com at 192.0.2.1:25" in meanings[0]
    assert "asked whether the mailbox exists" in meanings[5]
    assert "made-up address" in meanings[6]
    assert meanings[8] == "The server accepted our sender address."
    assert meanings[9] == "The server said the mailbox does not exist."
    assert meanings[10].startswith("As expected, the server refused a made-up address")
    assert "said goodbye" in meanings[11]
    assert smtp[9].raw == "550 5.1.1 user unknown" and smtp[9].tone == "bad"


def test_replies_of_two_servers_are_not_mixed_up() -> None:
    facts = _facts(
        [
            TranscriptEntry(0.0, "connect", "192.0.2.1:25", "mx1"),
            TranscriptEntry(0.0, "note", "no complete reply to banner in time", "mx1"),
            TranscriptEntry(0.0, "connect", "192.0.2.2:25", "mx2"),
            TranscriptEntry(0.0, "recv", "220 ready", "mx2"),
        ]
    )
    _, smtp = explain_transcript(facts)
    assert "ran out of time" in smtp[1].meaning
    assert smtp[3].meaning == "The server greeted us: it is ready to talk."


def test_evidence_rows_say_what_was_found() -> None:
    facts = _facts(
        [],
        lists=ListFacts(is_free=True, is_role=False),
        dns=DnsFacts(DnsOutcome.OK, (MxHost(10, "mx.example.com", ("192.0.2.1",)),)),
        smtp=SmtpFacts(
            SmtpOutcome.USER_UNKNOWN, "mx.example.com", 550, "5.1.1", "no such user", False
        ),
    )
    rows = dict(evidence({"score": 5, "did_you_mean": None}, facts))
    assert rows["Score"] == "5 out of 100"
    assert rows["Free email provider"] == "yes"
    assert rows["Mail servers (MX)"] == "mx.example.com (10)"
    assert rows["Reply to our question"] == "550 5.1.1 no such user"
    assert rows["Catch-all"] == "no: refuses made-up ones"
    bad = Facts(syntax=SyntaxFacts(ok=False, email="x", error="no @"))
    assert dict(evidence({"score": 0}, bad))["Format"] == "invalid: no @"


def test_what_the_server_said_in_one_sentence_with_its_words() -> None:
    unknown = SmtpFacts(SmtpOutcome.USER_UNKNOWN, "mx", 550, "5.1.1", "no such user here")
    assert server_said(_facts([], smtp=unknown)) == (
        "The server said the mailbox does not exist",
        "550 5.1.1 no such user here",
    )
    full = SmtpFacts(SmtpOutcome.MAILBOX_FULL, "mx", 452, "4.2.2", "over quota")
    said = server_said(_facts([], smtp=full))
    assert said is not None and said[0].startswith("The server said the mailbox is full")
    yahoo = SmtpFacts(SmtpOutcome.ACCEPTED, "mx", 250, "2.1.5", "ok", unreliable_accept=True)
    assert server_said(_facts([], smtp=yahoo)) == (
        "The server said yes, but this provider says yes to every address",
        "250 2.1.5 ok",
    )
    dead = SmtpFacts(SmtpOutcome.NO_CONNECT, "mx", message="cannot connect")
    assert server_said(_facts([], smtp=dead)) is None
    assert server_said(_facts([])) is None

"""engine/replies.py: real server replies -> SmtpOutcome, through the SMTP stage's parser.

The rows live in ``engine/reply_table.py`` (reply as sent, expected outcome, source).
Every row goes through ``parse_reply_lines``, the function ``engine/smtp.py`` builds
each reply with, then ``classify_reply``.
"""

from __future__ import annotations

import pytest

from mailvet.engine.facts import SmtpFacts, SmtpOutcome
from mailvet.engine.replies import (
    MAX_TEXT_LINES,
    Reply,
    classify,
    classify_reply,
    greylist_delay,
    parse_enhanced,
    parse_reply_lines,
)
from mailvet.engine.reply_table import ROWS, ReplyRow

UU = SmtpOutcome.USER_UNKNOWN
DIS = SmtpOutcome.DISABLED
BLK = SmtpOutcome.BLOCKED
TMP = SmtpOutcome.TEMPORARY


def _parse(raw: str) -> Reply:
    return parse_reply_lines(raw.split("\n"))


def _id(row: object) -> str:
    return str(row.raw if isinstance(row, ReplyRow) else row)[:70]


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_real_replies(row: ReplyRow) -> None:
    assert classify_reply(_parse(row.raw)) is row.expected, row.source


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_same_when_the_enhanced_code_is_left_in_the_text(row: ReplyRow) -> None:
    reply = _parse(row.raw)
    assert classify(reply.code, None, " ".join(reply.lines)) is row.expected


def test_table_is_large_sourced_and_covers_every_outcome() -> None:
    assert len(ROWS) >= 170
    assert {r.expected for r in ROWS} == set(SmtpOutcome) - {
        SmtpOutcome.NO_CONNECT,
        SmtpOutcome.TIMEOUT,
        SmtpOutcome.PRIVATE_MX,
    }
    assert all(r.source.strip() for r in ROWS)
    assert len({r.raw for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize(
    "name",
    [
        "spamhaus",
        "barracuda",
        "sorbs",
        "spamcop",
        "uceprotect",
        "proofpoint",
        "mimecast",
        "ironport",
        "S3150",
        "AS(",
        "5.7.511",
        "5.7.708",
        "4.7.0",
        "4.7.28",
        "5.7.28",
        "5.7.26",
    ],
)
def test_table_has_the_big_block_lists_and_gateways(name: str) -> None:
    rows = [r for r in ROWS if name.lower() in (r.raw + r.source).lower()]
    assert rows, name
    assert any(r.expected is BLK for r in rows), name


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_never_undeliverable_without_explicit_5xx(row: ReplyRow) -> None:
    reply = _parse(row.raw)
    if classify_reply(reply) in (UU, DIS):
        assert 500 <= reply.code <= 599
        assert not (reply.enhanced or "").startswith("5.7.")


# --- the rule in the module docstring ------------------------------------------------------

_AMBIGUOUS = "550 Requested action not taken: mailbox unavailable"
_WEAK = [
    "[192.0.2.1]",
    "192.0.2.1",
    "(client 198.51.100.7)",
    "[2001:db8::25]",
    "[IPv6:2001:db8::25]",
    "2001:db8::25",
    "fe80::1",
    "see https://example.net/delist?ip=192.0.2.1",
    "http://example.net",
    "www.example.net/help",
    "- listed",
]
_STRONG = [
    "blocked using zen.spamhaus.org",
    "IP is listed in b.barracudacentral.org",
    "Reject due to policy restrictions",
    "due to the sending IP's poor reputation",
    "Client host [192.0.2.1] rejected",
    "your IP is on our block list",
    "UCEPROTECT-Level 2",
    "see SpamCop",
]
_CLEAR = [
    "550 5.1.1 The email account that you tried to reach does not exist.",
    "550 5.1.1 <x@y>: Recipient address rejected: User unknown in virtual mailbox table",
    "550 No such user here",
    "550 Mailbox not found.",
    "550 Invalid Recipient -",
    "550 5.2.1 The email account that you tried to reach is disabled.",
]


@pytest.mark.parametrize("weak", _WEAK)
def test_a_weak_signal_makes_mailbox_unavailable_blocked(weak: str) -> None:
    assert classify_reply(_parse(_AMBIGUOUS)) is UU
    assert classify_reply(_parse(f"{_AMBIGUOUS} {weak}")) is BLK


@pytest.mark.parametrize("weak", _WEAK)
@pytest.mark.parametrize("clear", _CLEAR)
def test_a_weak_signal_does_not_override_a_clear_statement(clear: str, weak: str) -> None:
    expected = classify_reply(_parse(clear))
    assert expected in (UU, DIS)
    assert classify_reply(_parse(f"{clear} {weak}")) is expected


@pytest.mark.parametrize("strong", _STRONG)
@pytest.mark.parametrize("clear", [*_CLEAR, _AMBIGUOUS])
def test_a_strong_signal_overrides_even_a_clear_statement(clear: str, strong: str) -> None:
    assert classify_reply(_parse(f"{clear} {strong}")) is BLK


@pytest.mark.parametrize(
    "raw",
    [
        "550 5.1.1 <blocked.sender@spamhaus.example>: Recipient address rejected: User unknown",
        "550 5.1.1 192.0.2.1@example.net... User unknown",
        "550 Requested action not taken: mailbox unavailable <policy.listed@192.0.2.1.example>",
    ],
)
def test_the_echoed_recipient_address_is_never_evidence(raw: str) -> None:
    assert classify_reply(_parse(raw)) is UU


@pytest.mark.parametrize("code", [450, 551, 552, 553, 554])
def test_mailbox_unavailable_alone_counts_only_with_550(code: int) -> None:
    outcome = classify_reply(_parse(f"{code} Requested action not taken: mailbox unavailable"))
    assert outcome not in (UU, DIS)


@pytest.mark.parametrize(
    "raw",
    [
        "550 5.1.1 <verify@x>: Sender address rejected: User unknown in local recipient table",
        "550 5.1.1 The email account that you tried to reach does not exist.",
        "550 5.2.1 The email account that you tried to reach is disabled.",
        "552 5.2.2 Mailbox full",
    ],
)
def test_mailbox_words_at_mail_from_are_about_us(raw: str) -> None:
    reply = _parse(raw)
    assert classify_reply(reply, command="MAIL") is BLK
    assert classify_reply(reply, command="banner") is BLK


def test_mailbox_words_4xx_at_mail_are_temporary() -> None:
    assert classify(452, "4.2.2", "Mailbox full", command="MAIL") is TMP


# --- parse_reply_lines: the SMTP stage's one reply parser -----------------------------------


def test_parse_reply_lines_gmail_multiline() -> None:
    reply = parse_reply_lines(
        [
            "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n",
            "550-5.1.1 double-checking the recipient's email address for typos or\r\n",
            "550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp\r\n",
        ]
    )
    assert reply.code == 550
    assert reply.enhanced == "5.1.1"
    assert reply.text == (
        "The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or "
        "https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp"
    )
    assert reply.lines[1].startswith("5.1.1 double-checking")


def test_parse_reply_lines_drops_only_the_same_enhanced_code() -> None:
    reply = parse_reply_lines(["550-5.1.1 first", "550 5.1.10 second"])
    assert (reply.enhanced, reply.text) == ("5.1.1", "first 5.1.10 second")


def test_parse_reply_lines_ironport_hash_code() -> None:
    reply = parse_reply_lines(["550 #5.7.1 Your access to submit messages has been rejected."])
    assert (reply.enhanced, reply.text) == (
        "5.7.1",
        "Your access to submit messages has been rejected.",
    )


def test_parse_reply_lines_bare_code_and_text_bound() -> None:
    assert parse_reply_lines(["550"]) == Reply(550, None, "", ("",))
    many = [f"250-LINE{i}" for i in range(MAX_TEXT_LINES + 5)] + ["250 LAST"]
    reply = parse_reply_lines(many)
    assert len(reply.lines) == MAX_TEXT_LINES + 6  # EHLO keywords: every line kept
    assert "LINE0" in reply.text
    assert f"LINE{MAX_TEXT_LINES}" not in reply.text and "LAST" not in reply.text


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["hello"],
        ["55 short"],
        ["550-first", "551 second"],
        ["550 first", "550 second"],
        ["550-first"],
        ["550x glued"],
    ],
)
def test_parse_reply_lines_refuses_what_is_not_one_reply(lines: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_reply_lines(lines)


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "5.1.1 user unknown", ("5.1.1", "user unknown")),
        (550, "5.1.1  https://x", ("5.1.1", "https://x")),
        (550, "4.1.1 mismatched class", (None, "4.1.1 mismatched class")),
        (
            550,
            "sorry, no mailbox here by that name. (#5.1.1)",
            ("5.1.1", "sorry, no mailbox here by that name. (#5.1.1)"),
        ),
        (250, "2.1.5 Ok", ("2.1.5", "Ok")),
        (550, "5.7.606 Access denied", ("5.7.606", "Access denied")),
        (550, "#5.7.1 Your access", ("5.7.1", "Your access")),
        (550, "Unrouteable address", (None, "Unrouteable address")),
        (550, "5.1.1.1 not a code", (None, "5.1.1.1 not a code")),
        (550, "", (None, "")),
    ],
)
def test_parse_enhanced(code: int, text: str, expected: tuple[str | None, str]) -> None:
    assert parse_enhanced(code, text) == expected


def test_reply_str() -> None:
    assert str(Reply(550, "5.1.1", "no")) == "550 5.1.1 no"
    assert str(Reply(250, None, "")) == "250"


# --- greylist_delay: how long the server asks us to wait -----------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        # Postfix + postgrey with --greylist-text (and the simulator)
        (
            "450 4.2.0 <a@b.test>: Recipient address rejected: Greylisted, "
            "try again in 300 seconds",
            300.0,
        ),
        ("450 4.2.0 <a@b.test>: Recipient address rejected: Greylisted for 5 minutes", 300.0),
        ("451 Greylisted, please retry in 5 minutes", 300.0),
        ("451 4.7.1 Greylisting in action, please come back in 2 minutes", 120.0),
        ("451 4.7.1 Please try again after 60s", 60.0),
        ("451 4.7.1 Deferred for 1 hour", 3600.0),
        ("450 4.7.1 Try again in 4 min 30 s", 270.0),
        ("450 4.7.1 Try again in 4 minutes and 30 seconds", 270.0),
        ("451-4.7.1 Greylisted\n451 4.7.1 retry in 90 secs", 90.0),
        ("450 4.2.0 Greylisted, try again in 0 seconds", 0.0),
        ("451 4.7.1 try again in 2.5 minutes", 150.0),
    ],
)
def test_greylist_delay_read_from_the_reply(raw: str, seconds: float) -> None:
    reply = _parse(raw)
    assert greylist_delay(reply) == seconds
    assert greylist_delay(reply.text) == seconds
    facts = SmtpFacts(SmtpOutcome.TEMPORARY, code=reply.code, message=reply.text)
    assert greylist_delay(facts) == seconds


@pytest.mark.parametrize(
    "raw",
    [
        # postgrey's default text names no delay
        "450 4.2.0 <a@b.test>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/b.test.html",
        "451 4.7.1 Please try again later",
        "421 4.7.0 Try again later, closing connection.",
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that "
        "prevents additional messages from being delivered. Please resend your message "
        "at a later time.",
        "451 4.3.0 Temporary failure, 5 minutes",  # a number but no "try again in"
        "451 4.7.1 try again in 9999999 hours",  # absurd: no delay to wait for
        "452 4.2.2 The email account that you tried to reach is over quota",
    ],
)
def test_greylist_delay_none_when_no_delay_is_named(raw: str) -> None:
    assert greylist_delay(_parse(raw)) is None


def test_greylist_delay_only_for_4xx_and_not_from_the_address() -> None:
    assert greylist_delay(_parse("550 5.1.1 User unknown, try again in 5 minutes")) is None
    assert (
        greylist_delay(SmtpFacts(SmtpOutcome.BLOCKED, code=554, message="retry in 5 min")) is None
    )
    assert greylist_delay(SmtpFacts(SmtpOutcome.TEMPORARY, message="retry in 5 min")) == 300.0
    assert greylist_delay(SmtpFacts(SmtpOutcome.TEMPORARY, code=450)) is None
    assert greylist_delay(None) is None
    assert greylist_delay("") is None
    # the echoed recipient is our input, never the server's word
    assert greylist_delay("450 4.2.0 <retry-in-5-min@b.test>: Greylisted") is None
    assert greylist_delay("450 4.2.0 retry in 5 min@b.test: Greylisted") is None


def test_greylist_delay_bounded_on_hostile_text() -> None:
    assert greylist_delay("try again in " + "9" * 100_000 + " seconds") is None
    assert greylist_delay("x" * 1_000_000 + " try again in 5 minutes") is None  # past the scan
    assert greylist_delay("try again in 5 minutes " + "y" * 1_000_000) == 300.0

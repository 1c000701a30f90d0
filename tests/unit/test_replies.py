"""engine/replies.py: real server replies -> SmtpOutcome.

Reply texts are quoted from public bounce logs, reacher's check-if-email-exists
parser table (core/src/smtp/parser.rs), KumoMTA's bounce rules and provider docs.
"""

from __future__ import annotations

import pytest

from mailvet.engine.facts import SmtpOutcome
from mailvet.engine.replies import Reply, classify, parse_enhanced

A = SmtpOutcome.ACCEPTED
UU = SmtpOutcome.USER_UNKNOWN
DIS = SmtpOutcome.DISABLED
FULL = SmtpOutcome.MAILBOX_FULL
TMP = SmtpOutcome.TEMPORARY
BLK = SmtpOutcome.BLOCKED
BAD = SmtpOutcome.INVALID_SMTP

# (raw reply as a server sends it, expected outcome for RCPT)
REAL_REPLIES: list[tuple[str, SmtpOutcome]] = [
    # --- accepted ---
    ("250 2.1.5 OK a1si1234567qkb.12 - gsmtp", A),
    ("250 2.1.5 Recipient OK", A),
    ("250 Accepted", A),
    ("250 recipient <x@y> ok", A),
    ("251 2.1.5 User not local; will forward to <x@z>", A),
    ("252 2.1.5 Cannot VRFY user, but will accept message", A),
    # --- user unknown: Gmail ---
    (
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\n"
        "550-5.1.1 unnecessary spaces. For more information, go to\n"
        "550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp",
        UU,
    ),
    # Microsoft
    ("550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).", UU),
    ("550 Requested action not taken: mailbox unavailable", UU),  # GMX
    (
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[BN8NAM11FT066.eop-nam11.prod.protection.outlook.com]",
        UU,
    ),
    # Postfix
    ("550 5.1.1 <x@y>: Recipient address rejected: User unknown in virtual mailbox table", UU),
    ("550 5.1.1 <x@y>: Recipient address rejected: User unknown in local recipient table", UU),
    ("550 5.1.1 <x@y>: Recipient address rejected: User unknown in relay recipient table", UU),
    ("550 5.1.1 <x@y>: Recipient address rejected: User unknown in virtual alias table", UU),
    ("550 5.1.1 <x@y>: Recipient address rejected: User unknown", UU),
    # Exim / cPanel
    ("550 Unrouteable address", UU),
    ("550 No Such User Here", UU),
    ("550-Callout verification failed:\n550 550 No Such User Here", UU),
    # Sendmail
    ("550 5.1.1 <x@y>... User unknown", UU),
    # qmail (enhanced code trailing)
    ("550 sorry, no mailbox here by that name. (#5.1.1)", UU),
    ("511 sorry, no mailbox here by that name (#5.1.1 - chkuser)", UU),
    # Yahoo / AOL
    (
        "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]"
        " - mta1234.mail.bf1.yahoo.com",
        UU,
    ),
    ("554 delivery error: dd This user doesn't have an aol.com account (x@aol.com)", UU),
    # Mimecast / Proofpoint / others seen by reacher
    ("550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550 [abc.uk22]", UU),
    ("550 5.1.1 User Unknown", UU),
    ("550 5.1.1 Recipient unknown <x@y>", UU),
    ("550 5.1.1 Unknown recipient address", UU),
    ("554 Unknown Recipient (#5.1.1)", UU),
    ("550 Unknown user", UU),
    ("550 5.1.1 No such user - pp", UU),
    ("550 5.1.1 MXIN501 mailbox x@virginmedia.com unknown", UU),
    ("550 5.1.1 <x@y>: Email address could not be found, or was misspelled (G8)", UU),
    ("550 No such person at this address", UU),
    ("550 5.1.1 <x@y> Recipient not found.", UU),
    ("550 5.1.1 Mailbox not found", UU),
    ("550 Invalid mailbox", UU),
    ("550 5.1.1 Is not a valid mailbox", UU),
    ("550 5.1.1 <x@y>: unknown or illegal alias: x@icloud.com", UU),
    ("550 RCPT (x@stigpods.com.cn) dosn't exist", UU),
    ("553 5.1.3 Bad recipient address syntax", UU),
    ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", UU),
    ("550 5.1.1 Not our Customer", UU),  # Comcast
    # --- disabled ---
    (
        "550-5.2.1 The email account that you tried to reach is disabled. Learn more at\n"
        "550 5.2.1  https://support.google.com/mail/?p=DisabledUser a1si123 - gsmtp",
        DIS,
    ),
    (
        "554 delivery error: dd Sorry, your message to x@yahoo.com cannot be delivered. "
        "This mailbox is disabled (554.30).",
        DIS,
    ),
    (
        "554 delivery error: dd Sorry your message to x@y cannot be delivered. This account "
        "has been disabled or discontinued",
        DIS,
    ),
    ("550 5.2.1 RACT MY.IP: Mailbox is inactive: <x@hanmail.net>", DIS),
    ("550 5.2.1 Mailbox disabled for this recipient", DIS),
    # --- mailbox full ---
    (
        "452-4.2.2 The email account that you tried to reach is over quota. Please direct\n"
        "452-4.2.2 the recipient to\n"
        "452 4.2.2  https://support.google.com/mail/?p=OverQuotaTemp a1si123 - gsmtp",
        FULL,
    ),
    (
        "552-5.2.2 The email account that you tried to reach is over quota and inactive.\n"
        "552 5.2.2  https://support.google.com/mail/?p=OverQuotaPerm a1si - gsmtp",
        FULL,
    ),
    ("552 5.2.2 <x@y>: Recipient address rejected: Mailbox full", FULL),
    ("552 5.2.2 Over quota", FULL),
    ("552 Requested mailbox exceeds quota.", FULL),
    ("452 4.2.2 Mailbox is full", FULL),
    ("550 user has too many messages on the server", FULL),
    ("552 recipient storage full, try again later", FULL),
    # --- policy block of OUR host / sender: never undeliverable ---
    (
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org;"
        " https://www.spamhaus.org/query/ip/192.0.2.1",
        BLK,
    ),
    (
        "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your"
        " Internet service provider since part of their network is on our block list (S3150).",
        BLK,
    ),
    ("550 5.7.606 Access denied, banned sending IP [192.0.2.1].", BLK),
    ("554 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.1", BLK),
    (
        "550 5.7.0 Mail from 192.0.2.1 refused by Proofpoint Reputation Services. "
        "SENDER please see https://support.proofpoint.com/dnsbl-lookup.cgi?192.0.2.1",
        BLK,
    ),
    ("550 csi.mimecast.org Poor Reputation Sender. - https://community.mimecast.com", BLK),
    (
        "550 JunkMail rejected - (gmail.com) [192.0.2.1]:46615 is in an RBL: "
        "http://www.barracudanetworks.com/reputation/?pr=1&ip=192.0.2.1",
        BLK,
    ),
    (
        "554 Service unavailable; Client host [192.0.2.1] blocked using Barracuda Reputation;"
        " http://www.barracudanetworks.com/reputation/?r=1&ip=192.0.2.1",
        BLK,
    ),
    ("554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied", BLK),
    ("550 5.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.1]", BLK),
    ("553 sorry, mail from your location [192.0.2.1] is administratively denied (#5.7.1)", BLK),
    ("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", BLK),
    ("554 5.7.1 <x@y>: Relay access denied", BLK),
    ("550 5.7.1 <x@y>... Relaying denied", BLK),
    (
        "550-5.7.1 [192.0.2.1] Our system has detected that this message is likely\n"
        "550-5.7.1 unsolicited mail. To reduce the amount of spam sent to Gmail,\n"
        "550 5.7.1 this message has been blocked.",
        BLK,
    ),
    ("550 5.7.1 Service unavailable; Client host [192.0.2.1] is blacklisted.", BLK),
    (
        "554-gmx.net (mxgmx117) Nemesis ESMTP Service not available\n554-No SMTP service\n"
        "554-IP address is block listed.\n554 For explanation visit https://www.gmx.net/",
        BLK,
    ),
    (
        "554 resimta-h1p-037598.sys.comcast.net 192.0.2.1 found on one or more DNSBLs, see "
        "http://postmaster.comcast.net/smtp-error-codes.php#BL000001",
        BLK,
    ),
    ("550 smtp-fw-9107.amazon.com; SBRS score too low: http://www.senderbase.org/", BLK),
    # Exim sender verification: the unrouteable address is OURS
    (
        "550-Verification failed for <verify@x>\n550-Unrouteable address\n550 Sender verify failed",
        BLK,
    ),
    ("550 5.1.0 <verify@x>: Sender address rejected: Domain not found", BLK),
    (
        "553 5.1.8 <verify@x>: Sender address rejected: Domain not found",
        BLK,
    ),
    ("530 5.7.0 Must issue a STARTTLS command first", BLK),
    ("550 5.7.1 No such user!", BLK),  # Yandex: 5.7.x stays conservative
    (
        "550 5.7.26 This mail is unauthenticated, which poses a security risk to the sender",
        BLK,
    ),
    # 5xx saying nothing about the mailbox: unknown, never undeliverable
    ("550 Message rejected", BLK),
    ("554 Transaction failed", BLK),
    ("550", BLK),
    ("554 5.0.0 Service unavailable", BLK),
    ("550 permanent failure for one or more recipients (x@y:blocked)", BLK),
    ("554 mailbox unavailable", BLK),  # "mailbox unavailable" counts only with exactly 550
    ("500 5.5.1 Command unrecognized", BLK),
    # refusals of OUR sender / host / session with mailbox-looking words: never
    # undeliverable (regressions: each was once USER_UNKNOWN or DISABLED)
    ("550 Sender domain does not exist", BLK),
    ("553 Domain of sender address foo@bar does not exist", BLK),
    ("550 HELO name x does not exist", BLK),
    ("554 sending host does not exist in DNS", BLK),
    ("550 The PTR record for 1.2.3.4 could not be found", BLK),
    ("550 Too many invalid recipients", BLK),
    ("501 Syntax error in parameters: invalid address", BLK),
    ("550 Relaying disabled", BLK),
    ("550 SMTPUTF8 is disabled", BLK),
    ("550 Your sending account has been suspended", BLK),
    ("550 rejected because your hostname x does not exist", BLK),
    ("501 5.1.3 Bad recipient address syntax", BLK),  # 501-504: syntax, not the mailbox
    ("502 5.1.1 User unknown", BLK),
    ("504 5.5.2 <x@y>: Recipient address rejected: need fully-qualified address", BLK),
    ("550 5.1.1 EHLO name does not exist in DNS", BLK),
    ("550 Client host 1.2.3.4 could not be found in DNS", BLK),
    ("552 Message size exceeds fixed maximum message size", BLK),
    ("555 5.5.4 Unsupported option: SMTPUTF8", BLK),
    ("450 4.7.25 Client host rejected: cannot find your hostname, [1.2.3.4]", BLK),
    ("451 4.1.8 Domain of sender address x@y does not resolve", BLK),
    ("450 Sender domain does not exist, try again", TMP),
    ("452 Too many invalid recipients", TMP),
    # ... while the recipient's own mailbox words still count
    ("550 Recipient does not exist here", UU),
    ("550 User account is disabled", DIS),
    ("550 Address of the recipient could not be found", UU),
    ("551 User not local; please try <x@z> -- user unknown", UU),
    # --- temporary ---
    (
        "450 4.2.0 <x@y>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.com.html",
        TMP,
    ),
    ("450 4.7.1 <x@y>: Recipient address rejected: Greylisted, try again in 300 seconds", TMP),
    ("451 4.7.1 Please try again later", TMP),
    ("451 Temporary local problem - please try later", TMP),
    ("451-4.3.0 Mail server temporarily rejected message.\n451 4.3.0 a1si - gsmtp", TMP),
    (
        "450-4.2.1 The user you are trying to contact is receiving mail at a rate that\n"
        "450 4.2.1 prevents additional messages from being delivered.",
        TMP,
    ),
    (
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected "
        "volume or user complaints - 4.16.55.1",
        TMP,
    ),
    ("451 Internal resource temporarily unavailable - https://community.mimecast.com", TMP),
    ("450 4.1.1 <x@y>: Recipient address rejected: unverified address", TMP),
    ("450 4.2.1 mailbox unavailable", TMP),
    ("451 qq temporary problem (#4.3.0)", TMP),
    ("452 4.5.3 Too many recipients", TMP),
    ("452 4.3.1 Insufficient system storage", TMP),
    ("421 4.3.2 Service not available, closing transmission channel", TMP),
    # 4xx about our host: BLOCKED (unknown either way, but the scheduler backs off)
    ("450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.1]", BLK),
    (
        "421-4.7.0 [192.0.2.1] Our system has detected an unusual rate of\n"
        "421 4.7.0 unsolicited mail originating from your IP address.",
        BLK,
    ),
    ("451 4.7.1 Service unavailable - try again later; blocked using zen.spamhaus.org", TMP),
    # --- nonsense ---
    ("354 Start mail input", BAD),
    ("199 what", BAD),
    ("600 nope", BAD),
]


def _parse(raw: str) -> tuple[int, str | None, str]:
    """Parse the way engine/smtp.py does: code, enhanced, joined text."""
    lines = raw.split("\n")
    code = int(lines[0][:3])
    texts = [line[4:].strip() for line in lines]
    enhanced, _ = parse_enhanced(code, texts[0])
    if enhanced:
        texts = [t[len(enhanced) :].strip() if t.startswith(enhanced) else t for t in texts]
    return code, enhanced, " ".join(t for t in texts if t)


@pytest.mark.parametrize(("raw", "expected"), REAL_REPLIES, ids=lambda v: str(v)[:60])
def test_real_replies(raw: str, expected: SmtpOutcome) -> None:
    code, enhanced, text = _parse(raw)
    assert classify(code, enhanced, text) is expected


@pytest.mark.parametrize(("raw", "expected"), REAL_REPLIES, ids=lambda v: str(v)[:60])
def test_same_without_pre_parsed_enhanced_code(raw: str, expected: SmtpOutcome) -> None:
    code = int(raw[:3])
    text = " ".join(line[4:].strip() for line in raw.split("\n"))
    assert classify(code, None, text) is expected


def test_table_is_large_and_covers_every_outcome() -> None:
    assert len(REAL_REPLIES) >= 90
    assert {e for _, e in REAL_REPLIES} == {A, UU, DIS, FULL, TMP, BLK, BAD}


@pytest.mark.parametrize(("raw", "expected"), REAL_REPLIES, ids=lambda v: str(v)[:60])
def test_never_undeliverable_without_explicit_5xx(raw: str, expected: SmtpOutcome) -> None:
    code, enhanced, text = _parse(raw)
    outcome = classify(code, enhanced, text)
    if outcome in (UU, DIS):
        assert 500 <= code <= 599


@pytest.mark.parametrize(
    "raw",
    [
        "550 5.1.1 <verify@x>: Sender address rejected: User unknown in local recipient table",
        "550-5.1.1 The email account that you tried to reach does not exist.",
        "550-5.2.1 The email account that you tried to reach is disabled.",
        "552 5.2.2 Mailbox full",
    ],
)
def test_mailbox_words_at_mail_from_are_about_us(raw: str) -> None:
    code, enhanced, text = _parse(raw)
    assert classify(code, enhanced, text, command="MAIL") is BLK
    assert classify(code, enhanced, text, command="banner") is BLK


def test_mailbox_words_4xx_at_mail_are_temporary() -> None:
    assert classify(452, "4.2.2", "Mailbox full", command="MAIL") is TMP


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

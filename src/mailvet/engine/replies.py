"""Parse one SMTP reply and classify it into an ``SmtpOutcome``.

The one rule that matters: never call a mailbox undeliverable (USER_UNKNOWN, DISABLED)
unless the server said the mailbox does not exist or is disabled, and nothing in the
reply points at *us* (our host, our IP, our sender, a block list, reputation, policy).
Such a refusal is BLOCKED, which the verdict turns into ``unknown`` / ``unavailable_smtp``.

How a 5xx reply to RCPT is read (the recipient address the server echoes, ``<x@y>`` or
bare, is masked first: it is our input, never the server's evidence):

1. Signals that point at us override everything, even "user unknown" and 5.1.1: an
   enhanced code 5.7.x (RFC 3463: security or policy status) or 5.1.7/5.1.8 (our sender
   address); a block-list name or wording (Spamhaus, Barracuda, SORBS, SpamCop,
   UCEPROTECT, "blocked using", "block list", "is listed in", RBL/DNSBL); "reputation",
   "policy", "spam", "banned", "client host", "access denied", "your IP", "this IP",
   "sender", HELO/PTR/relaying words. Quoted rows: Spamhaus via Postfix "554 5.7.1
   Service unavailable; Client host [..] blocked using zen.spamhaus.org"; Outlook.com
   "550 5.7.1 Unfortunately, messages from [..] weren't sent ... on our block list
   (S3150)"; Microsoft 365 "550 5.7.708 Service unavailable. Access denied, traffic not
   accepted from this IP"; GMX "550-Requested action not taken: mailbox unavailable
   550-Reject due to policy restrictions" (reply_table.py has them all, with sources).
2. Otherwise a clear mailbox statement decides: the enhanced codes 5.1.1/5.1.2/5.1.3/
   5.1.6/5.1.10 (USER_UNKNOWN) or 5.2.1 (DISABLED), or words such as "does not exist",
   "user unknown", "no such user", "mailbox not found", "invalid recipient", "disabled".
   An IP address, a URL or "listed" alone do NOT override these: real user-unknown
   replies carry help links and relay addresses (Gmail "550-5.1.1 The email account
   that you tried to reach does not exist ... https://support.google.com/mail/
   ?p=NoSuchUser"; QQ "550 Mailbox not found. http://service.mail.qq.com/..."; a Postfix
   relay "550 5.1.1 <x>: Recipient address rejected: undeliverable address: host
   192.168.1.131[192.168.1.131] said: 550 sorry, no mailbox here by that name").
3. RFC 5321's own 550 text, "mailbox unavailable", is ambiguous (RFC 5321 4.2.3: "mailbox
   not found, no access, or command rejected for policy reasons"). It counts as
   USER_UNKNOWN only with exactly 550 and only when the reply has no weak signal either:
   an IP address (v4 or v6, bracketed or not), a URL (a delisting or help page) or the
   word "listed". Outlook.com's bare "550 5.5.0 Requested action not taken: mailbox
   unavailable (S2017062302)" stays USER_UNKNOWN; the same words next to an IP or a link
   are BLOCKED.
4. Anything else permanent that says nothing about the mailbox is BLOCKED.

Microsoft's "(S3150)" / "AS(...)" tags are no signal by themselves: the 5.4.1 Directory
Based Edge Blocking reply "Recipient address rejected: Access denied. AS(201806281)" is
Microsoft's documented "recipient not found", while the AS tags on 5.7.x replies are
blocks; the enhanced code and the words decide. Yandex answers "550 5.7.1 No such
user!": it stays BLOCKED (unknown), erring on the safe side, because 5.7.x is the only
structured part of the reply and it says "policy"; we found no rule that tells Yandex's
5.7.1 user-unknown from the 5.7.1 policy refusals that other servers word the same way.

Replies to MAIL FROM or the banner are about us: a mailbox-looking refusal there is
BLOCKED (5xx) or TEMPORARY (4xx). Gmail's "550-5.2.1 The user you are trying to contact
is receiving mail at a rate that prevents additional messages from being delivered" is
TEMPORARY: the mailbox exists.

``reply_table.py`` holds the real replies this module is tested on, each with its
expected outcome and its source; patterns match case-insensitively on the joined text.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailvet.engine.facts import SmtpFacts, SmtpOutcome

__all__ = [
    "MAX_TEXT_LINES",
    "Reply",
    "classify",
    "classify_reply",
    "greylist_delay",
    "parse_enhanced",
    "parse_reply_lines",
]

MAX_TEXT_LINES = 20  # lines of a reply kept in its text (all lines are kept in ``lines``)

# RFC 3463 enhanced code at the start of the text ("5.1.1 ...", IronPort's "#5.7.1 ..."),
# or qmail's trailing "(#5.1.1)"; the class digit must agree with the reply code's first
# digit.
_ENHANCED_HEAD = re.compile(r"^\s*#?([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$|[^\d.])")
_ENHANCED_QMAIL = re.compile(r"\(#([245])\.(\d{1,3})\.(\d{1,3})\)")
# one line of a reply as received: "550-text" (more follow), "550 text" or "550" (last)
_REPLY_LINE = re.compile(r"([0-9]{3})(?:([ -])(.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Reply:
    """One parsed SMTP reply: ``text`` has the codes stripped, lines joined by spaces."""

    code: int
    enhanced: str | None
    text: str
    lines: tuple[str, ...] = ()  # the text of each line (codes stripped), as received

    def __str__(self) -> str:
        enh = f" {self.enhanced}" if self.enhanced else ""
        return f"{self.code}{enh} {self.text}".rstrip()


def parse_enhanced(code: int, text: str) -> tuple[str | None, str]:
    """Split the enhanced status code off ``text``: ``(enhanced or None, rest)``."""
    m = _ENHANCED_HEAD.match(text)
    if m and m.group(1) == str(code)[0]:
        return ".".join(m.groups()), text[m.end() :].strip()
    q = _ENHANCED_QMAIL.search(text)
    if q and q.group(1) == str(code)[0]:
        return ".".join(q.groups()), text.strip()
    return None, text.strip()


def parse_reply_lines(lines: Sequence[str], *, max_text_lines: int = MAX_TEXT_LINES) -> Reply:
    """Build the ``Reply`` for the raw lines of one reply, as received (line ends optional).

    ``["550-5.1.1 The email account ...", "550 5.1.1  https://..."]``: every line has the
    same three-digit code, "-" after it on all but the last. The enhanced code is read
    from the first line and dropped from every line that repeats it (Gmail does);
    ``text`` joins the first ``max_text_lines`` lines, ``lines`` keeps them all (EHLO
    keywords come late). Raises ``ValueError`` on anything else. The SMTP stage builds
    every reply with this function, so tests can feed it real replies.
    """
    if not lines:
        raise ValueError("an SMTP reply has at least one line")
    code: str | None = None
    texts: list[str] = []
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        m = _REPLY_LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"not an SMTP reply line: {line!r}")
        if code is not None and m.group(1) != code:
            raise ValueError(f"reply code changed mid-reply: {line!r}")
        if (m.group(2) == "-") != (i < len(lines) - 1):
            raise ValueError(f"continuation marks out of place at line {i + 1}: {line!r}")
        code = m.group(1)
        texts.append((m.group(3) or "").strip())
    number = int(code or "0")
    shown = texts[: max(1, max_text_lines)]
    enhanced, _ = parse_enhanced(number, shown[0])
    if enhanced:  # Gmail repeats "5.1.1" on every line: drop the repeats
        shown = [_drop_enhanced(number, enhanced, t) for t in shown]
    return Reply(number, enhanced, " ".join(t for t in shown if t), tuple(texts))


def _drop_enhanced(code: int, enhanced: str, text: str) -> str:
    m = _ENHANCED_HEAD.match(text)
    if m and m.group(1) == str(code)[0] and ".".join(m.groups()) == enhanced:
        return text[m.end() :].strip()
    return text


def _any(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# --- greylisting / try later (4xx): TEMPORARY even when the code is 4.7.x ----------------
_GREYLIST = _any(
    # Postfix + postgrey: "450 4.2.0 <x>: Recipient address rejected: Greylisted, see
    #   http://postgrey.schweikert.ch/help/example.com.html"
    r"gr[ae]y-?list",
    # "451 4.7.1 Please try again later" / Exim "451 Temporary local problem - please try later"
    r"try (?:again )?later",
    r"come back later",
    r"try again in \d+",
)

# --- a refusal of OUR host / sender: BLOCKED, never undeliverable -------------------------
_POLICY = _any(
    # Postfix: "554 5.7.1 Service unavailable; Client host [1.2.3.4] blocked using
    #   zen.spamhaus.org; https://www.spamhaus.org/query/ip/1.2.3.4"
    r"spamhaus",
    r"blocked using",
    # Proofpoint: "554 Blocked - see https://ipcheck.proofpoint.com/?ip=1.2.3.4"
    # Trend Micro: "5.7.1 Mail from 1.2.3.4 has been blocked by Trend Micro Email
    #   Reputation Service."
    r"\bblocked\b",
    # Outlook.com: "550 5.7.1 Unfortunately, messages from [1.2.3.4] weren't sent. Please
    #   contact your Internet service provider since part of their network is on our
    #   block list (S3150)."  GMX: "IP address is block listed."
    r"block ?list",
    r"black ?list",
    # Barracuda: "JunkMail rejected - (gmail.com) [1.2.3.4]:46615 is in an RBL"
    r"junkmail",
    r"\b(?:rbl|dnsbl)s?\b",
    # the big DNS block lists by name (reply_table.py quotes each): Barracuda's BRBL,
    # SORBS, SpamCop ("Defined SPAM source: bl.spamcop.net"), UCEPROTECT ("IP 1.2.3.4 is
    # UCEPROTECT-Level 1 listed"), Spamhaus's CBL (abuseat), PSBL (surriel), Abusix
    r"barracuda",
    r"\bsorbs\b",
    r"spamcop",
    r"uceprotect",
    r"abuseat",
    r"psbl\b",
    r"abusix",
    r"spamrats",
    r"mailspike",
    # "is listed in dnsbl-1.uceprotect.net", "Your IP address is listed in the RBL";
    # but not Lotus Domino's user unknown "User not listed in public Name & Address Book"
    r"(?<!not )\blisted (?:at|on|in|by)\b",
    r"\b(?:is|are|was|been|being|currently) (?:black|block)?listed\b",
    # GMX / 1&1: "550-Requested action not taken: mailbox unavailable 550-Reject due to
    #   policy restrictions."; Postfix "Recipient address rejected for policy reasons"
    r"\bpolic(?:y|ies)\b",
    # Microsoft 365: "550 5.7.708 Service unavailable. Access denied, traffic not accepted
    #   from this IP"; Cisco IronPort: "554 Your access to this mail system has been
    #   rejected due to the sending MTA's poor reputation" / "550 #5.7.1 Your access to
    #   submit messages to this e-mail system has been rejected."
    r"\b(?:this|sending|client|source|connecting|remote) ip\b",
    r"\byour access\b",
    r"not allowed to (?:send|connect)",
    # Mimecast: "550 csi.mimecast.org Poor Reputation Sender." ; "... rejected due to the
    #   sending MTA's poor reputation"
    r"reputation",
    # Proofpoint: "550 5.7.0 Mail from 1.2.3.4 refused by Proofpoint Reputation Services"
    r"refused by proofpoint",
    # Outlook.com: "550 5.7.606 Access denied, banned sending IP [1.2.3.4]."
    r"banned",
    # Postfix: "554 5.7.1 <unknown[1.2.3.4]>: Client host rejected: Access denied" and
    #   "450 4.7.1 Client host rejected: cannot find your hostname, [1.2.3.4]"
    r"client host rejected",
    r"reverse (?:dns|hostname)",
    r"access denied",
    # qmail: "553 sorry, mail from your location [1.2.3.4] is administratively denied (#5.7.1)"
    r"administratively denied",
    r"administrative prohibition",
    # Sendmail: "550 5.7.1 <x@y>... Relaying denied" ; Postfix "554 5.7.1 <x@y>: Relay access
    #   denied" ; qmail "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    r"relay(?:ing)? (?:access )?(?:denied|not permitted)",
    r"allowed rcpthosts",
    # Gmail: "550-5.7.1 [1.2.3.4] Our system has detected that this message is likely
    #   unsolicited mail." / "421-4.7.0 ... unusual rate of unsolicited mail"
    r"unsolicited",
    r"\bspam\b",
    # Amazon: "SBRS score too low"; Symantec: "Connection rejected by policy [7.3]"
    r"sbrs score",
    r"connection rejected",
    r"rejected by policy",
    # Exim callout: "550-Verification failed for <verify@x>\n550-Unrouteable address\n550
    #   Sender verify failed" -- the unrouteable address is OURS, not the recipient
    r"sender verify",
    r"sender address rejected",
    r"envelope sender",
    r"not yet authorized",
    r"your (?:ip|host(?:name)?|server|network|domain)\b",
)

# --- a refusal that names OUR side (sender, HELO name, PTR, connection, relaying): never
# about the recipient's mailbox, whatever mailbox-looking words follow. BLOCKED for 5xx,
# TEMPORARY for 4xx. Checked before the mailbox words:
#   "550 Sender domain does not exist" ; "553 Domain of sender address x@y does not exist"
#   "550 HELO name x does not exist" ; "554 sending host does not exist in DNS"
#   "550 The PTR record for 1.2.3.4 could not be found" ; "550 Too many invalid recipients"
#   "550 Relaying disabled" ; "550 SMTPUTF8 is disabled"
#   "550 Your sending account has been suspended" ; "550 rejected because your hostname x
#   does not exist"
_OURS = _any(
    r"\bsender\b",
    r"\bh[ae]lo\b",
    r"\behlo\b",
    r"\bptr\b",
    r"reverse (?:dns|lookup|hostname|record)",
    r"\brdns\b",
    r"\byour (?:\w+ )?(?:host|hostname|ip|server|account|domain|network|mail server)\b",
    r"\bsending (?:host|server|ip|account|domain|mta|address)\b",
    r"\bclient host\b",
    r"too many (?!messages)",  # "too many messages" is Postfix's full mailbox
    r"\brelaying\b",
    r"\brelay (?:access|denied|not|prohibited|disabled)",
    r"(?:unable|not permitted|not allowed) to relay",
    r"\bsmtputf8\b",
    r"\b8bitmime\b",
    r"\brate limit",
)

# Microsoft 365 Directory-Based Edge Blocking: the recipient is not in the tenant's
# directory. "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)"
# (Microsoft Learn, "Fix NDR error 550 5.4.1 in Exchange Online"). It says "access
# denied" but it is about the mailbox, so it is checked before the policy table.
_M365_DBEB = re.compile(r"recipient address rejected: access denied", re.IGNORECASE)

# the nouns a mailbox-level refusal talks about (the recipient's, once _OURS had its say)
_NOUN = r"(?:mailbox|user|recipient|rcpt|account|address|addressee|e-?mail)"
# what may stand between the noun and the verb: not the end of a sentence (dots inside
# an address or host name are fine)
_GAP = r"(?:[^.;]|\.(?=\S))"

# --- the mailbox is full -------------------------------------------------------------------
_FULL = _any(
    # Gmail: "452-4.2.2 The email account that you tried to reach is over quota."
    r"over ?quota",
    # Postfix/Dovecot: "552 5.2.2 <x>: Recipient address rejected: Mailbox full"
    r"mailbox (?:is )?full",
    r"(?:mailbox|inbox|storage|account) (?:is )?(?:full|exceeds)",
    # "552 Requested mailbox exceeds quota." ; "quota exceeded"
    r"exceed(?:s|ed)? (?:the |its |their )?(?:storage )?quota",
    r"quota (?:exceeded|exceed)",
    # "550 user has too many messages on the server"
    r"too many messages",
)

# --- the mailbox exists but is disabled ----------------------------------------------------
_DISABLED = _any(
    # Gmail: "550-5.2.1 The email account that you tried to reach is disabled."
    # Yahoo: "This mailbox is disabled (554.30)" ; "This account has been disabled or
    #   discontinued" ; "550 5.2.1 Mailbox disabled for this recipient"
    # Daum/hanmail: "550 5.2.1 RACT MY.IP: Mailbox is inactive"
    _NOUN + r"\b" + _GAP + r"{0,60}?\b(?:disabled|discontinued|inactive|deactivated)\b",
    r"\b(?:disabled|inactive|deactivated) (?:e-?mail )?(?:account|mailbox|user|recipient)",
    _NOUN + r" (?:has been |is )?(?:suspended|closed|expired)",
)

# --- the mailbox does not exist ------------------------------------------------------------
_UNKNOWN = _any(
    # Gmail: "550-5.1.1 The email account that you tried to reach does not exist."
    # reacher: "550 RCPT (x@stigpods.com.cn) dosn't exist" (sic) ; "recipient is not exist"
    _NOUN + r"\b" + _GAP + r"{0,80}?(?:does ?n[o']t|dosn't|is not|not) exist",
    # Sendmail: "550 5.1.1 <x>... User unknown"; Postfix: "550 5.1.1 <x>: Recipient address
    #   rejected: User unknown in virtual mailbox table" (also local/relay/alias tables)
    r"user unknown",
    r"unknown user",
    r"recipient unknown",
    r"unknown recipient",
    r"addressee unknown",
    r"address unknown",
    r"unknown (?:local part|address|mailbox|account)",
    # cPanel/Exim: "550 No Such User Here"; Yandex: "No such user!"
    r"no such (?:user|mailbox|recipient|person|address|account)",
    # qmail: "550 sorry, no mailbox here by that name. (#5.1.1)"
    r"no mailbox",
    # Exim: "550 Unrouteable address"
    r"unrouteable",
    r"unroutable",
    r"mailbox not found",
    r"mailbox [^ ]+ unknown",  # Virgin Media: "5.1.1 MXIN501 mailbox x@y unknown"
    r"recipient not found",
    r"account not found",
    r"address not found",
    # "550 5.1.1 <x@y>: Email address could not be found, or was misspelled (G8)"
    _NOUN + r"\b" + _GAP + r"{0,40}?could not be found",
    # Mimecast: "550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550"
    r"invalid (?:recipient|mailbox|user|address|email address|account)",
    r"recipient (?:address )?invalid",
    r"not a valid (?:mailbox|user|recipient)",
    # Yahoo: "554 delivery error: dd This user doesn't have a yahoo.com account"
    r"doesn't have an? [\w.-]* ?account",
    r"no longer (?:available|accepts mail)",
    r"address is not handled",
    r"(?:recipient|rcpt|mailbox) address error",
)

# RFC 5321's own 550 text is "Requested action not taken: mailbox unavailable (e.g.,
# mailbox not found, no access, or command rejected for policy reasons)", so these words
# count only with exactly 550, after the policy table had its say, and only when no weak
# signal below is in the reply.
# Outlook.com: "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)."
# GMX: "550 Requested action not taken: mailbox unavailable"
# etu.uca.fr: "550 5.5.0 Requested actions not taken as the mailbox is unavailable"
_UNAVAILABLE = _any(r"mailbox (?:is )?unavailable")

# --- weak signals: they only disambiguate "mailbox unavailable" (rule 3 above) -----------
# a link (a delisting or help page) or the word "listed"; IP addresses are found by
# _has_ip_address (v4 or v6, bracketed or not, validated by ``ipaddress``)
_WEAK = _any(r"https?://", r"\bwww\.[a-z0-9-]+\.", r"\blisted\b")
_IPV4_CANDIDATE = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.]*\d)")
_IPV6_CANDIDATE = re.compile(r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")

# Gmail: "550-5.2.1 The user you are trying to contact is receiving mail at a rate that
# prevents additional messages from being delivered." The mailbox exists: TEMPORARY.
_RECIPIENT_RATE = _any(r"receiving mail (?:at a rate|too quickly)")

# the recipient address as the server echoes it, "<x@y>" or bare "x@y": masked before
# anything is matched (an address is our input, not evidence; "sender@corp.test" or
# "1.2.3.4@corp.test" must not read as a signal)
_ECHOED_ADDRESS = re.compile(r"<[^<>\s]*@[^<>\s]*>")
_BARE_ADDRESS = re.compile(
    r"[^\s<>()\[\]\"',;:/@]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*",
    re.IGNORECASE,
)


def _without_addresses(text: str) -> str:
    return _BARE_ADDRESS.sub("<>", _ECHOED_ADDRESS.sub("<>", text))


def _has_ip_address(text: str) -> bool:
    for m in _IPV4_CANDIDATE.finditer(text):
        with contextlib.suppress(ValueError):
            ipaddress.IPv4Address(m.group(0))
            return True
    for m in _IPV6_CANDIDATE.finditer(text):
        candidate = m.group(0).strip(".:")
        if candidate.count(":") < 2 and "::" not in m.group(0):
            continue
        for form in (m.group(0).rstrip("."), candidate):
            with contextlib.suppress(ValueError):
                ipaddress.IPv6Address(form)
                return True
    return False


def _weak_signal(text: str) -> bool:
    return bool(_WEAK.search(text)) or _has_ip_address(text)


# enhanced codes (RFC 3463) that speak about the destination mailbox / address
_UNKNOWN_ENHANCED = {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"}
# ... and those that speak about OUR sender address (5.1.7 bad sender syntax,
# 5.1.8 bad sender's system address)
_SENDER_ENHANCED = {"5.1.7", "5.1.8", "4.1.7", "4.1.8"}

# reply codes whose text may be read for mailbox words; 511 is qmail chkuser's
# "511 sorry, no mailbox here by that name (#5.1.1 - chkuser)"
_WORD_CODES = {511, 550, 551, 552, 553, 554}

_MAILBOX_OUTCOMES = {SmtpOutcome.USER_UNKNOWN, SmtpOutcome.DISABLED, SmtpOutcome.MAILBOX_FULL}


def classify(code: int, enhanced: str | None, text: str, *, command: str = "RCPT") -> SmtpOutcome:
    """Outcome of one reply. ``command`` is what it answered ("RCPT", "MAIL", "banner"...).

    Only a reply to RCPT can speak about the mailbox; a mailbox-looking refusal of
    MAIL FROM or the banner is about *us* and becomes BLOCKED (5xx) or TEMPORARY (4xx).
    """
    outcome = _classify(code, enhanced, text)
    if command.upper() != "RCPT" and outcome in _MAILBOX_OUTCOMES:
        return SmtpOutcome.BLOCKED if code >= 500 else SmtpOutcome.TEMPORARY
    return outcome


def classify_reply(reply: Reply, *, command: str = "RCPT") -> SmtpOutcome:
    return classify(reply.code, reply.enhanced, reply.text, command=command)


def _classify(code: int, enhanced: str | None, text: str) -> SmtpOutcome:
    if not 200 <= code <= 599:
        return SmtpOutcome.INVALID_SMTP
    klass = code // 100
    if klass == 2:
        return SmtpOutcome.ACCEPTED
    if klass == 3:  # 354 to RCPT is nonsense
        return SmtpOutcome.INVALID_SMTP
    if enhanced is None:
        enhanced, text = parse_enhanced(code, text)
    enh = enhanced or ""
    subject = enh.split(".")[1] if enh.count(".") == 2 else ""
    text = _without_addresses(text)

    if klass == 4:
        if _GREYLIST.search(text):
            return SmtpOutcome.TEMPORARY
        if enh.endswith(".2.2"):
            return SmtpOutcome.MAILBOX_FULL
        if _POLICY.search(text) or enh in _SENDER_ENHANCED:
            return SmtpOutcome.BLOCKED
        if _OURS.search(text):
            return SmtpOutcome.TEMPORARY
        if _FULL.search(text):
            return SmtpOutcome.MAILBOX_FULL
        return SmtpOutcome.TEMPORARY

    # 500-504 are syntax / sequence errors (RFC 5321 4.2.2): about the command we sent,
    # never about the mailbox, whatever the text or enhanced code says
    if code <= 504:
        return SmtpOutcome.BLOCKED
    # 5xx: the enhanced code first where it is unambiguous about the mailbox ...
    if enh == "5.2.2":
        return SmtpOutcome.MAILBOX_FULL
    if enh == "5.4.1" and _M365_DBEB.search(text):
        return SmtpOutcome.USER_UNKNOWN
    # ... then rule 1: anything that points at our host or sender beats mailbox words
    # (Exim's "Sender verify failed" carries "Unrouteable address" about OUR address) ...
    if _POLICY.search(text) or _OURS.search(text) or enh in _SENDER_ENHANCED or subject == "7":
        return SmtpOutcome.BLOCKED
    if _RECIPIENT_RATE.search(text):
        return SmtpOutcome.TEMPORARY
    # ... rule 2: a clear statement about the mailbox, by enhanced code ...
    if enh == "5.2.1":
        return SmtpOutcome.DISABLED
    if enh in _UNKNOWN_ENHANCED:
        return SmtpOutcome.USER_UNKNOWN
    # ... or by words, for servers without (or with useless) enhanced codes, and only
    # with the codes that mean "mailbox refused" (550 unavailable, 551 not local, 552
    # storage, 553 name not allowed, 554 failed: Yahoo's "dd This user doesn't have ...")
    if code not in _WORD_CODES:
        return SmtpOutcome.BLOCKED
    if _FULL.search(text):
        return SmtpOutcome.MAILBOX_FULL
    if code == 552:  # "exceeded storage allocation": full, or nothing we can tell
        return SmtpOutcome.BLOCKED
    if _DISABLED.search(text):
        return SmtpOutcome.DISABLED
    if _UNKNOWN.search(text):
        return SmtpOutcome.USER_UNKNOWN
    # rule 3: RFC 5321's ambiguous "mailbox unavailable", with nothing else in the reply
    if code == 550 and _UNAVAILABLE.search(text) and not _weak_signal(text):
        return SmtpOutcome.USER_UNKNOWN
    # rule 4: a permanent refusal that says nothing sure about the mailbox (policy, syntax,
    # "Transaction failed", "mailbox unavailable" next to an IP or a link): unknown, never
    # undeliverable.
    return SmtpOutcome.BLOCKED


# --- how long a greylisting (or "try later") server wants us to wait ---------------------
# Postfix + postgrey (--greylist-text): "450 4.2.0 <x>: Recipient address rejected:
#   Greylisted, try again in 300 seconds" / "Greylisted for 300 seconds"
# SpamExperts / cPanel: "451 Greylisted, please retry in 5 minutes"
# Exim greylistd: "451 4.7.1 ... deferred for 5 minutes"; "try again after 60 seconds";
# "come back in 2 minutes"; "wait 1 hour"; "retry in 4 min 30 s"
_UNIT = r"(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?)\b"
_NUMBER = r"(\d{1,7}(?:\.\d{1,3})?)"
_DELAY = re.compile(
    r"\b(?:try(?: (?:it )?again)?|retry|come back|wait|greylisted|deferred|delayed|resend)"
    r"(?: (?:later|again|please))?"
    r" (?:in|after|for|at least)(?: about| at least)? "
    + _NUMBER
    + r" ?"
    + _UNIT
    + r"(?:,? (?:and )?"
    + _NUMBER
    + r" ?"
    + _UNIT
    + r")?",
    re.IGNORECASE,
)
_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_DELAY = 7 * 86400.0  # past a week it is no greylisting delay we would wait for
_MAX_SCAN = 4096  # characters of a reply looked at


def _unit_seconds(unit: str) -> float:
    return _SECONDS[unit[0].lower()]


def greylist_delay(reply: SmtpFacts | Reply | str | None) -> float | None:
    """Seconds the server asks us to wait before trying again, when its reply says so.

    Reads "try again in 300 seconds", "retry in 5 minutes", "Greylisted for 5 min",
    "try again after 60s", "come back in 1 hour", "4 min 30 s" ...; None when the reply
    names no delay, is not a 4xx (``SmtpFacts`` / ``Reply`` with a code), or names an
    absurd one. A string is read as reply text.
    """
    if reply is None:
        return None
    if isinstance(reply, SmtpFacts):
        if reply.code is not None and reply.code // 100 != 4:
            return None
        text = reply.message or ""
    elif isinstance(reply, Reply):
        if reply.code // 100 != 4:
            return None
        text = reply.text
    else:
        text = reply
    m = _DELAY.search(_without_addresses(text[:_MAX_SCAN]))
    if m is None:
        return None
    seconds = float(m.group(1)) * _unit_seconds(m.group(2))
    if m.group(3) is not None:
        seconds += float(m.group(3)) * _unit_seconds(m.group(4))
    if not 0 <= seconds <= _MAX_DELAY:
        return None
    return seconds

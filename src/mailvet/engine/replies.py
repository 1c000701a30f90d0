"""Classify one SMTP reply (code, RFC 3463 enhanced code, text) into an ``SmtpOutcome``.

The one rule that matters: never call a mailbox undeliverable (USER_UNKNOWN,
DISABLED) without an explicit 5xx about *the mailbox*. A refusal of *our* host or
sender (5.7.x, Spamhaus, "blocked", "sender verify failed") is BLOCKED, which the
verdict turns into "unknown"; a 5xx that says nothing about the mailbox is treated
the same way.

The text tables below quote real server replies. Sources: reacher's
check-if-email-exists reply parser (core/src/smtp/parser.rs, which records the
domains each reply was seen on), KumoMTA's bounce classification rules
(assets/bounce_classifier), bouncehammer's UserUnknown table, Google's and
Microsoft's postmaster/NDR documentation, and Postfix / Exim / qmail source texts.
Patterns are matched case-insensitively against the whole (joined) reply text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailvet.engine.facts import SmtpOutcome

__all__ = ["Reply", "classify", "classify_reply", "parse_enhanced"]

# RFC 3463 enhanced code at the start of the text ("5.1.1 ..."), or qmail's trailing
# "(#5.1.1)"; the class digit must agree with the reply code's first digit.
_ENHANCED_HEAD = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$|[^\d.])")
_ENHANCED_QMAIL = re.compile(r"\(#([245])\.(\d{1,3})\.(\d{1,3})\)")


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
    r"abusix",
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
# count only with exactly 550 (and after the policy table had its say).
# Outlook.com: "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)."
# GMX: "550 Requested action not taken: mailbox unavailable"
# etu.uca.fr: "550 5.5.0 Requested actions not taken as the mailbox is unavailable"
_UNAVAILABLE = _any(r"mailbox (?:is )?unavailable")

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
    # ... then anything that points at our host or sender (beats mailbox words: Exim's
    # "Sender verify failed" carries "Unrouteable address" about OUR address) ...
    if _POLICY.search(text) or _OURS.search(text) or enh in _SENDER_ENHANCED or subject == "7":
        return SmtpOutcome.BLOCKED
    if enh == "5.2.1":
        return SmtpOutcome.DISABLED
    if enh in _UNKNOWN_ENHANCED:
        return SmtpOutcome.USER_UNKNOWN
    # ... then the words, for servers without (or with useless) enhanced codes, and only
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
    if _UNKNOWN.search(text) or (code == 550 and _UNAVAILABLE.search(text)):
        return SmtpOutcome.USER_UNKNOWN
    # A permanent refusal that says nothing about the mailbox (policy, syntax, "Transaction
    # failed"): unknown, never undeliverable.
    return SmtpOutcome.BLOCKED

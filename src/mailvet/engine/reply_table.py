"""Real SMTP replies and what ``engine/replies.py`` must make of them, each with its source.

Every row is a reply to RCPT TO as the server sends it (lines joined by ``\\n``, each with
its code, ``-`` on all but the last), the ``SmtpOutcome`` it must get, and where the text
comes from. ``tests/unit/test_replies.py`` feeds every row through the SMTP stage's own
parser (``replies.parse_reply_lines``) and classifier. Client IP addresses and mailbox
names from public bounce logs are replaced by documentation values (192.0.2.x,
198.51.100.x, ``x@y``); nothing else is reworded.

Rows marked ``CONSTRUCTED`` are not quoted from a server: they pin a rule (the shape of
the reply they guard is named). Rows marked ``EARLIER`` were in the previous table; their
texts come from public bounce logs and reacher's parser table, and their individual
sources were not re-checked this round.
"""

from __future__ import annotations

from typing import NamedTuple

from mailvet.engine.facts import SmtpOutcome

__all__ = ["ROWS", "ReplyRow"]


class ReplyRow(NamedTuple):
    raw: str  # the reply as received, "\n" between lines
    expected: SmtpOutcome
    source: str


A = SmtpOutcome.ACCEPTED
UU = SmtpOutcome.USER_UNKNOWN
DIS = SmtpOutcome.DISABLED
FULL = SmtpOutcome.MAILBOX_FULL
TMP = SmtpOutcome.TEMPORARY
BLK = SmtpOutcome.BLOCKED
BAD = SmtpOutcome.INVALID_SMTP

# --- sources -------------------------------------------------------------------------------
EARLIER = "earlier table (public bounce logs / reacher core/src/smtp/parser.rs; not re-checked)"
CONSTRUCTED = "constructed to pin a rule"
GOOGLE = (
    "Google Workspace Admin Help 'SMTP error reference' (support.google.com/a/answer/3726730),"
    " as quoted in sisimai go-sisimai rhost/for-google.go"
)
MICROSOFT = (
    "Microsoft Learn Exchange Online NDR pages (5.4.1, 5.7.1, 5.7.5xx, 5.7.6xx, 5.7.7xx),"
    " as quoted in sisimai go-sisimai rhost/for-microsoft.go"
)
M365_DBEB = (
    "Microsoft Learn 'Fix NDR error 550 5.4.1 in Exchange Online' (Directory Based Edge Blocking)"
)
MS_708 = (
    "mxio.io/learn/errors/ip-blocked-o365-5-7-708 and"
    " simplefastwebsites.com/errors/email/smtp-550-5-7-708-m365-traffic-not-accepted-from-ip/"
)
MIMECAST = "wordtothewise.com/2018/07/who-are-mimecast (Mimecast rejections from bounce logs)"
IRONPORT = (
    "Cisco IronPort SenderBase HAT reject, quoted at pcsdesk.com/?p=416 and danrichard.com"
    " (2011/03/18, 'how to fix 554 your access to this mail system has been rejected')"
)
POSTFIX = "Postfix smtpd_check.c reply texts (reject_rbl_client, reject_unknown_client_hostname)"


def _pb(paste: str) -> str:
    return f"bounce log, pastebin.com/{paste}"


ROWS: tuple[ReplyRow, ...] = (
    # --- accepted -------------------------------------------------------------------------
    ReplyRow("250 2.1.5 OK a1si1234567qkb.12 - gsmtp", A, EARLIER),
    ReplyRow("250 2.1.5 Recipient OK", A, EARLIER),
    ReplyRow("250 Accepted", A, EARLIER),
    ReplyRow("250 recipient <x@y> ok", A, EARLIER),
    ReplyRow("251 2.1.5 User not local; will forward to <x@z>", A, EARLIER),
    ReplyRow("252 2.1.5 Cannot VRFY user, but will accept message", A, EARLIER),
    # --- user unknown: clear statements, help links and relay IPs do not change them -------
    ReplyRow(
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\n"
        "550-5.1.1 unnecessary spaces. For more information, go to\n"
        "550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp",
        UU,
        GOOGLE,
    ),
    ReplyRow(
        "553 5.1.2 We weren't able to find the recipient domain. Please check for any spelling"
        " errors, and make sure you didn't enter any spaces, periods, or other punctuation"
        " after the recipient's email address.",
        UU,
        GOOGLE,
    ),
    ReplyRow(
        "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).", UU, EARLIER
    ),
    ReplyRow(
        "550 5.5.0 Requested action not taken: mailbox unavailable."
        " [DB5EUR01FT039.eop-EUR01.prod.protection.outlook.com]",
        UU,
        _pb("r35f04G9") + " (Outlook.com, in reply to RCPT TO)",
    ),
    ReplyRow(
        "550 Requested action not taken: mailbox unavailable",
        UU,
        _pb("MnaraCuB") + " (mx3.hotmail.com, in reply to RCPT TO)",
    ),
    ReplyRow(
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[BN8NAM11FT066.eop-nam11.prod.protection.outlook.com]",
        UU,
        M365_DBEB,
    ),
    ReplyRow(
        "550 Mailbox not found. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022"
        "&&no=1000728",
        UU,
        _pb("pnX6jKVc") + " (qq.com)",
    ),
    ReplyRow("550 x@juno.com is not a valid user", UU, _pb("pnX6jKVc") + " (juno.com)"),
    ReplyRow("550 x@earthlink.net...User unknown", UU, _pb("pnX6jKVc") + " (earthlink.net)"),
    ReplyRow(
        "550 5.1.1 <x@y>: Recipient address rejected: undeliverable address: host"
        " 192.168.1.131[192.168.1.131] said: 550 sorry, no mailbox here by that name"
        " (in reply to RCPT TO command)",
        UU,
        _pb("45SNf1Ec") + " (Haraka smtp_forward log of a Postfix relay refusal)",
    ),
    ReplyRow(
        "550 5.1.1 <x@y>: Recipient address rejected: User unknown in virtual mailbox table",
        UU,
        EARLIER,
    ),
    ReplyRow(
        "550 5.1.1 <x@y>: Recipient address rejected: User unknown in local recipient table",
        UU,
        EARLIER,
    ),
    ReplyRow(
        "550 5.1.1 <x@y>: Recipient address rejected: User unknown in relay recipient table",
        UU,
        EARLIER,
    ),
    ReplyRow(
        "550 5.1.1 <x@y>: Recipient address rejected: User unknown in virtual alias table",
        UU,
        EARLIER,
    ),
    ReplyRow("550 5.1.1 <x@y>: Recipient address rejected: User unknown", UU, EARLIER),
    ReplyRow("550 Unrouteable address", UU, EARLIER),
    ReplyRow("550 No Such User Here", UU, EARLIER),
    ReplyRow("550-Callout verification failed:\n550 550 No Such User Here", UU, EARLIER),
    ReplyRow("550 5.1.1 <x@y>... User unknown", UU, EARLIER),
    ReplyRow("550 sorry, no mailbox here by that name. (#5.1.1)", UU, EARLIER),
    ReplyRow("511 sorry, no mailbox here by that name (#5.1.1 - chkuser)", UU, EARLIER),
    ReplyRow(
        "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]"
        " - mta1234.mail.bf1.yahoo.com",
        UU,
        EARLIER,
    ),
    ReplyRow(
        "554 delivery error: dd This user doesn't have an aol.com account (x@aol.com)", UU, EARLIER
    ),
    ReplyRow(
        "550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550 [abc.uk22]",
        UU,
        MIMECAST,
    ),
    ReplyRow("550 5.1.1 User Unknown", UU, EARLIER),
    ReplyRow("550 5.1.1 Recipient unknown <x@y>", UU, EARLIER),
    ReplyRow("550 5.1.1 Unknown recipient address", UU, EARLIER),
    ReplyRow("554 Unknown Recipient (#5.1.1)", UU, EARLIER),
    ReplyRow("550 Unknown user", UU, EARLIER),
    ReplyRow("550 5.1.1 No such user - pp", UU, EARLIER),
    ReplyRow("550 5.1.1 MXIN501 mailbox x@virginmedia.com unknown", UU, EARLIER),
    ReplyRow(
        "550 5.1.1 <x@y>: Email address could not be found, or was misspelled (G8)", UU, EARLIER
    ),
    ReplyRow("550 No such person at this address", UU, EARLIER),
    ReplyRow("550 5.1.1 <x@y> Recipient not found.", UU, EARLIER),
    ReplyRow("550 5.1.1 Mailbox not found", UU, EARLIER),
    ReplyRow("550 Invalid mailbox", UU, EARLIER),
    ReplyRow("550 5.1.1 Is not a valid mailbox", UU, EARLIER),
    ReplyRow("550 5.1.1 <x@y>: unknown or illegal alias: x@icloud.com", UU, EARLIER),
    ReplyRow("550 RCPT (x@stigpods.com.cn) dosn't exist", UU, EARLIER),
    ReplyRow("553 5.1.3 Bad recipient address syntax", UU, EARLIER),
    ReplyRow(
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        UU,
        EARLIER,
    ),
    ReplyRow("550 5.1.1 Not our Customer", UU, EARLIER),
    ReplyRow(
        "550 5.1.1 User not listed in public Name & Address Book",
        UU,
        "sisimai lhost Notes user-unknown texts (Lotus Domino; 'not listed' is no block list)",
    ),
    ReplyRow(
        "550 5.1.1 User not listed in Domino Directory",
        UU,
        "sisimai lhost Notes user-unknown texts (Lotus Domino)",
    ),
    ReplyRow("550 Recipient does not exist here", UU, EARLIER),
    ReplyRow("550 Address of the recipient could not be found", UU, EARLIER),
    ReplyRow("551 User not local; please try <x@z> -- user unknown", UU, EARLIER),
    ReplyRow(
        "550 5.1.1 <sender@y>: Recipient address rejected: User unknown",
        UU,
        CONSTRUCTED + " (the echoed address is masked: 'sender' in it is no signal)",
    ),
    ReplyRow(
        "550 5.1.1 <192.0.2.1@y>: Recipient address rejected: User unknown",
        UU,
        CONSTRUCTED + " (an IP-looking local part in the echoed address is no signal)",
    ),
    # --- disabled ----------------------------------------------------------------------------
    ReplyRow(
        "550-5.2.1 The email account that you tried to reach is disabled. Learn more at\n"
        "550 5.2.1  https://support.google.com/mail/?p=DisabledUser a1si123 - gsmtp",
        DIS,
        GOOGLE,
    ),
    ReplyRow("550 5.2.1 The email account that you tried to reach is inactive.", DIS, GOOGLE),
    ReplyRow(
        "554 delivery error: dd Sorry, your message to x@yahoo.com cannot be delivered. "
        "This mailbox is disabled (554.30).",
        DIS,
        EARLIER,
    ),
    ReplyRow(
        "554 delivery error: dd Sorry your message to x@y cannot be delivered. This account "
        "has been disabled or discontinued",
        DIS,
        EARLIER,
    ),
    ReplyRow("550 5.2.1 RACT MY.IP: Mailbox is inactive: <x@hanmail.net>", DIS, EARLIER),
    ReplyRow("550 5.2.1 Mailbox disabled for this recipient", DIS, EARLIER),
    ReplyRow("550 User account is disabled", DIS, EARLIER),
    # --- mailbox full ------------------------------------------------------------------------
    ReplyRow(
        "452-4.2.2 The email account that you tried to reach is over quota. Please direct\n"
        "452-4.2.2 the recipient to\n"
        "452 4.2.2  https://support.google.com/mail/?p=OverQuotaTemp a1si123 - gsmtp",
        FULL,
        GOOGLE,
    ),
    ReplyRow(
        "552-5.2.2 The email account that you tried to reach is over quota and inactive.\n"
        "552 5.2.2  https://support.google.com/mail/?p=OverQuotaPerm a1si - gsmtp",
        FULL,
        GOOGLE,
    ),
    ReplyRow("552 5.2.2 <x@y>: Recipient address rejected: Mailbox full", FULL, EARLIER),
    ReplyRow("552 5.2.2 Over quota", FULL, EARLIER),
    ReplyRow("552 Requested mailbox exceeds quota.", FULL, EARLIER),
    ReplyRow("452 4.2.2 Mailbox is full", FULL, EARLIER),
    ReplyRow("550 user has too many messages on the server", FULL, EARLIER),
    ReplyRow("552 recipient storage full, try again later", FULL, EARLIER),
    # --- the ambiguous "mailbox unavailable" next to a policy word, an IP or a link ----------
    ReplyRow(
        "550-Requested action not taken: mailbox unavailable\n"
        "550-Reject due to policy restrictions.\n"
        "550 For explanation visit http://postmaster.gmx.com/en/error-messages?ip=192.0.2.1&c=poli",
        BLK,
        _pb("0BCS3rhM") + " (mx00.emig.gmx.net)",
    ),
    ReplyRow(
        "450-Requested mail action not taken: mailbox unavailable\n"
        "450-Reject due to policy violations.\n"
        "450 For explanation visit https://help.1and1.com/smtp-error-messages?ip=192.0.2.1&c=poli",
        BLK,
        _pb("FyeABH1h") + " (mx01.1and1.mx, in reply to RCPT TO)",
    ),
    ReplyRow(
        "550 Requested action not taken: mailbox unavailable [192.0.2.1]",
        BLK,
        CONSTRUCTED + " (RFC 5321 4.2.3 550 text next to a bare bracketed IPv4)",
    ),
    ReplyRow(
        "550 Requested action not taken: mailbox unavailable for 192.0.2.1",
        BLK,
        CONSTRUCTED + " (unbracketed IPv4)",
    ),
    ReplyRow(
        "550 mailbox unavailable, client [2001:db8::25]",
        BLK,
        CONSTRUCTED + " (bracketed IPv6; 'client' alone is no strong word)",
    ),
    ReplyRow(
        "550 mailbox unavailable 2001:db8:0:0:1:0:0:25",
        BLK,
        CONSTRUCTED + " (unbracketed IPv6)",
    ),
    ReplyRow(
        "550 5.5.0 Requested action not taken: mailbox unavailable - see https://example.net/delist",
        BLK,
        CONSTRUCTED + " (a delisting link)",
    ),
    ReplyRow(
        "550 Mailbox unavailable: listed",
        BLK,
        CONSTRUCTED + " ('listed' alone)",
    ),
    ReplyRow(
        "554 mailbox unavailable", BLK, EARLIER + " ('mailbox unavailable' counts only with 550)"
    ),
    # --- block lists and gateways: never undeliverable ----------------------------------------
    ReplyRow(
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org;"
        " https://www.spamhaus.org/query/ip/192.0.2.1",
        BLK,
        POSTFIX + " (Spamhaus)",
    ),
    ReplyRow(
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org;"
        " https://www.spamhaus.org/sbl/query/SBL468702",
        BLK,
        _pb("rhrW1wqA") + " (Spamhaus SBL)",
    ),
    ReplyRow(
        "550 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using Spamhaus; To"
        " request removal from this list see http://www.spamhaus.org/lookup.lasso",
        BLK,
        _pb("wCbAn5ZX") + " (Exchange Online, in reply to RCPT TO)",
    ),
    ReplyRow(
        "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus. To"
        " request removal from this list see http://www.spamhaus.org/lookup.lasso (AS16012611)",
        BLK,
        _pb("gXfSs49X") + " (Exchange Online)",
    ),
    ReplyRow(
        "550 5.7.1 Email rejected because 192.0.2.1 is listed by zen.spamhaus.org",
        BLK,
        "princeton.service-now.com KB 'How to check firewall spam block list by IP address'",
    ),
    ReplyRow(
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using dnsbl.sorbs.net;"
        " Currently Sending Spam See: http://www.sorbs.net/lookup.shtml?192.0.2.1",
        BLK,
        _pb("yn3Tetbx") + " (SORBS)",
    ),
    ReplyRow(
        "554 Service unavailable; Client host [192.0.2.1] blocked using dnsbl.sorbs.net; See:"
        " http://www.dnsbl.sorbs.net/lookup.shtml",
        BLK,
        "math.fel.cvut.cz/0misc/undelivered.html (SORBS)",
    ),
    ReplyRow(
        "550 5.7.0 Your server IP address is in the SORBS DNSBL database, bye",
        BLK,
        _pb("dq1YGKdM") + " (SORBS, in reply to RCPT TO)",
    ),
    ReplyRow(
        "554 Service unavailable; Client host [192.0.2.1] blocked using bl.spamcop.net; Blocked"
        " - see http://www.spamcop.net/bl.shtml?192.0.2.1",
        BLK,
        "webnexus.net 'Email: Rejection notices' (SpamCop)",
    ),
    ReplyRow(
        "554 IP found in Spamcop Black List. Visit spamcop.net for more information",
        BLK,
        "knowledge.3essentials.com article 232 (SpamCop)",
    ),
    ReplyRow(
        "550 spamcop.mimecast.org Blocked - see http://www.spamcop.net/bl.shtml?192.0.2.1. -"
        " https://community.mimecast.com/docs/DOC-1369#550",
        BLK,
        MIMECAST + " (SpamCop via Mimecast)",
    ),
    ReplyRow(
        "550-Blacklisted in dnsbl-1.uceprotect.net:\n"
        "550-IP 192.0.2.1 is UCEPROTECT-Level 1 listed. See\n"
        "550 http://www.uceprotect.net/rblcheck.php?ipr=192.0.2.1",
        BLK,
        _pb("XyCXXpvt") + " (UCEPROTECT, in reply to RCPT TO)",
    ),
    ReplyRow(
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using"
        " dnsbl-1.uceprotect.net; IP 192.0.2.1 is UCEPROTECT-Level 1 listed. See"
        " http://www.uceprotect.net/rblcheck.php?ipr=192.0.2.1",
        BLK,
        _pb("9sH8BHtW") + " (UCEPROTECT, in reply to RCPT TO)",
    ),
    ReplyRow(
        "550 JunkMail rejected - (gmail.com) [192.0.2.1]:46615 is in an RBL: "
        "http://www.barracudanetworks.com/reputation/?pr=1&ip=192.0.2.1",
        BLK,
        EARLIER + " (Barracuda)",
    ),
    ReplyRow(
        "554 Service unavailable; Client host [192.0.2.1] blocked using Barracuda Reputation;"
        " http://www.barracudanetworks.com/reputation/?r=1&ip=192.0.2.1",
        BLK,
        EARLIER + " (Barracuda)",
    ),
    ReplyRow(
        "554 Service unavailable; Client host [server1.mail.example] blocked using Barracuda"
        " Reputation; http://bbl.barracudacentral.com/q.cgi?ip=192.0.2.1",
        BLK,
        "luxsci.com/blog/?p=16857 (Barracuda)",
    ),
    ReplyRow(
        "554 Refused. Your IP address is listed in the RBL at b.barracudacentral.org",
        BLK,
        _pb("FreqNBvG") + " (Barracuda, in reply to RCPT TO)",
    ),
    ReplyRow(
        "550 550 This system is configured to reject mail from 192.0.2.1 [192.0.2.1] (Host"
        " blacklisted - Realtime Black List server 'b.barracudacentral.org')",
        BLK,
        _pb("Y2V47Ysc") + " (Barracuda)",
    ),
    ReplyRow(
        '550-"JunkMail rejected - mail.example [192.0.2.1]:40598 is in an RBL\n'
        "550-on csi.cloudmark.com/reset-request/?ip=192.0.2.1 , see Poor Reputation\n"
        '550 Sender"',
        BLK,
        _pb("ZR4Gcwca") + " (Barracuda appliance with Cloudmark, in reply to RCPT TO)",
    ),
    ReplyRow(
        "550 permanent failure for one or more recipients (x@y:blocked)",
        BLK,
        EARLIER + " (Barracuda ESS)",
    ),
    ReplyRow(
        "554 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.1",
        BLK,
        "gitlab.com/lightmeter/controlcenter/-/issues/664 (Proofpoint, pphosted.com)",
    ),
    ReplyRow(
        "550 5.7.0 Blocked - see https://support.proofpoint.com/dnsbl-lookup.cgi?ip=192.0.2.1",
        BLK,
        _pb("eiyNZME7") + " (Proofpoint in front of iCloud)",
    ),
    ReplyRow(
        "550 5.7.0 Mail from 192.0.2.1 refused by Proofpoint Reputation Services. "
        "SENDER please see https://support.proofpoint.com/dnsbl-lookup.cgi?192.0.2.1",
        BLK,
        EARLIER + " (Proofpoint)",
    ),
    ReplyRow(
        "550 csi.mimecast.org Poor Reputation Sender. - https://community.mimecast.com",
        BLK,
        EARLIER + " (Mimecast)",
    ),
    ReplyRow(
        "550 Envelope blocked - User Entry - https://community.mimecast.com/docs/DOC-1369#550",
        BLK,
        MIMECAST,
    ),
    ReplyRow(
        "550 Administrative prohibition - envelope blocked -"
        " https://community.mimecast.com/docs/DOC-1369#550",
        BLK,
        MIMECAST,
    ),
    ReplyRow(
        "554 Your access to this mail system has been rejected due to the sending MTA's poor"
        " reputation. If you believe that this failure is in error, please contact the intended"
        " recipient via alternate means.",
        BLK,
        IRONPORT,
    ),
    ReplyRow(
        "550 #5.7.1 Your access to submit messages to this e-mail system has been rejected.",
        BLK,
        _pb("jhdNMiyp") + " (Cisco IronPort HAT reject, in reply to RCPT TO)",
    ),
    ReplyRow(
        "550 5.7.1 <x@y>: Recipient address rejected: ERS-RBL.",
        BLK,
        _pb("VaFdFSVL") + " (Trend Micro hosted email security)",
    ),
    ReplyRow(
        "554 5.7.1 <x@y>: Recipient address rejected: [RBL03] your ip 192.0.2.1 is listed on"
        " too many RBLs",
        BLK,
        _pb("QgkHAJBQ"),
    ),
    # --- Microsoft ------------------------------------------------------------------------------
    ReplyRow(
        "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your"
        " Internet service provider since part of their network is on our block list (S3150).",
        BLK,
        MICROSOFT,
    ),
    ReplyRow(
        "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your"
        " Internet service provider since part of their network is on our block list (AS3150)."
        " You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors."
        " [BY2NAM01FT030.eop-nam01.prod.protection.outlook.com]",
        BLK,
        _pb("rwzHX08U") + " (Outlook.com)",
    ),
    ReplyRow(
        "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your"
        " Internet service provider since part of their network is on our block list (S3140)."
        " You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors."
        " [DB3EUR04FT003.eop-eur04.prod.protection.outlook.com]",
        BLK,
        _pb("3Peq5x5F") + " (Outlook.com)",
    ),
    ReplyRow(
        "550 SC-001 (SNT004-MC10F17) Unfortunately, messages from 192.0.2.1 weren't sent."
        " Please contact your Internet service provider since part of their network is on our"
        " block list. You can also refer your provider to"
        " http://mail.live.com/mail/troubleshooting.aspx#errors.",
        BLK,
        _pb("dDQSj00E") + " (mx4.hotmail.com, no enhanced code)",
    ),
    ReplyRow("550 5.7.606 Access denied, banned sending IP [192.0.2.1].", BLK, MICROSOFT),
    ReplyRow(
        "550 5.7.606 Access denied, banned sending IP [192.0.2.1]. To request removal from this"
        " list please visit https://sender.office.com/ and follow the directions. For more"
        " information please go to http://go.microsoft.com/fwlink/?LinkID=526655 AS(1430)",
        BLK,
        _pb("EH1TUb0X") + " (Exchange Online, in reply to RCPT TO)",
    ),
    ReplyRow(
        "550 5.7.511 Access denied, banned sender[192.0.2.1]. To request removal from this list"
        " please forward this message to delist@messaging.microsoft.com. For more information"
        " please go to http://go.microsoft.com/fwlink/?LinkId=526653. AS(508)"
        " [SN1NAM04FT013.eop-NAM04.prod.protection.outlook.com]",
        BLK,
        _pb("JEGXAxrE") + " (Exchange Online, RCPT TO)",
    ),
    ReplyRow(
        "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP. For"
        " more information please go to https://go.microsoft.com/fwlink/?LinkID=526655 AS(7171)",
        BLK,
        MS_708,
    ),
    ReplyRow(
        "550 5.7.513 Service unavailable, Client host [192.0.2.1] blocked by example.com using"
        " Customer Block list (AS16012607)",
        BLK,
        MICROSOFT,
    ),
    ReplyRow(
        "550 5.7.504 Recipient address rejected: Access denied",
        BLK,
        MICROSOFT + " (Microsoft says 'recipient not valid', but 5.7.x: kept unknown)",
    ),
    ReplyRow("550 5.4.1 Relay Access Denied", BLK, MICROSOFT + " (5.4.1 without DBEB's words)"),
    ReplyRow(
        "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP"
        " reputation. For e-mail delivery information, see https://postmaster.live.com (S775)",
        BLK,
        MICROSOFT,
    ),
    # --- Google 4.7.x / 5.7.x ---------------------------------------------------------------
    ReplyRow(
        "550-5.7.1 [192.0.2.1] Our system has detected that this message is likely\n"
        "550-5.7.1 unsolicited mail. To reduce the amount of spam sent to Gmail,\n"
        "550 5.7.1 this message has been blocked.",
        BLK,
        GOOGLE,
    ),
    ReplyRow(
        "421-4.7.0 [192.0.2.1] Our system has detected an unusual rate of\n"
        "421 4.7.0 unsolicited mail originating from your IP address.",
        BLK,
        GOOGLE,
    ),
    ReplyRow(
        "421 4.7.0 This message is suspicious due to the very low reputation of the sending IP"
        " address/domain. To protect our users from spam, mail sent from your IP address has"
        " been temporarily rate limited.",
        BLK,
        GOOGLE,
    ),
    ReplyRow(
        "421 4.7.28 Gmail has detected an unusual rate of mail originating from your IP address"
        " 192.0.2.25. To protect our users from spam, mail has been temporarily rate limited."
        " https://support.google.com/mail/?p=UnsolicitedRateLimitError",
        BLK,
        GOOGLE,
    ),
    ReplyRow(
        "550 5.7.28 There is an unusual rate of unsolicited mail originating from your IP"
        " address. To protect our users from spam, mail sent from your IP address has been"
        " blocked.",
        BLK,
        GOOGLE,
    ),
    ReplyRow(
        "550 5.7.26 This mail is unauthenticated, which poses a security risk to the sender",
        BLK,
        EARLIER + " (Gmail)",
    ),
    ReplyRow(
        "550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's"
        " DMARC policy. Please contact the administrator of example.com domain.",
        BLK,
        GOOGLE,
    ),
    ReplyRow(
        "421 4.7.26 This mail has been rate limited because it is unauthenticated. Gmail"
        " requires all senders to authenticate with either SPF or DKIM.",
        TMP,
        GOOGLE + " (4xx about our sending: unknown either way)",
    ),
    ReplyRow(
        "421 4.7.32 Your email has been rate limited because the From: header (RFC5322) in this"
        " message isn't aligned with either the authenticated SPF or DKIM organizational"
        " domain.",
        TMP,
        GOOGLE,
    ),
    ReplyRow(
        "550 5.7.1 The user or domain that you are sending to (or from) has a policy that"
        " prohibited the mail that you sent.",
        BLK,
        GOOGLE,
    ),
    ReplyRow(
        "550 5.7.25 The IP address sending this message does not have a PTR record setup, or the"
        " corresponding forward DNS entry does not point to the sending IP. As a policy, Gmail"
        " does not accept messages from IPs with missing PTR records.",
        BLK,
        GOOGLE,
    ),
    ReplyRow(
        "550-5.2.1 The user you are trying to contact is receiving mail at a rate that\n"
        "550 5.2.1 prevents additional messages from being delivered."
        " https://support.google.com/mail/?p=ReceivingRatePerm",
        TMP,
        GOOGLE + " (5.2.1, but the mailbox exists: was DISABLED before this table)",
    ),
    ReplyRow(
        "450-4.2.1 The user you are trying to contact is receiving mail at a rate that\n"
        "450 4.2.1 prevents additional messages from being delivered.",
        TMP,
        GOOGLE,
    ),
    # --- other refusals of OUR host / sender -------------------------------------------------
    ReplyRow("554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied", BLK, POSTFIX),
    ReplyRow(
        "550 5.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.1]",
        BLK,
        POSTFIX,
    ),
    ReplyRow(
        "553 sorry, mail from your location [192.0.2.1] is administratively denied (#5.7.1)",
        BLK,
        EARLIER + " (qmail)",
    ),
    ReplyRow(
        "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
        BLK,
        EARLIER + " (qmail)",
    ),
    ReplyRow("554 5.7.1 <x@y>: Relay access denied", BLK, _pb("cuaSEAAq") + " (Postfix)"),
    ReplyRow("550 5.7.1 <x@y>... Relaying denied", BLK, EARLIER + " (Sendmail)"),
    ReplyRow(
        "550 5.7.1 Service unavailable; Client host [192.0.2.1] is blacklisted.", BLK, EARLIER
    ),
    ReplyRow(
        "554-gmx.net (mxgmx117) Nemesis ESMTP Service not available\n554-No SMTP service\n"
        "554-IP address is block listed.\n554 For explanation visit https://www.gmx.net/",
        BLK,
        EARLIER + " (GMX)",
    ),
    ReplyRow(
        "554 resimta-h1p-037598.sys.comcast.net 192.0.2.1 found on one or more DNSBLs, see "
        "http://postmaster.comcast.net/smtp-error-codes.php#BL000001",
        BLK,
        EARLIER + " (Comcast)",
    ),
    ReplyRow(
        "550 smtp-fw-9107.amazon.com; SBRS score too low: http://www.senderbase.org/",
        BLK,
        EARLIER + " (Amazon)",
    ),
    ReplyRow(
        "550 you are not allowed to send mail to <x@y>",
        BLK,
        _pb("Y6mnKJ1Z") + " (mxmta.owm.bell.net, in reply to RCPT TO)",
    ),
    ReplyRow(
        "554 5.7.1 <x@y>: Recipient address rejected: Recipient address rejected for policy"
        " reasons",
        BLK,
        _pb("mab2zkNE"),
    ),
    ReplyRow(
        "550-Verification failed for <verify@x>\n550-Unrouteable address\n550 Sender verify failed",
        BLK,
        EARLIER + " (Exim sender callout: the unrouteable address is OURS)",
    ),
    ReplyRow("550 5.1.0 <verify@x>: Sender address rejected: Domain not found", BLK, EARLIER),
    ReplyRow("553 5.1.8 <verify@x>: Sender address rejected: Domain not found", BLK, EARLIER),
    ReplyRow("530 5.7.0 Must issue a STARTTLS command first", BLK, GOOGLE),
    ReplyRow(
        "550 5.7.1 No such user!",
        BLK,
        _pb("pnX6jKVc") + " (Yandex: 5.7.x stays unknown, see replies.py)",
    ),
    # 5xx saying nothing about the mailbox: unknown, never undeliverable
    ReplyRow("550 Message rejected", BLK, EARLIER),
    ReplyRow("554 Transaction failed", BLK, EARLIER),
    ReplyRow("550", BLK, EARLIER),
    ReplyRow("554 5.0.0 Service unavailable", BLK, EARLIER),
    ReplyRow("500 5.5.1 Command unrecognized", BLK, EARLIER),
    # refusals of OUR sender / host / session with mailbox-looking words (regressions: each
    # was once USER_UNKNOWN or DISABLED)
    ReplyRow("550 Sender domain does not exist", BLK, CONSTRUCTED),
    ReplyRow("553 Domain of sender address foo@bar does not exist", BLK, CONSTRUCTED),
    ReplyRow("550 HELO name x does not exist", BLK, CONSTRUCTED),
    ReplyRow("554 sending host does not exist in DNS", BLK, CONSTRUCTED),
    ReplyRow("550 The PTR record for 192.0.2.1 could not be found", BLK, CONSTRUCTED),
    ReplyRow("550 Too many invalid recipients", BLK, CONSTRUCTED),
    ReplyRow("501 Syntax error in parameters: invalid address", BLK, CONSTRUCTED),
    ReplyRow("550 Relaying disabled", BLK, CONSTRUCTED),
    ReplyRow("550 SMTPUTF8 is disabled", BLK, CONSTRUCTED),
    ReplyRow("550 Your sending account has been suspended", BLK, CONSTRUCTED),
    ReplyRow("550 rejected because your hostname x does not exist", BLK, CONSTRUCTED),
    ReplyRow("501 5.1.3 Bad recipient address syntax", BLK, CONSTRUCTED + " (501-504: syntax)"),
    ReplyRow("502 5.1.1 User unknown", BLK, CONSTRUCTED + " (501-504: syntax)"),
    ReplyRow(
        "504 5.5.2 <x@y>: Recipient address rejected: need fully-qualified address", BLK, POSTFIX
    ),
    ReplyRow("550 5.1.1 EHLO name does not exist in DNS", BLK, CONSTRUCTED),
    ReplyRow("550 Client host 192.0.2.1 could not be found in DNS", BLK, CONSTRUCTED),
    ReplyRow("552 Message size exceeds fixed maximum message size", BLK, EARLIER),
    ReplyRow("555 5.5.4 Unsupported option: SMTPUTF8", BLK, EARLIER),
    ReplyRow(
        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.1]", BLK, POSTFIX
    ),
    ReplyRow("451 4.1.8 Domain of sender address x@y does not resolve", BLK, POSTFIX),
    ReplyRow("450 Sender domain does not exist, try again", TMP, CONSTRUCTED),
    ReplyRow("452 Too many invalid recipients", TMP, CONSTRUCTED),
    # --- temporary ------------------------------------------------------------------------------
    ReplyRow(
        "450 4.2.0 <x@y>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.com.html",
        TMP,
        EARLIER + " (postgrey)",
    ),
    ReplyRow(
        "450 4.7.1 <x@y>: Recipient address rejected: Greylisted, try again in 300 seconds",
        TMP,
        EARLIER,
    ),
    ReplyRow("451 4.7.1 Please try again later", TMP, EARLIER),
    ReplyRow("451 Temporary local problem - please try later", TMP, EARLIER + " (Exim)"),
    ReplyRow(
        "451-4.3.0 Mail server temporarily rejected message.\n451 4.3.0 a1si - gsmtp", TMP, GOOGLE
    ),
    ReplyRow(
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected "
        "volume or user complaints - 4.16.55.1",
        TMP,
        EARLIER + " (Yahoo)",
    ),
    ReplyRow(
        "451 Internal resource temporarily unavailable - https://community.mimecast.com/docs/DOC-1369#451",
        TMP,
        "dwlistore.dwli.org knowledgebase 444 (Mimecast greylisting)",
    ),
    ReplyRow("450 4.1.1 <x@y>: Recipient address rejected: unverified address", TMP, POSTFIX),
    ReplyRow("450 4.2.1 mailbox unavailable", TMP, EARLIER),
    ReplyRow("451 qq temporary problem (#4.3.0)", TMP, EARLIER + " (qmail)"),
    ReplyRow("452 4.5.3 Too many recipients", TMP, EARLIER),
    ReplyRow("452 4.3.1 Insufficient system storage", TMP, EARLIER),
    ReplyRow("421 4.3.2 Service not available, closing transmission channel", TMP, EARLIER),
    ReplyRow(
        "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.1]", BLK, POSTFIX
    ),
    ReplyRow(
        "451 4.7.1 Service unavailable - try again later; blocked using zen.spamhaus.org",
        TMP,
        EARLIER,
    ),
    # --- nonsense -------------------------------------------------------------------------------
    ReplyRow("354 Start mail input", BAD, EARLIER),
    ReplyRow("199 what", BAD, EARLIER),
    ReplyRow("600 nope", BAD, EARLIER),
)

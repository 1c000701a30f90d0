"""The verdict function against every row of the contract table in DESIGN.md."""

from __future__ import annotations

import pytest

from mailvet.engine.facts import (
    DnsFacts,
    DnsOutcome,
    Facts,
    ListFacts,
    MxHost,
    SmtpFacts,
    SmtpOutcome,
    SyntaxFacts,
)
from mailvet.engine.scoring import SCORES, decide
from mailvet.verdict import Reason, Result

GOOD = SyntaxFacts(
    ok=True, email="jane@example.com", local="jane", domain="example.com",
    ascii_domain="example.com",
)
MX = (MxHost(10, "mx1.example.com", ("192.0.2.1",)), MxHost(20, "mx2.example.com"))
DNS_OK = DnsFacts(DnsOutcome.OK, MX)


def facts(
    *,
    syntax: SyntaxFacts = GOOD,
    lists: ListFacts | None = None,
    dns: DnsFacts | None = DNS_OK,
    smtp: SmtpFacts | None = None,
    deadline_hit: bool = False,
    greylisted: bool = False,
) -> Facts:
    return Facts(
        syntax=syntax,
        lists=lists or ListFacts(),
        dns=dns,
        smtp=smtp,
        deadline_hit=deadline_hit,
        greylisted=greylisted,
    )


def smtp(outcome: SmtpOutcome, **kw: object) -> SmtpFacts:
    return SmtpFacts(outcome=outcome, mx_host="mx1.example.com", **kw)  # type: ignore[arg-type]


ROWS = [
    # (name, facts, result, reason)
    ("accepted", facts(smtp=smtp(SmtpOutcome.ACCEPTED, catch_all=False)),
     Result.DELIVERABLE, Reason.ACCEPTED_EMAIL),
    ("bad syntax", Facts(syntax=SyntaxFacts(ok=False, email="NULL", error="no @")),
     Result.UNDELIVERABLE, Reason.INVALID_FORMAT),
    ("nxdomain", facts(dns=DnsFacts(DnsOutcome.NXDOMAIN)),
     Result.UNDELIVERABLE, Reason.INVALID_DOMAIN),
    ("null mx", facts(dns=DnsFacts(DnsOutcome.NULL_MX)),
     Result.UNDELIVERABLE, Reason.INVALID_DOMAIN),
    ("no mail host", facts(dns=DnsFacts(DnsOutcome.NO_MAIL_HOST)),
     Result.UNDELIVERABLE, Reason.INVALID_DOMAIN),
    ("user unknown", facts(smtp=smtp(SmtpOutcome.USER_UNKNOWN, code=550, enhanced="5.1.1")),
     Result.UNDELIVERABLE, Reason.REJECTED_EMAIL),
    ("disabled", facts(smtp=smtp(SmtpOutcome.DISABLED, code=550, enhanced="5.2.1")),
     Result.UNDELIVERABLE, Reason.REJECTED_EMAIL),
    ("catch-all", facts(smtp=smtp(SmtpOutcome.ACCEPTED, catch_all=True)),
     Result.RISKY, Reason.CATCH_ALL),
    ("disposable", facts(lists=ListFacts(is_disposable=True),
                         smtp=smtp(SmtpOutcome.ACCEPTED, catch_all=False)),
     Result.RISKY, Reason.DISPOSABLE),
    ("mailbox full", facts(smtp=smtp(SmtpOutcome.MAILBOX_FULL, code=452, enhanced="4.2.2")),
     Result.RISKY, Reason.MAILBOX_FULL),
    ("no connect", facts(smtp=smtp(SmtpOutcome.NO_CONNECT)),
     Result.UNKNOWN, Reason.NO_CONNECT),
    ("smtp timeout", facts(smtp=smtp(SmtpOutcome.TIMEOUT)), Result.UNKNOWN, Reason.TIMEOUT),
    ("dns timeout", facts(dns=DnsFacts(DnsOutcome.TIMEOUT)), Result.UNKNOWN, Reason.TIMEOUT),
    ("deadline before smtp", facts(deadline_hit=True), Result.UNKNOWN, Reason.TIMEOUT),
    ("greylisted", facts(smtp=smtp(SmtpOutcome.TEMPORARY, code=450)),
     Result.UNKNOWN, Reason.UNAVAILABLE_SMTP),
    ("greylisted past its retries",
     facts(smtp=smtp(SmtpOutcome.TEMPORARY, code=450, enhanced="4.2.0"), greylisted=True),
     Result.UNKNOWN, Reason.GREYLISTED),
    ("greylisted flag needs a temporary reply",
     facts(smtp=smtp(SmtpOutcome.ACCEPTED, catch_all=False), greylisted=True),
     Result.DELIVERABLE, Reason.ACCEPTED_EMAIL),
    ("our ip blocked", facts(smtp=smtp(SmtpOutcome.BLOCKED, code=554, enhanced="5.7.1")),
     Result.UNKNOWN, Reason.UNAVAILABLE_SMTP),
    ("nonsense", facts(smtp=smtp(SmtpOutcome.INVALID_SMTP)), Result.UNKNOWN, Reason.INVALID_SMTP),
    ("servfail", facts(dns=DnsFacts(DnsOutcome.ERROR)), Result.UNKNOWN, Reason.DNS_ERROR),
    ("private mx", facts(smtp=smtp(SmtpOutcome.PRIVATE_MX)), Result.UNKNOWN, Reason.PRIVATE_MX),
    ("unreliable provider", facts(smtp=smtp(SmtpOutcome.ACCEPTED, unreliable_accept=True)),
     Result.UNKNOWN, Reason.UNVERIFIABLE),
    ("denied domain", facts(lists=ListFacts(denied=True)), Result.UNDELIVERABLE, Reason.DENIED),
    ("blocklisted domain", facts(dns=DnsFacts(DnsOutcome.OK, MX, blocklisted=True),
                                 smtp=smtp(SmtpOutcome.ACCEPTED, catch_all=False)),
     Result.RISKY, Reason.BLOCKED_DOMAIN),
    ("offline", Facts(syntax=GOOD, lists=ListFacts(), offline=True),
     Result.UNKNOWN, Reason.NOT_CHECKED),
]


@pytest.mark.parametrize(("name", "f", "result", "reason"), ROWS, ids=[r[0] for r in ROWS])
def test_contract_rows(name: str, f: Facts, result: Result, reason: Reason) -> None:
    v = decide(f)
    assert (v.result, v.reason) == (result, reason)


def test_scores_follow_the_contract() -> None:
    by_name = {name: decide(f) for name, f, _, _ in ROWS}
    assert by_name["accepted"].score == 100
    assert by_name["bad syntax"].score == 0
    assert by_name["nxdomain"].score == 0
    assert by_name["catch-all"].score == 80
    assert by_name["no connect"].score == 40
    assert by_name["smtp timeout"].score == 60  # the domain looks sound
    assert by_name["dns timeout"].score < 60  # it does not
    assert by_name["user unknown"].score <= 10
    assert by_name["disposable"].score <= 20
    assert 30 <= by_name["mailbox full"].score <= 70
    assert 30 <= by_name["greylisted"].score <= 70
    assert 30 <= by_name["nonsense"].score <= 70
    assert all(0 <= s <= 100 for s in SCORES.values())


def test_role_account_scores_lower_but_is_deliverable() -> None:
    accepted = smtp(SmtpOutcome.ACCEPTED, catch_all=False)
    v = decide(facts(lists=ListFacts(is_role=True), smtp=accepted))
    assert v.result is Result.DELIVERABLE
    assert v.score < 100
    assert v.isv_nogeneric is False


def test_flags_for_deliverable() -> None:
    accepted = smtp(SmtpOutcome.ACCEPTED, catch_all=False)
    v = decide(facts(lists=ListFacts(is_free=True), smtp=accepted))
    assert v.isv_format and v.isv_domain and v.isv_mx and v.isv_nocatchall and v.isv_nogeneric
    assert v.isv_noblock is None  # no block list configured: the check did not run
    assert v.is_free is True and v.is_disposable is False
    assert v.mx_record == "mx1.example.com"
    assert (v.username, v.domain, v.email) == ("jane", "example.com", "jane@example.com")


def test_flags_are_null_where_checks_did_not_conclude() -> None:
    v = decide(facts(dns=DnsFacts(DnsOutcome.TIMEOUT)))
    assert v.isv_domain is None and v.isv_mx is None and v.isv_nocatchall is None
    bad = decide(Facts(syntax=SyntaxFacts(ok=False, email="x")))
    assert bad.isv_format is False
    assert bad.isv_domain is None and bad.is_free is None and bad.isv_nogeneric is None


def test_catch_all_unknown_is_deliverable_without_the_flag() -> None:
    v = decide(facts(smtp=smtp(SmtpOutcome.ACCEPTED)))
    assert v.result is Result.DELIVERABLE and v.isv_nocatchall is None
    assert v.score < 100


def test_null_mx_domain_exists_but_takes_no_mail() -> None:
    v = decide(facts(dns=DnsFacts(DnsOutcome.NULL_MX)))
    assert v.isv_domain is True and v.isv_mx is False


def test_rejection_beats_disposable_and_allowlist_beats_disposable() -> None:
    v = decide(facts(lists=ListFacts(is_disposable=True), smtp=smtp(SmtpOutcome.USER_UNKNOWN)))
    assert v.reason is Reason.REJECTED_EMAIL
    v = decide(facts(lists=ListFacts(is_disposable=True, allowed=True),
                     smtp=smtp(SmtpOutcome.ACCEPTED, catch_all=False)))
    assert v.result is Result.DELIVERABLE and v.is_disposable is True


def test_nothing_but_an_explicit_mailbox_5xx_is_undeliverable() -> None:
    for outcome in SmtpOutcome:
        v = decide(facts(smtp=smtp(outcome)))
        if v.result is Result.UNDELIVERABLE:
            assert outcome in (SmtpOutcome.USER_UNKNOWN, SmtpOutcome.DISABLED)


# Microsoft 365 / Yahoo may answer 250 to any RCPT. The random RCPT of the same check decides:
# refused as unknown (catch_all False) proves the acceptance; accepted too (True) or not
# concluded (None: timeout, deadline, nothing cached) leaves the address unverifiable.
@pytest.mark.parametrize(
    ("catch_all", "result", "reason", "score"),
    [
        (False, Result.DELIVERABLE, Reason.ACCEPTED_EMAIL, 100),
        (True, Result.UNKNOWN, Reason.UNVERIFIABLE, SCORES["unverifiable"]),
        (None, Result.UNKNOWN, Reason.UNVERIFIABLE, SCORES["unverifiable"]),
    ],
)
def test_unreliable_accept_is_proof_when_the_random_address_is_refused(
    catch_all: bool | None, result: Result, reason: Reason, score: int
) -> None:
    accepted = smtp(SmtpOutcome.ACCEPTED, catch_all=catch_all, unreliable_accept=True)
    v = decide(facts(smtp=accepted))
    assert (v.result, v.reason, v.score) == (result, reason, score)
    assert v.isv_nocatchall is (None if catch_all is None else not catch_all)


def test_unreliable_accept_of_a_role_account_scores_as_a_role_account() -> None:
    accepted = smtp(SmtpOutcome.ACCEPTED, catch_all=False, unreliable_accept=True)
    v = decide(facts(lists=ListFacts(is_role=True), smtp=accepted))
    assert (v.result, v.score) == (Result.DELIVERABLE, SCORES["deliverable_role"])


def test_ordinary_server_accepting_the_random_address_too_is_catch_all() -> None:
    v = decide(facts(smtp=smtp(SmtpOutcome.ACCEPTED, catch_all=True, unreliable_accept=False)))
    assert (v.result, v.reason) == (Result.RISKY, Reason.CATCH_ALL)

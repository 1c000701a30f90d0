"""The whole pipeline against the simulated internet: every row of the verdict table."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailvet.engine.dns import DnsStage
from mailvet.engine.facts import DnsOutcome, SmtpOutcome
from mailvet.engine.pipeline import Checked, Engine
from mailvet.testing import smtp as sim
from mailvet.testing.internet import SimInternet
from mailvet.verdict import Reason, Result


@pytest.fixture
async def net() -> AsyncIterator[SimInternet]:
    async with SimInternet() as world:
        yield world


@pytest.fixture
async def engine(net: SimInternet) -> AsyncIterator[Engine]:
    eng = Engine(net.settings())
    yield eng
    await eng.close()


async def verify_with(net: SimInternet, email: str, **overrides: Any) -> Checked:
    """One verification by a fresh engine with these settings, closed afterwards."""
    eng = Engine(net.settings(**overrides))
    try:
        return await eng.verify(email)
    finally:
        await eng.close()


ROWS = [
    ("alice@deliverable.test", Result.DELIVERABLE, Reason.ACCEPTED_EMAIL),
    ("Alice@Deliverable.TEST", Result.DELIVERABLE, Reason.ACCEPTED_EMAIL),
    ("alice@postfix.test", Result.DELIVERABLE, Reason.ACCEPTED_EMAIL),
    ("alice@nopipelining.test", Result.DELIVERABLE, Reason.ACCEPTED_EMAIL),
    ("alice@noehlo.test", Result.DELIVERABLE, Reason.ACCEPTED_EMAIL),
    ("alice@starttls.test", Result.DELIVERABLE, Reason.ACCEPTED_EMAIL),
    ("alice@slowsmtp.test", Result.DELIVERABLE, Reason.ACCEPTED_EMAIL),
    ("NULL", Result.UNDELIVERABLE, Reason.INVALID_FORMAT),
    ("not an address", Result.UNDELIVERABLE, Reason.INVALID_FORMAT),
    ("alice@nxdomain.test", Result.UNDELIVERABLE, Reason.INVALID_DOMAIN),
    ("alice@nullmx.test", Result.UNDELIVERABLE, Reason.INVALID_DOMAIN),
    ("alice@nomail.test", Result.UNDELIVERABLE, Reason.INVALID_DOMAIN),
    ("zed@deliverable.test", Result.UNDELIVERABLE, Reason.REJECTED_EMAIL),
    ("zed@postfix.test", Result.UNDELIVERABLE, Reason.REJECTED_EMAIL),
    ("zed@exim.test", Result.UNDELIVERABLE, Reason.REJECTED_EMAIL),
    ("zed@microsoft.test", Result.UNDELIVERABLE, Reason.REJECTED_EMAIL),
    ("alice@disabled.test", Result.UNDELIVERABLE, Reason.REJECTED_EMAIL),
    ("anyone@catchall.test", Result.RISKY, Reason.CATCH_ALL),
    ("anyone@mailinator.com", Result.RISKY, Reason.DISPOSABLE),
    ("alice@full.test", Result.RISKY, Reason.MAILBOX_FULL),
    ("alice@fullperm.test", Result.RISKY, Reason.MAILBOX_FULL),
    ("alice@deadmx.test", Result.UNKNOWN, Reason.NO_CONNECT),
    ("alice@greylist.test", Result.UNKNOWN, Reason.UNAVAILABLE_SMTP),
    ("alice@blocked.test", Result.UNKNOWN, Reason.UNAVAILABLE_SMTP),
    ("alice@blockedmail.test", Result.UNKNOWN, Reason.UNAVAILABLE_SMTP),
    ("alice@banner421.test", Result.UNKNOWN, Reason.UNAVAILABLE_SMTP),
    ("alice@garbage.test", Result.UNKNOWN, Reason.INVALID_SMTP),
    ("alice@servfail.test", Result.UNKNOWN, Reason.DNS_ERROR),
    ("anyone@yahoo.test", Result.UNKNOWN, Reason.UNVERIFIABLE),
]


@pytest.mark.parametrize(("email", "result", "reason"), ROWS, ids=[r[0] for r in ROWS])
async def test_verdict_rows(engine: Engine, email: str, result: Result, reason: Reason) -> None:
    v = (await engine.verify(email)).verdict
    assert (v.result, v.reason) == (result, reason)


async def test_deliverable_fields_are_complete(engine: Engine) -> None:
    v = (await engine.verify("alice@deliverable.test")).verdict
    assert v.mx_record == "mx.deliverable.test"
    assert (v.isv_format, v.isv_domain, v.isv_mx, v.isv_nocatchall) == (True, True, True, True)
    assert v.score == 100


async def test_implicit_mx_is_probed(engine: Engine) -> None:
    checked = await engine.verify("alice@implicit.test")
    assert checked.facts.dns is not None and checked.facts.dns.implicit_mx
    assert checked.verdict.result is Result.DELIVERABLE


async def test_provider_rules_apply(engine: Engine) -> None:
    v = (await engine.verify("anyone@yahoo.test")).verdict
    assert v.provider == "yahoo"


@pytest.mark.parametrize("domain", ["tarpit.test", "endless.test", "hugeline.test",
                                    "closebanner.test", "closemail.test"])
async def test_hostile_servers_end_unknown_by_the_deadline(net: SimInternet, domain: str) -> None:
    checked = await verify_with(net, f"alice@{domain}", deadline=4.0, smtp_command_timeout=1.0)
    v = checked.verdict
    assert v.result is Result.UNKNOWN
    assert v.isv_mx is True and v.mx_record == f"mx.{domain}"  # DNS facts are kept
    assert not net.smtp.received("DATA")


async def test_slow_dns_ends_by_the_deadline_as_timeout(net: SimInternet) -> None:
    checked = await verify_with(net, "alice@slowdns.test", deadline=0.8, dns_timeout=5.0)
    assert checked.facts.deadline_hit
    assert (checked.verdict.result, checked.verdict.reason) == (Result.UNKNOWN, Reason.TIMEOUT)


async def test_deadline_mid_smtp_keeps_dns_facts(net: SimInternet) -> None:
    # the tarpit needs ~50 s for its banner; 3 s leaves DNS room on a loaded machine
    checked = await verify_with(net, "alice@tarpit.test", deadline=3.0, smtp_command_timeout=30.0)
    assert checked.facts.deadline_hit
    v = checked.verdict
    assert (v.result, v.reason, v.score) == (Result.UNKNOWN, Reason.TIMEOUT, 60)
    assert v.isv_domain is True and v.isv_mx is True


async def test_loopback_mx_refused_by_default_and_probed_when_allowed(net: SimInternet) -> None:
    refused = await verify_with(net, "alice@private.test", allow_private_mx=False)
    probed = await verify_with(net, "alice@private.test", allow_private_mx=True)
    assert refused.facts.smtp is not None
    assert refused.facts.smtp.outcome is SmtpOutcome.PRIVATE_MX
    assert (refused.verdict.result, refused.verdict.reason) == (Result.UNKNOWN, Reason.PRIVATE_MX)
    assert probed.verdict.result is Result.DELIVERABLE


async def test_transcript_carries_the_evidence(engine: Engine) -> None:
    checked = await engine.verify("alice@deliverable.test")
    kinds = {e.kind for e in checked.facts.transcript}
    assert {"dns", "send", "recv"} <= kinds
    sent = " ".join(e.text for e in checked.facts.transcript if e.kind == "send")
    assert "RCPT TO:<alice@deliverable.test>" in sent and "DATA" not in sent


async def test_offline_does_no_io(net: SimInternet, engine: Engine) -> None:
    before = net.dns.queries
    checked = await engine.verify("alice@deliverable.test", offline=True)
    assert net.dns.queries == before
    assert checked.verdict.reason is Reason.NOT_CHECKED
    assert checked.facts.dns is None and checked.facts.dns is None


async def test_dns_outcomes_are_recorded(engine: Engine) -> None:
    checked = await engine.verify("alice@nullmx.test")
    assert checked.facts.dns is not None and checked.facts.dns.outcome is DnsOutcome.NULL_MX


async def test_address_literal_probes_the_named_host(net: SimInternet) -> None:
    literal = {"allow_address_literal": True}
    refused = await verify_with(  # 127.0.0.10 is deliverable.test's MX
        net, "alice@[127.0.0.10]", allow_private_mx=False, **literal
    )
    probed = await verify_with(net, "alice@[127.0.0.10]", **literal)
    unknown = await verify_with(net, "zed@[127.0.0.10]", **literal)
    assert refused.verdict.reason is Reason.PRIVATE_MX  # same policy as any MX
    assert (probed.verdict.result, probed.verdict.mx_record) == (Result.DELIVERABLE, "[127.0.0.10]")
    assert unknown.verdict.reason is Reason.REJECTED_EMAIL
    assert not any(q.name.startswith("[") for q in net.dns.log)  # no DNS for a literal


async def test_deadline_during_the_catch_all_check_keeps_the_real_answer() -> None:
    # Exchange-like: the real RCPT is answered slowly, the random one never in time
    slow_catch_all = sim.second_rcpt_fails(
        "stall", then=sim.mailboxes("alice", style="microsoft"), latency_ms=200
    )
    async with SimInternet({"exch.test": slow_catch_all}, {}) as world:
        checked = await verify_with(
            world, "alice@exch.test", deadline=2.0, smtp_command_timeout=10.0
        )
    assert checked.facts.deadline_hit
    v = checked.verdict
    assert (v.result, v.reason) == (Result.DELIVERABLE, Reason.ACCEPTED_EMAIL)
    assert v.isv_nocatchall is None  # the catch-all check did not conclude


# --- providers that accept any RCPT (Microsoft 365): the random RCPT decides -------------


def _hosted_by(world: SimInternet, domain: str, mx_name: str) -> None:
    """Point ``domain``'s MX at ``mx_name`` (a provider's host name, here on loopback),
    served by the site's own simulated MX."""
    records = world.zone.lookup(f"mx.{domain}")
    assert records is not None
    world.zone.set(domain, "MX", [(0, mx_name)])
    world.zone.set(mx_name, "A", records["A"])


M365_SITES = {
    "m365.test": sim.microsoft365("alice", "bob"),  # Directory-Based Edge Blocking on
    "m365open.test": sim.microsoft365(dbeb=False),  # accepts any RCPT
    "m365stall.test": sim.second_rcpt_fails("stall", then=sim.microsoft365("alice")),
}


@pytest.fixture
async def m365() -> AsyncIterator[SimInternet]:
    async with SimInternet(M365_SITES, {}) as world:
        for domain in M365_SITES:
            _hosted_by(world, domain, f"{domain.replace('.', '-')}.mail.protection.outlook.com")
        yield world


async def test_microsoft365_acceptance_is_proof_when_the_random_address_is_refused(
    m365: SimInternet,
) -> None:
    eng = Engine(m365.settings())
    try:
        first = await eng.verify("alice@m365.test")
        second = await eng.verify("bob@m365.test")  # catch-all status from the cache
        refused = await eng.verify("zed@m365.test")
    finally:
        await eng.close()
    for checked in (first, second):
        v = checked.verdict
        assert (v.result, v.reason, v.provider) == (
            Result.DELIVERABLE, Reason.ACCEPTED_EMAIL, "microsoft365"
        )  # fmt: skip
        assert v.isv_nocatchall is True and v.score == 100
        assert checked.facts.smtp is not None and checked.facts.smtp.unreliable_accept
    recv = [e.text for e in first.facts.transcript if e.kind == "recv"]
    assert any("5.4.1" in t and "AS(201806281)" in t for t in recv)  # the random RCPT
    assert [s.count("RCPT") for s in m365.smtp.sessions] == [2, 1, 1]
    assert (refused.verdict.result, refused.verdict.reason) == (
        Result.UNDELIVERABLE, Reason.REJECTED_EMAIL
    )  # fmt: skip


async def test_microsoft365_accepting_the_random_address_too_is_unverifiable(
    m365: SimInternet,
) -> None:
    eng = Engine(m365.settings())
    try:
        verdicts = [(await eng.verify("anyone@m365open.test")).verdict for _ in range(2)]
    finally:
        await eng.close()
    for v in verdicts:  # fresh, then with the catch-all status cached
        assert (v.result, v.reason, v.provider) == (
            Result.UNKNOWN, Reason.UNVERIFIABLE, "microsoft365"
        )  # fmt: skip
        assert v.isv_nocatchall is False


async def test_microsoft365_with_an_unconcluded_catch_all_check_is_unverifiable(
    m365: SimInternet,
) -> None:
    # the random RCPT is never answered: the command timeout (or the deadline) ends it
    checked = await verify_with(
        m365, "alice@m365stall.test", smtp_command_timeout=2.0, deadline=4.0
    )
    v = checked.verdict
    assert (v.result, v.reason) == (Result.UNKNOWN, Reason.UNVERIFIABLE)
    assert v.isv_nocatchall is None
    assert m365.smtp.sessions[0].count("RCPT") == 2


@pytest.mark.parametrize("n", [1, 3, 4, 6, 7])
async def test_mx_hosts_that_do_not_exist_are_invalid_domain_however_many(n: int) -> None:
    # before: up to two batches of smtp_max_mx_hosts ghosts gave invalid_domain, more
    # gave no_connect
    ghosts = {"ghosts.test": {"MX": [(10, f"ghost{i}.nowhere.test") for i in range(n)]}}
    async with SimInternet({}, ghosts) as world:
        checked = await verify_with(world, "alice@ghosts.test", smtp_max_mx_hosts=2)
    v = checked.verdict
    assert (v.result, v.reason) == (Result.UNDELIVERABLE, Reason.INVALID_DOMAIN)
    assert (v.isv_domain, v.isv_mx) == (True, False)
    assert checked.facts.smtp is None


async def test_mail_hosted_by_google_is_provider_gmail() -> None:
    # Google Workspace: the domain's MX is aspmx.l.google.com; Mails.so answers "gmail"
    async with SimInternet({"workspace.test": sim.mailboxes("alice", style="gmail")}, {}) as world:
        _hosted_by(world, "workspace.test", "aspmx.l.google.com")
        checked = await verify_with(world, "alice@workspace.test")
    v = checked.verdict
    assert (v.result, v.provider, v.mx_record) == (
        Result.DELIVERABLE, "gmail", "aspmx.l.google.com"
    )  # fmt: skip


async def test_provider_is_the_same_whatever_order_equal_mx_hosts_come_in() -> None:
    # RFC 5321 5.1: the DNS stage puts MX hosts of equal preference in random order. A
    # domain moving between two providers lists one host of each at the same preference;
    # its provider (and with it the "unreliable accept" rule) must not change from one
    # request to the next with that order: the host first by name decides, as before.
    google, m365 = "aspmx.l.google.com", "mixed-test.mail.protection.outlook.com"
    async with SimInternet({"mixed.test": sim.mailboxes("alice")}, {}) as world:
        _hosted_by(world, "mixed.test", google)
        world.zone.set("mixed.test", "MX", [(10, m365), (10, google)])
        records = world.zone.lookup(google)
        assert records is not None
        world.zone.set(m365, "A", records["A"])
        seen: set[tuple[str | None, str | None]] = set()
        for seed in range(12):
            settings = world.settings()
            eng = Engine(settings, dns=DnsStage(settings, rng=random.Random(seed)))
            try:
                v = (await eng.verify("alice@mixed.test")).verdict
            finally:
                await eng.close()
            seen.add((v.mx_record, v.provider))
    assert {mx for mx, _ in seen} == {google, m365}  # both orders were tried
    assert {provider for _, provider in seen} == {"gmail"}


# --- special-use names and long local parts (issue 7, section 4) ---


@pytest.mark.parametrize(
    "email", ["alice@deliverable.test", "alice@x.invalid", "alice@printer.local", "a@b.home.arpa"]
)
async def test_special_use_names_are_invalid_domain_with_no_dns_query(
    net: SimInternet, email: str
) -> None:
    net.zone.set("printer.local", "MX", [(10, "mx.deliverable.test")])  # would be found
    net.zone.set("x.invalid", "MX", [(10, "mx.deliverable.test")])
    before = net.dns.queries
    checked = await verify_with(net, email, allowed_special_domains=[])
    assert net.dns.queries == before, "no DNS query for a special-use name"
    assert not net.smtp.sessions
    v = checked.verdict
    assert (v.result, v.reason, v.score) == (Result.UNDELIVERABLE, Reason.INVALID_DOMAIN, 0)
    assert (v.isv_format, v.isv_domain, v.isv_mx) == (True, False, False)
    assert any("special-use name" in e.text for e in checked.facts.transcript)


async def test_allowed_special_names_are_probed(net: SimInternet) -> None:
    net.zone.set("printer.local", "MX", [(10, "mx.deliverable.test")])
    checked = await verify_with(net, "alice@printer.local", allowed_special_domains=["local"])
    assert checked.verdict.reason is Reason.ACCEPTED_EMAIL
    assert net.dns.count("printer.local", "MX") == 1
    refused = await verify_with(net, "alice@deliverable.test", allowed_special_domains=["local"])
    assert refused.verdict.reason is Reason.INVALID_DOMAIN


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("a" * 65 + "@deliverable.test", Reason.REJECTED_EMAIL),  # the server says no
        ("x" * 70 + "@catchall.test", Reason.CATCH_ALL),  # the server takes it
    ],
)
async def test_a_local_part_over_64_octets_is_left_to_the_smtp_stage(
    net: SimInternet, email: str, reason: Reason
) -> None:
    checked = await verify_with(net, email)
    assert checked.verdict.reason is reason
    assert checked.facts.syntax.ok and checked.verdict.isv_format is True
    octets = len(email.partition("@")[0])
    notes = [e.text for e in checked.facts.transcript if e.kind == "note"]
    assert f"local part is {octets} octets, over RFC 5321's 64" in notes
    sent = " ".join(e.text for e in checked.facts.transcript if e.kind == "send")
    assert f"RCPT TO:<{email}>" in sent

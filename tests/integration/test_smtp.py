"""engine/smtp.py (SmtpStage) against the scripted SMTP servers of testing/smtp.py.

Every behaviour of the simulated internet, on loopback only. DnsFacts are built by
hand (MX hosts at 127.0.0.x); the engine reaches them through Settings alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from mailvet.engine.facts import DnsFacts, DnsOutcome, MxHost, SmtpFacts, SmtpOutcome
from mailvet.engine.providers import Provider
from mailvet.engine.smtp import SmtpStage
from mailvet.engine.transcript import Transcript
from mailvet.settings import Settings
from mailvet.testing.smtp import (
    USER_UNKNOWN_REPLIES,
    Behaviour,
    SmtpSim,
    accept,
    banner_421,
    catch_all,
    close_after_banner,
    close_after_mail,
    disabled,
    endless_multiline,
    garbage,
    greylist,
    huge_line,
    mailbox_full,
    mailboxes,
    microsoft365,
    policy_block,
    second_rcpt_fails,
    starttls_broken,
    starttls_refused,
    starttls_required,
    tarpit,
)

UNDELIVERABLE = {SmtpOutcome.USER_UNKNOWN, SmtpOutcome.DISABLED}
# Timeouts. Nothing healthy may depend on a short one: a loaded 2-core CI machine (worse
# under tracemalloc) can take well over a second to answer on loopback. GENEROUS is for
# every timeout a test does not exercise; SHORT only where a test needs a timeout to fire
# (a tarpit, a stall), with margin for the healthy replies before it.
GENEROUS = 10.0
SHORT = 3.0


def mx(*ips: str) -> DnsFacts:
    """One MX host per address, in the order given (preference 10, 20, ...)."""
    hosts = tuple(MxHost(10 * (i + 1), f"mx{i + 1}.sim.test", (ip,)) for i, ip in enumerate(ips))
    return DnsFacts(DnsOutcome.OK, hosts)


def settings(sim: SmtpSim, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "smtp_port": sim.port,
        "allow_private_mx": True,
        "smtp_connect_timeout": 2.0,
        "smtp_command_timeout": 2.0,
    }
    base.update(overrides)
    return Settings(**base)


@dataclass
class Run:
    facts: SmtpFacts
    transcript: Transcript
    stage: SmtpStage

    def notes(self) -> list[str]:
        return [e.text for e in self.transcript.entries if e.kind == "note"]

    def round_trips(self) -> int:
        (n,) = [int(t.split(": ")[1]) for t in self.notes() if t.startswith("round trips")]
        return n


async def probe(
    sim: SmtpSim,
    email: str = "alice@corp.test",
    dns: DnsFacts | None = None,
    stage: SmtpStage | None = None,
    **overrides: Any,
) -> Run:
    stage = stage or SmtpStage(settings(sim, **overrides))
    transcript = Transcript()
    facts = await stage.probe(email, email.rsplit("@", 1)[1], dns or mx("127.0.0.1"), transcript)
    return Run(facts, transcript, stage)


def assert_polite(sim: SmtpSim) -> None:
    assert not sim.received("DATA")
    for session in sim.sessions:
        assert session.count("RCPT") <= 2


# --- accepted / refused ------------------------------------------------------------------


async def test_accept_is_catch_all_and_never_sends_data() -> None:
    async with SmtpSim(accept()) as sim:
        run = await probe(sim)
    f = run.facts
    assert f.outcome is SmtpOutcome.ACCEPTED
    assert (f.code, f.enhanced, f.mx_host) == (250, "2.1.5", "mx1.sim.test")
    assert f.catch_all is True
    assert not f.tls
    (session,) = sim.sessions
    assert session.verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "QUIT"]
    assert session.commands[2] == "RCPT TO:<alice@corp.test>"
    assert session.commands[3].endswith("@corp.test>")
    assert_polite(sim)


async def test_known_mailbox_accepted_not_catch_all() -> None:
    async with SmtpSim(mailboxes("alice")) as sim:
        run = await probe(sim)
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert run.facts.catch_all is False
    assert_polite(sim)


@pytest.mark.parametrize("style", sorted(USER_UNKNOWN_REPLIES))
async def test_user_unknown_real_texts(style: str) -> None:
    async with SmtpSim(mailboxes("alice", style=style)) as sim:
        run = await probe(sim, "nobody@corp.test")
    f = run.facts
    assert f.outcome is SmtpOutcome.USER_UNKNOWN
    assert f.code is not None and 500 <= f.code <= 599
    assert f.catch_all is False
    assert f.message
    assert_polite(sim)


async def test_disabled() -> None:
    async with SmtpSim(disabled()) as sim:
        run = await probe(sim)
    assert run.facts.outcome is SmtpOutcome.DISABLED
    assert run.facts.enhanced == "5.2.1"


@pytest.mark.parametrize(("permanent", "code"), [(False, 452), (True, 552)])
async def test_mailbox_full(permanent: bool, code: int) -> None:
    async with SmtpSim(mailbox_full(permanent=permanent)) as sim:
        run = await probe(sim)
    assert run.facts.outcome is SmtpOutcome.MAILBOX_FULL
    assert run.facts.code == code


async def test_greylisting_is_temporary() -> None:
    async with SmtpSim(greylist(delay=300, then=mailboxes("alice"))) as sim:
        run = await probe(sim)
    assert run.facts.outcome is SmtpOutcome.TEMPORARY
    assert run.facts.code == 450
    assert run.facts.catch_all is None


async def test_greylisting_passes_on_retry() -> None:
    async with SmtpSim(greylist(then=mailboxes("alice"))) as sim:
        stage = SmtpStage(settings(sim))
        first = await probe(sim, stage=stage)
        second = await probe(sim, stage=stage)
    assert first.facts.outcome is SmtpOutcome.TEMPORARY
    assert second.facts.outcome is SmtpOutcome.ACCEPTED


@pytest.mark.parametrize("at", ["rcpt", "mail", "banner"])
async def test_policy_block_of_our_host(at: str) -> None:
    async with SmtpSim(policy_block(at=at)) as sim:  # type: ignore[arg-type]
        run = await probe(sim)
    assert run.facts.outcome is SmtpOutcome.BLOCKED
    assert run.facts.code == 554
    assert_polite(sim)


async def test_policy_block_other_styles() -> None:
    sim = SmtpSim(
        accept(),
        by_domain={
            "o.test": policy_block(style="outlook"),
            "p.test": policy_block(style="proofpoint"),
        },
    )
    async with sim:
        stage = SmtpStage(settings(sim))
        o = await probe(sim, "a@o.test", stage=stage)
        p = await probe(sim, "a@p.test", stage=stage)
    assert o.facts.outcome is p.facts.outcome is SmtpOutcome.BLOCKED


# --- session shape --------------------------------------------------------------------------


async def test_round_trips_with_and_without_pipelining() -> None:
    sim = SmtpSim(mailboxes("alice"), by_ip={"127.0.0.2": mailboxes("alice", pipelining=False)})
    async with sim:
        piped = await probe(sim)
        plain = await probe(sim, dns=mx("127.0.0.2"))
        plain_refused = await probe(sim, "bob@corp.test", dns=mx("127.0.0.2"))
    assert piped.facts.outcome is plain.facts.outcome is SmtpOutcome.ACCEPTED
    assert piped.facts.catch_all is plain.facts.catch_all is False
    assert piped.round_trips() == 3  # banner, EHLO, MAIL+RCPT+RCPT+QUIT
    assert plain.round_trips() == 6  # banner, EHLO, MAIL, RCPT, RCPT, QUIT
    assert plain_refused.facts.outcome is SmtpOutcome.USER_UNKNOWN
    assert plain_refused.round_trips() == 5  # no catch-all RCPT after a refusal
    assert [s.count("RCPT") for s in sim.sessions] == [2, 2, 1]
    assert all(s.verbs()[-1] == "QUIT" for s in sim.sessions)


async def test_catch_all_cache_second_address_one_rcpt() -> None:
    async with SmtpSim(catch_all()) as sim:
        stage = SmtpStage(settings(sim))
        first = await probe(sim, "a@corp.test", stage=stage)
        second = await probe(sim, "b@corp.test", stage=stage)
        other = await probe(sim, "a@other.test", stage=stage)
    assert first.facts.catch_all is second.facts.catch_all is other.facts.catch_all is True
    assert [s.count("RCPT") for s in sim.sessions] == [2, 1, 2]
    assert stage.catch_all_cached("CORP.test") is True
    await stage.close()
    assert stage.catch_all_cached("corp.test") is None


async def test_catch_all_cache_expires() -> None:
    async with SmtpSim(catch_all()) as sim:
        stage = SmtpStage(settings(sim, catch_all_cache_ttl=0.0))
        await probe(sim, "a@corp.test", stage=stage)
        await probe(sim, "b@corp.test", stage=stage)
    assert [s.count("RCPT") for s in sim.sessions] == [2, 2]


async def test_random_address_temporary_means_catch_all_unknown() -> None:
    sim = SmtpSim(greylist(), by_address={"alice@corp.test": accept()})
    async with sim:
        run = await probe(sim)
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert run.facts.catch_all is None
    assert run.stage.catch_all_cached("corp.test") is None


async def test_ehlo_unsupported_falls_back_to_helo() -> None:
    async with SmtpSim(mailboxes("alice", ehlo_supported=False)) as sim:
        run = await probe(sim)
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert sim.sessions[0].verbs()[:3] == ["EHLO", "HELO", "MAIL"]


async def test_starttls_required_by_server() -> None:
    async with SmtpSim(starttls_required(), by_ip={"127.0.0.2": starttls_required()}) as sim:
        run = await probe(sim)
        never = await probe(sim, dns=mx("127.0.0.2"), smtp_starttls="never")
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert run.facts.tls is True
    assert sim.sessions[0].tls
    assert sim.sessions[0].verbs()[:4] == ["EHLO", "STARTTLS", "EHLO", "MAIL"]
    assert never.facts.outcome is SmtpOutcome.BLOCKED  # 530 5.7.0, not about the mailbox
    assert never.facts.code == 530


async def test_starttls_opportunistic_and_required_by_us() -> None:
    sim = SmtpSim(accept(starttls="offered"), by_ip={"127.0.0.2": accept()})
    async with sim:
        offered = await probe(sim)
        missing = await probe(sim, dns=mx("127.0.0.2"), smtp_starttls="required")
    assert offered.facts.tls is True
    assert offered.facts.outcome is SmtpOutcome.ACCEPTED
    assert missing.facts.outcome is SmtpOutcome.TEMPORARY
    assert "STARTTLS" in (missing.facts.message or "")
    assert sim.sessions[-1].count("MAIL") == 0


async def test_latency_is_tolerated() -> None:
    async with SmtpSim(mailboxes("alice", latency_ms=30)) as sim:
        run = await probe(sim)
    assert run.facts.outcome is SmtpOutcome.ACCEPTED


async def test_smtputf8_parameter_when_needed() -> None:
    async with SmtpSim(accept(), by_ip={"127.0.0.2": accept(smtputf8=False)}) as sim:
        ok = await probe(sim, "jösé@corp.test")
        lacking = await probe(sim, "jösé@corp.test", dns=mx("127.0.0.2"))
        ascii_ = await probe(sim, "jose@corp.test")
    assert ok.facts.outcome is SmtpOutcome.ACCEPTED
    assert sim.sessions[0].commands[1].endswith(" SMTPUTF8")
    assert lacking.facts.outcome is SmtpOutcome.TEMPORARY
    assert ascii_.facts.outcome is SmtpOutcome.ACCEPTED
    assert not sim.sessions[-1].commands[1].endswith("SMTPUTF8")


async def test_transcript_kinds_and_unreliable_accept() -> None:
    @dataclass(frozen=True)
    class Prov:
        name: str = "yahoo"
        unreliable_accept: bool = True

    async with SmtpSim(accept()) as sim:
        stage = SmtpStage(settings(sim))
        t = Transcript()
        facts = await stage.probe("a@corp.test", "corp.test", mx("127.0.0.1"), t, Prov())
    assert facts.unreliable_accept is True
    assert facts.outcome is SmtpOutcome.ACCEPTED
    kinds = {e.kind for e in t.entries}
    assert {"connect", "send", "recv", "note"} <= kinds
    assert all(e.host == "mx1.sim.test" for e in t.entries if e.kind in ("send", "recv"))


@pytest.mark.parametrize("pipelining", [True, False])
async def test_microsoft365_edge_blocking_refuses_the_random_address_cached_or_not(
    pipelining: bool,
) -> None:
    # Directory-Based Edge Blocking refuses the random RCPT as unknown: catch_all False is
    # the fact the verdict trusts the acceptance on; the cache carries it to the next check
    provider = Provider("microsoft365", True)
    async with SmtpSim(microsoft365("alice", "bob", pipelining=pipelining)) as sim:
        stage = SmtpStage(settings(sim))
        facts = [
            await stage.probe(f"{who}@corp.test", "corp.test", mx("127.0.0.1"), None, provider)
            for who in ("alice", "bob")
        ]
    for f in facts:
        assert (f.outcome, f.catch_all, f.unreliable_accept) == (SmtpOutcome.ACCEPTED, False, True)
    assert [s.count("RCPT") for s in sim.sessions] == [2, 1]
    assert sim.sessions[0].replies.count(550) == 1  # the random address, 550 5.4.1


# --- failover and refusal -------------------------------------------------------------------


async def test_failover_421_banner_to_next_host() -> None:
    sim = SmtpSim(mailboxes("alice"), by_ip={"127.0.0.2": banner_421()})
    async with sim:
        run = await probe(sim, dns=mx("127.0.0.2", "127.0.0.1"))
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert run.facts.mx_host == "mx2.sim.test"
    assert [s.local_ip for s in sim.sessions] == ["127.0.0.2", "127.0.0.1"]


async def test_failover_connection_refused_then_next() -> None:
    async with SmtpSim(mailboxes("alice")) as sim:
        # nothing listens on 127.0.0.9 at this port: connection refused
        run = await probe(sim, "bob@corp.test", dns=mx("127.0.0.9", "127.0.0.1"))
    assert run.facts.outcome is SmtpOutcome.USER_UNKNOWN
    assert run.facts.mx_host == "mx2.sim.test"


async def test_failover_across_addresses_of_one_host() -> None:
    dns = DnsFacts(DnsOutcome.OK, (MxHost(10, "mx.sim.test", ("127.0.0.9", "127.0.0.1")),))
    async with SmtpSim(accept()) as sim:
        run = await probe(sim, dns=dns)
    assert run.facts.outcome is SmtpOutcome.ACCEPTED


async def test_definitive_rcpt_answer_ends_probe() -> None:
    sim = SmtpSim(greylist(delay=300), by_ip={"127.0.0.2": accept()})
    async with sim:
        run = await probe(sim, dns=mx("127.0.0.1", "127.0.0.2"))
    assert run.facts.outcome is SmtpOutcome.TEMPORARY
    assert [s.local_ip for s in sim.sessions] == ["127.0.0.1"]  # backup MX never asked


async def test_nothing_reachable_is_no_connect() -> None:
    async with SmtpSim(accept()) as sim:
        run = await probe(sim, dns=mx("127.0.0.9", "127.0.0.10"))
    assert run.facts.outcome is SmtpOutcome.NO_CONNECT
    assert run.facts.message


async def test_max_mx_hosts() -> None:
    ips = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    sim = SmtpSim(accept(), by_ip={ip: banner_421() for ip in ips})
    async with sim:
        run = await probe(sim, dns=mx(*ips), smtp_max_mx_hosts=2)
    assert run.facts.outcome is SmtpOutcome.TEMPORARY
    assert run.facts.code == 421
    assert len(sim.sessions) == 2


async def test_hosts_are_tried_by_preference_keeping_the_dns_order_among_equals() -> None:
    # the DNS stage puts equal preferences in random order (RFC 5321 5.1); the SMTP stage
    # sorts by preference only, never by name: "z" before "a" here, as DNS gave them
    dns = DnsFacts(
        DnsOutcome.OK,
        (
            MxHost(10, "z.sim.test", ("127.0.0.2",)),
            MxHost(10, "a.sim.test", ("127.0.0.3",)),
            MxHost(5, "m.sim.test", ("127.0.0.4",)),
        ),
    )
    ips = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    sim = SmtpSim(accept(), by_ip={ip: banner_421() for ip in ips})
    async with sim:
        await probe(sim, dns=dns, smtp_max_mx_hosts=3)
    assert [s.local_ip for s in sim.sessions] == ["127.0.0.4", "127.0.0.2", "127.0.0.3"]


async def test_hosts_without_addresses_are_skipped() -> None:
    dns = DnsFacts(
        DnsOutcome.OK,
        (MxHost(5, "empty.sim.test"), MxHost(10, "mx1.sim.test", ("127.0.0.1",))),
    )
    async with SmtpSim(accept()) as sim:
        run = await probe(sim, dns=dns)
        nothing = await probe(sim, dns=DnsFacts(DnsOutcome.OK, (MxHost(5, "e.sim.test"),)))
        no_dns = await probe(sim, dns=DnsFacts(DnsOutcome.TIMEOUT))
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert nothing.facts.outcome is SmtpOutcome.NO_CONNECT
    assert no_dns.facts.outcome is SmtpOutcome.NO_CONNECT


async def test_loopback_mx_refused_by_default_and_probed_when_allowed() -> None:
    async with SmtpSim(accept()) as sim:
        refused = await probe(sim, allow_private_mx=False)
        assert sim.sessions == []
        allowed = await probe(sim, allow_private_mx=True)
    assert refused.facts.outcome is SmtpOutcome.PRIVATE_MX
    assert "127.0.0.1" in (refused.facts.message or "")
    assert "allow_private_mx" in (refused.facts.message or "")
    assert allowed.facts.outcome is SmtpOutcome.ACCEPTED
    assert len(sim.sessions) == 1


async def test_every_address_private_is_private_mx() -> None:
    # RFC 1918, link-local (cloud metadata) and loopback MX addresses, nothing dialled
    dns = DnsFacts(
        DnsOutcome.OK,
        (
            MxHost(10, "intranet.sim.test", ("10.0.0.5", "169.254.169.254")),
            MxHost(20, "lo.sim.test", ("127.0.0.1", "::1")),
        ),
    )
    async with SmtpSim(accept()) as sim:
        run = await probe(sim, dns=dns, allow_private_mx=False)
    assert run.facts.outcome is SmtpOutcome.PRIVATE_MX
    assert run.facts.mx_host == "intranet.sim.test"
    assert sim.sessions == []


# --- hostile servers: they end, with bounded memory, and never "undeliverable" ----------------


HOSTILE: list[tuple[str, Behaviour, SmtpOutcome]] = [
    ("421-banner", banner_421(), SmtpOutcome.TEMPORARY),
    ("tarpit-banner", tarpit(), SmtpOutcome.TIMEOUT),
    ("tarpit-rcpt", tarpit(at="RCPT"), SmtpOutcome.TIMEOUT),
    ("endless-ehlo", endless_multiline(), SmtpOutcome.INVALID_SMTP),
    ("endless-banner", endless_multiline(at="banner"), SmtpOutcome.INVALID_SMTP),
    ("huge-banner", huge_line(), SmtpOutcome.INVALID_SMTP),
    ("huge-rcpt", huge_line(at="RCPT"), SmtpOutcome.INVALID_SMTP),
    ("close-after-banner", close_after_banner(), SmtpOutcome.TEMPORARY),
    ("close-after-mail", close_after_mail(), SmtpOutcome.TEMPORARY),
    ("garbage-banner", garbage(), SmtpOutcome.INVALID_SMTP),
    ("garbage-rcpt", garbage(at="RCPT"), SmtpOutcome.INVALID_SMTP),
    ("garbage-ehlo-nopipe", garbage(at="EHLO", pipelining=False), SmtpOutcome.INVALID_SMTP),
    ("tarpit-mail-nopipe", tarpit(at="MAIL", pipelining=False), SmtpOutcome.TIMEOUT),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [(b, e) for _, b, e in HOSTILE],
    ids=[name for name, _, _ in HOSTILE],
)
async def test_hostile_servers_end_bounded(behaviour: Behaviour, expected: SmtpOutcome) -> None:
    # Only a tarpit needs the command timeout to end (a 1 byte/s drip of a 40-byte reply
    # never completes in SHORT); everything else ends by itself on the protocol (line or
    # reply limit, junk, hang-up), so it gets GENEROUS timeouts and cannot lose a race
    # with a slow machine. tracemalloc slows everything 2-4x: hence no short timeouts
    # for healthy replies at all.
    # (With a tarpit every path ends in TIMEOUT, even a slow healthy banner: 1 s will do.)
    command_timeout = 1.0 if expected is SmtpOutcome.TIMEOUT else GENEROUS
    async with SmtpSim(behaviour) as sim:
        tracemalloc.start()
        try:
            run = await probe(
                sim,
                smtp_command_timeout=command_timeout,
                smtp_connect_timeout=GENEROUS,
                smtp_max_reply_bytes=16384,
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert run.facts.outcome is expected
    assert run.facts.outcome not in UNDELIVERABLE
    assert run.stage.max_buffered_bytes <= 16384
    assert peak < 8 * 1024 * 1024  # a 10 MB line never lands in memory
    assert len(run.facts.message or "") <= 400
    assert_polite(sim)


@pytest.mark.timeout(60)
async def test_hostile_primaries_fail_over_to_sane_backup() -> None:
    # junk, a huge line and a hang-up end on their own: no timeout involved at all
    sim = SmtpSim(
        mailboxes("alice"),
        by_ip={"127.0.0.2": close_after_banner(), "127.0.0.3": garbage(), "127.0.0.4": huge_line()},
    )
    async with sim:
        run = await probe(
            sim,
            dns=mx("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.1"),
            smtp_max_mx_hosts=4,
            smtp_command_timeout=GENEROUS,
            smtp_connect_timeout=GENEROUS,
        )
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert run.facts.mx_host == "mx4.sim.test"


@pytest.mark.timeout(60)
async def test_tarpit_primary_fails_over_to_sane_backup() -> None:
    # the tarpit must hit the command timeout; the backup's replies share that timeout,
    # so it is SHORT (not sub-second) and the tarpit drips far too slowly to beat it
    sim = SmtpSim(mailboxes("alice"), by_ip={"127.0.0.2": tarpit(rate=0.2)})
    async with sim:
        run = await probe(
            sim,
            dns=mx("127.0.0.2", "127.0.0.1"),
            smtp_command_timeout=SHORT,
            smtp_connect_timeout=GENEROUS,
        )
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert run.facts.mx_host == "mx2.sim.test"
    assert [s.local_ip for s in sim.sessions] == ["127.0.0.2", "127.0.0.1"]


@pytest.mark.timeout(60)
async def test_all_hosts_fail_reports_most_informative() -> None:
    sim = SmtpSim(
        accept(), by_ip={"127.0.0.2": tarpit(rate=0.2), "127.0.0.3": policy_block(at="banner")}
    )
    async with sim:
        run = await probe(
            sim,
            dns=mx("127.0.0.9", "127.0.0.2", "127.0.0.3"),
            smtp_command_timeout=SHORT,
            smtp_connect_timeout=GENEROUS,
        )
    assert run.facts.outcome is SmtpOutcome.BLOCKED
    assert run.facts.mx_host == "mx3.sim.test"


async def _until(predicate: Any, what: str) -> None:
    """Wait (bounded, no timing assertion) until ``predicate()`` holds."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.timeout(60)
async def test_cancelled_probe_leaks_nothing() -> None:
    # a fast drip: the server writes often, so it notices the hang-up soon
    async with SmtpSim(tarpit(rate=50)) as sim:
        stage = SmtpStage(settings(sim, smtp_command_timeout=30))
        before = asyncio.all_tasks()
        task = asyncio.create_task(stage.probe("a@corp.test", "corp.test", mx("127.0.0.1")))
        await _until(lambda: len(sim.sessions) == 1, "the server saw the connection")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the client closed the connection: the server sees the session end
        await _until(lambda: sim.sessions[0].closed, "the server saw the session closed")
        # and nothing the probe started is still running
        await _until(lambda: asyncio.all_tasks() <= before, "no leftover tasks")
    assert sim.sessions[0].closed


# --- C1: a failed catch-all check never costs the real answer --------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "plain"])
@pytest.mark.parametrize("how", ["stall", "close"])
async def test_failed_catch_all_check_keeps_the_real_answer(pipelining: bool, how: str) -> None:
    # Exchange slows replies to invalid recipients (~5 s) past the command timeout: the
    # random RCPT gets no answer (stall) or the server hangs up on it (close). The real
    # RCPT was answered: that is final; the catch-all flag is unknown; no backup MX asked.
    sim = SmtpSim(
        second_rcpt_fails(how, pipelining=pipelining),  # type: ignore[arg-type]
        by_ip={"127.0.0.2": accept()},
    )
    async with sim:
        run = await probe(
            sim,
            dns=mx("127.0.0.1", "127.0.0.2"),
            smtp_command_timeout=SHORT if how == "stall" else GENEROUS,
            smtp_connect_timeout=GENEROUS,
        )
    f = run.facts
    assert f.outcome is SmtpOutcome.ACCEPTED
    assert (f.code, f.mx_host) == (250, "mx1.sim.test")
    assert f.catch_all is None
    assert run.stage.catch_all_cached("corp.test") is None
    assert [s.local_ip for s in sim.sessions] == ["127.0.0.1"]  # the backup never asked
    assert sim.sessions[0].count("RCPT") == 2
    assert any("catch-all check failed" in n for n in run.notes())
    assert_polite(sim)


@pytest.mark.timeout(60)
async def test_failed_catch_all_check_keeps_a_pipelined_refusal() -> None:
    sim = SmtpSim(second_rcpt_fails("close", then=mailboxes("alice")))
    async with sim:
        run = await probe(sim, "bob@corp.test", smtp_command_timeout=GENEROUS)
    assert run.facts.outcome is SmtpOutcome.USER_UNKNOWN
    assert run.facts.catch_all is False  # the refusal itself says: not a catch-all
    assert len(sim.sessions) == 1


# --- C4: opportunistic STARTTLS never costs the verdict -----------------------------------


async def test_starttls_refused_goes_on_in_plain_text() -> None:
    sim = SmtpSim(starttls_refused(), by_ip={"127.0.0.2": starttls_refused()})
    async with sim:
        run = await probe(sim)
        required = await probe(sim, dns=mx("127.0.0.2"), smtp_starttls="required")
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert run.facts.tls is False
    first = sim.sessions[0]
    assert first.verbs() == ["EHLO", "STARTTLS", "MAIL", "RCPT", "RCPT", "QUIT"]
    assert [s.local_ip for s in sim.sessions].count("127.0.0.1") == 1  # same connection
    assert required.facts.outcome is SmtpOutcome.TEMPORARY
    assert required.facts.code == 454
    assert sim.sessions[-1].count("MAIL") == 0


async def test_starttls_handshake_failure_retries_once_in_plain_text() -> None:
    sim = SmtpSim(starttls_broken(), by_ip={"127.0.0.2": starttls_broken()})
    async with sim:
        run = await probe(sim)
        required = await probe(sim, dns=mx("127.0.0.2"), smtp_starttls="required")
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert run.facts.tls is False
    assert run.facts.mx_host == "mx1.sim.test"
    on_first = [s for s in sim.sessions if s.local_ip == "127.0.0.1"]
    assert len(on_first) == 2  # the failed handshake, then one plain-text session
    assert on_first[0].verbs() == ["EHLO", "STARTTLS"]
    assert on_first[1].verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "QUIT"]
    assert any("retrying without STARTTLS" in n for n in run.notes())
    # required by us: no plain-text retry, and never "undeliverable"
    assert required.facts.outcome is SmtpOutcome.TEMPORARY
    assert "TLS handshake failed" in (required.facts.message or "")
    assert [s.local_ip for s in sim.sessions].count("127.0.0.2") == 1


async def test_tls_client_context_is_permissive() -> None:
    async with SmtpSim(accept()) as sim:
        ctx = SmtpStage(settings(sim))._tls()
    assert ctx.verify_mode is ssl.CERT_NONE
    assert not ctx.check_hostname
    assert ctx.minimum_version <= ssl.TLSVersion.TLSv1_2
    assert ctx.minimum_version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.MINIMUM_SUPPORTED)


# --- C5: odd MX names never break TLS (SNI only for LDH names) -----------------------------


@pytest.mark.parametrize(
    "name",
    [
        "\u00e9" * 63 + ".sim.test",  # a 63-character label of non-ASCII
        "\\195\\169" * 12 + ".sim.test",  # dnspython's escapes for such bytes
        "x" * 64 + ".sim.test",  # over the 63-octet label limit
        "under_score.sim.test",
        "-dash.sim.test",
        "mx..sim.test",
        "mx.sim.test.",  # absolute names are fine: sent without the dot
    ],
    ids=["non-ascii-63", "escaped-bytes", "label-64", "underscore", "dash", "empty", "dot"],
)
async def test_odd_mx_names_do_not_break_starttls(name: str) -> None:
    dns = DnsFacts(DnsOutcome.OK, (MxHost(10, name, ("127.0.0.1",)),))
    async with SmtpSim(mailboxes("alice", starttls="offered")) as sim:
        run = await probe(sim, dns=dns)
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert run.facts.tls is True
    assert run.facts.mx_host == name
    assert sim.sessions[0].tls


# --- C7: EHLO keywords after the 20th line count ---------------------------------------


async def test_ehlo_keywords_after_line_twenty_are_seen() -> None:
    extra = tuple(f"X-EXTENSION-{i}" for i in range(30))
    sim = SmtpSim(
        mailboxes("alice", ehlo_extra=extra),
        by_ip={"127.0.0.2": mailboxes("alice", ehlo_extra=extra, starttls="offered")},
    )
    async with sim:
        run = await probe(sim, "jösé@corp.test")
        tls = await probe(sim, dns=mx("127.0.0.2"))
    # PIPELINING and SMTPUTF8 come after 30+ lines: both were seen
    assert run.facts.outcome is SmtpOutcome.USER_UNKNOWN
    assert sim.sessions[0].commands[1].endswith(" SMTPUTF8")
    assert run.round_trips() == 3
    # and STARTTLS too
    assert tls.facts.outcome is SmtpOutcome.ACCEPTED
    assert tls.facts.tls is True
    # the text kept of a long reply stays bounded
    ehlo = [e.text for e in run.transcript.entries if e.kind == "recv"][1]
    assert "X-EXTENSION-18" in ehlo
    assert "X-EXTENSION-25" not in ehlo


# --- SOCKS5 --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def socks5_proxy() -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
    """A minimal no-auth SOCKS5 CONNECT proxy on loopback (IPv4 targets only)."""
    seen: list[tuple[str, int]] = []
    tasks: set[asyncio.Task[Any]] = set()

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.transport.abort()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            _ver, n = await r.readexactly(2)
            await r.readexactly(n)
            w.write(b"\x05\x00")
            _ver, _cmd, _rsv, atyp = await r.readexactly(4)
            assert atyp == 1, "test proxy: IPv4 only"
            host = socket.inet_ntoa(await r.readexactly(4))
            (port,) = struct.unpack("!H", await r.readexactly(2))
            assert host.startswith("127."), "test proxy: loopback only"
            seen.append((host, port))
            ur, uw = await asyncio.open_connection(host, port)
            w.write(b"\x05\x00\x00\x01" + socket.inet_aton("0.0.0.0") + b"\x00\x00")
            await w.drain()
            a = asyncio.ensure_future(pipe(r, uw))
            b = asyncio.ensure_future(pipe(ur, w))
            await asyncio.gather(a, b)
        finally:
            w.transport.abort()

    def spawn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handle(r, w))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(spawn, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def test_socks5_proxy() -> None:
    async with SmtpSim(mailboxes("alice")) as sim, socks5_proxy() as (proxy_port, seen):
        run = await probe(sim, socks_proxy=f"socks5://127.0.0.1:{proxy_port}")
    assert run.facts.outcome is SmtpOutcome.ACCEPTED
    assert seen == [("127.0.0.1", sim.port)]
    assert sim.sessions[0].peer == "127.0.0.1"


async def test_command_injection_is_refused() -> None:
    async with SmtpSim(accept()) as sim:
        run = await probe(sim, "a@corp.test>\r\nDATA\r\nRCPT TO:<b@corp.test")
    assert run.facts.outcome is SmtpOutcome.INVALID_SMTP
    assert sim.sessions == []

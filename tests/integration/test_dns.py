"""DnsStage against the simulated authoritative DNS server on loopback."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailvet.engine.dns import DnsCache, DnsStage
from mailvet.engine.facts import DnsOutcome, MxHost
from mailvet.engine.transcript import Transcript
from mailvet.settings import Settings, parse_nameserver
from mailvet.testing.dns import Behaviour, DnsServer, Zone

LONG = f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 53}.test"  # 250 characters, legal
RECORDS: dict[str, dict[str, list[Any]]] = {
    "example.test": {"MX": [(20, "mx2.example.test"), (10, "MX1.example.test.")]},
    "mx1.example.test": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
    "mx2.example.test": {"A": ["127.0.0.2"]},
    "tie.test": {"MX": [(10, "b.example.test"), (10, "a.example.test"), (5, "mx2.example.test")]},
    "a.example.test": {"A": ["127.0.0.3"]},
    "b.example.test": {"A": ["127.0.0.4"]},
    "implicit4.test": {"A": ["127.0.0.5"]},
    "implicit6.test": {"AAAA": ["::1"]},
    "nomail.test": {"MX": [(0, ".")]},
    "mixednull.test": {"MX": [(0, "."), (10, "mx2.example.test")]},
    "nodata.test": {"TXT": ["v=spf1 -all"]},
    "alias.test": {"CNAME": ["example.test"]},
    "ghostmx.test": {"MX": [(10, "missing.example.test")]},
    "halfghost.test": {"MX": [(10, "missing.example.test"), (20, "mx2.example.test")]},
    "many.test": {"MX": [(i, f"h{i}.example.test") for i in range(1, 6)]},
    **{f"h{i}.example.test": {"A": [f"127.0.1.{i}"]} for i in range(1, 6)},
    "hugemx.test": {"MX": [(i, f"{'h' * 50}{i}.nowhere.test") for i in range(100)]},
    "broken.test": {"MX": [(10, "mx1.example.test")]},
    "refused.test": {"MX": [(10, "mx1.example.test")]},
    "slow.test": {"MX": [(10, "mx1.example.test")]},
    "dropped.test": {"MX": [(10, "mx1.example.test")]},
    "garbage.test": {"MX": [(10, "mx1.example.test")]},
    "big.test": {"MX": [(10, "mx1.example.test")], "TXT": [f"{i:03}" * 60 for i in range(40)]},
    "slowmxhost.test": {"MX": [(10, "slowhost.example.test")]},
    "slowhost.example.test": {"A": ["127.0.0.9"]},
}


@pytest.fixture
def zone() -> Zone:
    z = Zone(RECORDS)
    z.behave("broken.test", Behaviour.SERVFAIL)
    z.behave("refused.test", Behaviour.REFUSED)
    z.behave("slow.test", Behaviour.SLOW, delay=5.0)
    z.behave("dropped.test", Behaviour.DROP)
    z.behave("garbage.test", Behaviour.GARBAGE)
    z.behave("big.test", Behaviour.TRUNCATE)
    z.behave("slowhost.example.test", Behaviour.SLOW, delay=5.0)
    z.list_in_dnsbl("spammy.test", "dbl.test")
    z.list_in_dnsbl("example.test", "errors.test", code="127.255.255.254")
    return z


@pytest.fixture
async def server(zone: Zone) -> AsyncIterator[DnsServer]:
    async with DnsServer(zone) as srv:
        yield srv


def make_stage(server: DnsServer, **overrides: Any) -> DnsStage:
    values: dict[str, Any] = {"dns_nameservers": [server.nameserver], "dns_timeout": 1.0}
    values.update(overrides)
    return DnsStage(Settings(**values))


@pytest.fixture
async def stage(server: DnsServer) -> AsyncIterator[DnsStage]:
    s = make_stage(server)
    yield s
    await s.close()


async def test_mx_sorted_by_preference_with_addresses(stage: DnsStage) -> None:
    facts = await stage.lookup("example.test")
    assert facts.outcome is DnsOutcome.OK
    assert facts.mx_hosts == (
        MxHost(10, "mx1.example.test", ("127.0.0.1", "::1")),
        MxHost(20, "mx2.example.test", ("127.0.0.2",)),
    )
    assert not facts.implicit_mx
    assert facts.blocklisted is None and facts.blocklists == ()


async def test_equal_preferences_come_in_random_order(stage: DnsStage) -> None:
    # RFC 5321 5.1. 200 lookups (cached after the first): both orders of the two hosts of
    # preference 10 occur (the chance that one never does is 2**-199), and the host of
    # preference 5 always comes first.
    orders = set()
    for _ in range(200):
        facts = await stage.lookup("tie.test")
        hosts = [h.host for h in facts.mx_hosts]
        assert hosts[0] == "mx2.example.test"
        assert all(h.addresses for h in facts.mx_hosts)
        orders.add(tuple(hosts[1:]))
    assert orders == {
        ("a.example.test", "b.example.test"),
        ("b.example.test", "a.example.test"),
    }


async def test_the_order_of_equal_preferences_comes_from_the_given_rng(server: DnsServer) -> None:
    settings = Settings(dns_nameservers=[server.nameserver], dns_timeout=1.0)
    runs = []
    for _ in range(2):
        stage = DnsStage(settings, rng=random.Random(7))
        lookups = [await stage.lookup("tie.test") for _ in range(40)]
        runs.append([[h.host for h in facts.mx_hosts] for facts in lookups])
        await stage.close()
    assert runs[0] == runs[1]  # same seed, same orders
    assert len({tuple(order) for order in runs[0]}) == 2


@pytest.mark.parametrize(
    ("domain", "addresses"), [("implicit4.test", ("127.0.0.5",)), ("implicit6.test", ("::1",))]
)
async def test_implicit_mx(stage: DnsStage, domain: str, addresses: tuple[str, ...]) -> None:
    facts = await stage.lookup(domain)
    assert facts.outcome is DnsOutcome.OK
    assert facts.implicit_mx
    assert facts.mx_hosts == (MxHost(0, domain, addresses),)


async def test_null_mx(stage: DnsStage) -> None:
    facts = await stage.lookup("nomail.test")
    assert facts.outcome is DnsOutcome.NULL_MX
    assert facts.mx_hosts == ()


async def test_null_mx_mixed_with_real_mx_uses_the_real_ones(stage: DnsStage) -> None:
    facts = await stage.lookup("mixednull.test")
    assert facts.outcome is DnsOutcome.OK
    assert [h.host for h in facts.mx_hosts] == ["mx2.example.test"]


async def test_nxdomain(stage: DnsStage) -> None:
    assert (await stage.lookup("nowhere.test")).outcome is DnsOutcome.NXDOMAIN


async def test_nodata_without_address_is_no_mail_host(stage: DnsStage) -> None:
    assert (await stage.lookup("nodata.test")).outcome is DnsOutcome.NO_MAIL_HOST


async def test_mx_hosts_that_do_not_exist_mean_no_mail_host(stage: DnsStage) -> None:
    facts = await stage.lookup("ghostmx.test")
    assert facts.outcome is DnsOutcome.NO_MAIL_HOST
    assert facts.mx_hosts == (MxHost(10, "missing.example.test", ()),)


async def test_an_unresolvable_mx_host_keeps_empty_addresses(stage: DnsStage) -> None:
    facts = await stage.lookup("halfghost.test")
    assert facts.outcome is DnsOutcome.OK
    assert facts.mx_hosts == (
        MxHost(10, "missing.example.test", ()),
        MxHost(20, "mx2.example.test", ("127.0.0.2",)),
    )


async def test_only_smtp_max_mx_hosts_are_resolved(stage: DnsStage, server: DnsServer) -> None:
    facts = await stage.lookup("many.test")
    assert [h.host for h in facts.mx_hosts] == [f"h{i}.example.test" for i in range(1, 6)]
    assert [h.addresses for h in facts.mx_hosts] == [
        ("127.0.1.1",), ("127.0.1.2",), ("127.0.1.3",), (), ()
    ]  # fmt: skip
    assert server.count(rtype="A") == 3


async def test_next_hosts_are_resolved_when_the_first_do_not_resolve(server: DnsServer) -> None:
    stage = make_stage(server, smtp_max_mx_hosts=1)
    facts = await stage.lookup("halfghost.test")
    await stage.close()
    assert facts.outcome is DnsOutcome.OK
    assert facts.mx_hosts[1] == MxHost(20, "mx2.example.test", ("127.0.0.2",))


# --- MX hosts that do not resolve: one outcome however many ---------------------------

GHOST_COUNTS = [1, 3, 4, 6, 7, 31]  # 31 ghosts and one more host: the 32 kept


def ghost_mx(n: int, *, then: str | None = None) -> list[tuple[int, str]]:
    """``n`` MX hosts that do not exist (NXDOMAIN), then optionally ``then`` last."""
    ghosts = [(10 + i, f"ghost{i}.nowhere.test") for i in range(n)]
    return ghosts + ([(99, then)] if then else [])


@pytest.fixture
async def ghost_server() -> AsyncIterator[DnsServer]:
    records: dict[str, dict[str, list[Any]]] = {
        "mx2.example.test": {"A": ["127.0.0.2"]},
        "txtonly.example.test": {"TXT": ["no address here"]},
        "slowhost.example.test": {"A": ["127.0.0.9"]},
        "broken.example.test": {"A": ["127.0.0.9"]},
    }
    records["lastlive32.test"] = {"MX": ghost_mx(32, then="mx2.example.test")}
    for n in GHOST_COUNTS:
        records[f"ghosts{n}.test"] = {"MX": ghost_mx(n)}
        records[f"nodata{n}.test"] = {"MX": ghost_mx(n, then="txtonly.example.test")}
        records[f"lastlive{n}.test"] = {"MX": ghost_mx(n, then="mx2.example.test")}
        records[f"lastslow{n}.test"] = {"MX": ghost_mx(n, then="slowhost.example.test")}
        records[f"lastbroken{n}.test"] = {"MX": ghost_mx(n, then="broken.example.test")}
    zone = Zone(records)
    zone.behave("slowhost.example.test", Behaviour.SLOW, delay=5.0)
    zone.behave("broken.example.test", Behaviour.SERVFAIL)
    async with DnsServer(zone) as srv:
        yield srv


@pytest.mark.parametrize("max_hosts", [2, 3])
@pytest.mark.parametrize("n", GHOST_COUNTS)
async def test_mx_hosts_that_do_not_exist_mean_no_mail_host_however_many(
    ghost_server: DnsServer, n: int, max_hosts: int
) -> None:
    # RFC 5321 5.1: MX records present, none usable: the domain takes no mail. Before,
    # more than two batches of smtp_max_mx_hosts ghosts gave OK (then no_connect).
    stage = make_stage(ghost_server, smtp_max_mx_hosts=max_hosts)
    try:
        facts = await stage.lookup(f"ghosts{n}.test")
        nodata = await stage.lookup(f"nodata{n}.test")  # the last host exists, no address
    finally:
        await stage.close()
    assert facts.outcome is DnsOutcome.NO_MAIL_HOST
    assert [h.host for h in facts.mx_hosts] == [f"ghost{i}.nowhere.test" for i in range(n)]
    assert not any(h.addresses for h in facts.mx_hosts)
    assert nodata.outcome is DnsOutcome.NO_MAIL_HOST


@pytest.mark.parametrize("n", GHOST_COUNTS)
async def test_one_resolving_host_after_many_that_do_not_is_found(
    ghost_server: DnsServer, n: int
) -> None:
    stage = make_stage(ghost_server, smtp_max_mx_hosts=2)
    try:
        facts = await stage.lookup(f"lastlive{n}.test")
    finally:
        await stage.close()
    assert facts.outcome is DnsOutcome.OK
    assert facts.mx_hosts[-1] == MxHost(99, "mx2.example.test", ("127.0.0.2",))


async def test_more_mx_hosts_than_kept_none_resolving_is_unknown(ghost_server: DnsServer) -> None:
    stage = make_stage(ghost_server)
    try:
        facts = await stage.lookup("lastlive32.test")  # 32 ghosts kept, the live host not
    finally:
        await stage.close()
    assert facts.outcome is DnsOutcome.ERROR
    assert len(facts.mx_hosts) == 32 and not any(h.addresses for h in facts.mx_hosts)


@pytest.mark.parametrize("n", [1, 6])
async def test_unresolved_hosts_with_one_that_failed_are_unknown_not_invalid(
    ghost_server: DnsServer, n: int
) -> None:
    # the host whose lookup timed out or failed might have been the one taking the mail
    stage = make_stage(ghost_server, smtp_max_mx_hosts=2, dns_timeout=0.5)
    try:
        slow = await stage.lookup(f"lastslow{n}.test")
        broken = await stage.lookup(f"lastbroken{n}.test")
    finally:
        await stage.close()
    assert slow.outcome is DnsOutcome.TIMEOUT
    assert broken.outcome is DnsOutcome.ERROR


async def test_cname_is_followed(stage: DnsStage) -> None:
    facts = await stage.lookup("alias.test")
    assert facts.outcome is DnsOutcome.OK
    assert [h.host for h in facts.mx_hosts] == ["mx1.example.test", "mx2.example.test"]


@pytest.mark.parametrize("domain", ["broken.test", "refused.test", "garbage.test"])
async def test_server_failures_are_errors_never_nxdomain(stage: DnsStage, domain: str) -> None:
    facts = await stage.lookup(domain)
    assert facts.outcome is DnsOutcome.ERROR
    assert facts.error


@pytest.mark.parametrize("domain", ["slow.test", "dropped.test"])
async def test_slow_or_silent_server_is_timeout(server: DnsServer, domain: str) -> None:
    stage = make_stage(server, dns_timeout=0.3)
    try:
        facts = await stage.lookup(domain)
    finally:
        await stage.close()
    assert facts.outcome is DnsOutcome.TIMEOUT


async def test_slow_mx_host_is_timeout_not_invalid(server: DnsServer) -> None:
    # the host's A answer comes after 5 s; 1.5 s leaves the MX answer room on a loaded CI
    stage = make_stage(server, dns_timeout=1.5)
    try:
        facts = await stage.lookup("slowmxhost.test")
    finally:
        await stage.close()
    assert facts.outcome is DnsOutcome.TIMEOUT
    assert facts.mx_hosts == (MxHost(10, "slowhost.example.test", ()),)


async def test_truncated_answer_is_retried_over_tcp(stage: DnsStage, server: DnsServer) -> None:
    facts = await stage.lookup("big.test")
    assert facts.outcome is DnsOutcome.OK
    assert server.count("big.test", "MX") == 2
    assert {q.transport for q in server.log if q.name == "big.test"} == {"udp", "tcp"}


async def test_hostile_mx_set_is_fetched_over_tcp_and_capped(
    stage: DnsStage, server: DnsServer
) -> None:
    facts = await stage.lookup("hugemx.test")
    assert {q.transport for q in server.log if q.name == "hugemx.test"} == {"udp", "tcp"}
    assert len(facts.mx_hosts) == 32
    assert [h.preference for h in facts.mx_hosts] == list(range(32))
    assert server.count(rtype="A") <= 32  # the 32 kept hosts at most, never all 100
    # none of the 32 exists; one of the 68 not asked might: unknown, never invalid
    assert facts.outcome is DnsOutcome.ERROR
    assert facts.error is not None and "100 MX hosts" in facts.error


async def test_no_reachable_nameserver_is_not_nxdomain() -> None:
    # a closed loopback port: ICMP refused or silence, never an answer
    stage = DnsStage(Settings(dns_nameservers=["127.0.0.1:9"], dns_timeout=0.3))
    facts = await stage.lookup("example.test")
    await stage.close()
    assert facts.outcome in (DnsOutcome.ERROR, DnsOutcome.TIMEOUT)


async def test_repeated_lookups_are_cached(stage: DnsStage, server: DnsServer) -> None:
    first = await stage.lookup("example.test")
    sent = server.queries
    assert sent == 5  # MX + A/AAAA of two hosts
    for _ in range(3):
        assert await stage.lookup("EXAMPLE.test.") == first
    assert server.queries == sent


async def test_mx_host_answers_are_shared_between_domains(
    stage: DnsStage, server: DnsServer
) -> None:
    await stage.lookup("example.test")
    server.reset_counts()
    await stage.lookup("alias.test")
    assert server.count("alias.test", "MX") == 1
    assert server.queries == 1


async def test_negative_answers_are_cached(stage: DnsStage, server: DnsServer) -> None:
    for _ in range(3):
        assert (await stage.lookup("nowhere.test")).outcome is DnsOutcome.NXDOMAIN
        assert (await stage.lookup("nodata.test")).outcome is DnsOutcome.NO_MAIL_HOST
    assert server.count("nowhere.test") == 1
    assert server.count("nodata.test") == 3  # MX, A, AAAA once each


async def test_concurrent_lookups_share_one_query(stage: DnsStage, server: DnsServer) -> None:
    results = await asyncio.gather(*(stage.lookup("example.test") for _ in range(20)))
    assert all(r == results[0] for r in results)
    assert server.count("example.test", "MX") == 1
    assert server.count("mx1.example.test", "A") == 1


async def test_cache_disabled_sends_queries_again(server: DnsServer) -> None:
    stage = make_stage(server, dns_cache_size=0)
    await stage.lookup("nowhere.test")
    await stage.lookup("nowhere.test")
    await stage.close()
    assert server.count("nowhere.test", "MX") == 2


def test_cache_is_bounded() -> None:
    from mailvet.engine import dns as engine_dns

    cache = DnsCache(2)
    result = engine_dns._Result(engine_dns._Status.NODATA, ttl=60)
    for i in range(5):
        cache.put((f"n{i}.", 1), result, 60)
    assert len(cache) == 2
    assert cache.get(("n4.", 1)) is result and cache.get(("n0.", 1)) is None


async def test_blocklist_listed_and_not_listed(server: DnsServer) -> None:
    stage = make_stage(server, dns_blocklists=["dbl.test"])
    listed = await stage.lookup("spammy.test")
    clean = await stage.lookup("example.test")
    await stage.close()
    assert listed.outcome is DnsOutcome.NXDOMAIN  # no mail either; the check still runs
    assert listed.blocklisted is True and listed.blocklists == ("dbl.test",)
    assert clean.blocklisted is False and clean.blocklists == ()
    assert server.count("spammy.test.dbl.test", "A") == 1


async def test_blocklist_error_codes_do_not_list(server: DnsServer) -> None:
    stage = make_stage(server, dns_blocklists=["errors.test"])
    facts = await stage.lookup("example.test")
    await stage.close()
    assert facts.outcome is DnsOutcome.OK
    assert facts.blocklisted is None  # 127.255.255.x: the list refused to answer


async def test_one_listing_zone_is_enough(server: DnsServer) -> None:
    stage = make_stage(server, dns_blocklists=["errors.test", " dbl.test. "])
    facts = await stage.lookup("spammy.test")
    await stage.close()
    assert facts.blocklisted is True and facts.blocklists == ("dbl.test",)


async def test_unconfigured_blocklist_sends_no_query(stage: DnsStage, server: DnsServer) -> None:
    facts = await stage.lookup("spammy.test")
    assert facts.blocklisted is None
    assert server.count("spammy.test.dbl.test") == 0


async def test_transcript_records_every_answer(stage: DnsStage) -> None:
    transcript = Transcript()
    await stage.lookup("example.test", transcript)
    texts = [e.text for e in transcript.entries]
    assert all(e.kind == "dns" for e in transcript.entries)
    assert any(
        t.startswith("MX example.test: 10 mx1.example.test, 20 mx2.example.test") for t in texts
    )
    assert any(t.startswith("A mx1.example.test: 127.0.0.1") for t in texts)
    assert len(texts) == 5
    again = Transcript()
    await stage.lookup("example.test", again)
    assert all(e.text.endswith("[cached]") for e in again.entries)
    failed = Transcript()
    await stage.lookup("broken.test", failed)
    assert "ERROR" in failed.entries[0].text
    implicit = Transcript()
    await stage.lookup("implicit4.test", implicit)
    assert any("implicit MX" in e.text for e in implicit.entries)


@pytest.mark.parametrize(
    "domain",
    [
        LONG,  # legal: asked, NXDOMAIN
        "a" * 64 + ".test",  # label too long
        "x." * 130 + "test",  # name too long
        "",
        ".",
        "exa mple.test",
        "exa\\046mple.test",
        "bücher.test",
        "[127.0.0.1]",
        "a..test",
        "-lead.test",
    ],
)
async def test_hostile_domains_never_raise(stage: DnsStage, server: DnsServer, domain: str) -> None:
    facts = await stage.lookup(domain, Transcript())
    assert facts.outcome in (DnsOutcome.NXDOMAIN, DnsOutcome.ERROR)
    if facts.outcome is DnsOutcome.ERROR:
        assert server.queries == 0


async def test_long_domain_with_blocklist_is_not_concluded(server: DnsServer) -> None:
    stage = make_stage(server, dns_blocklists=["dbl.test"])
    assert len(LONG) == 250
    facts = await stage.lookup(LONG)
    await stage.close()
    assert facts.outcome is DnsOutcome.NXDOMAIN
    assert facts.blocklisted is None  # <domain>.dbl.test would be longer than DNS allows


async def test_ipv6_nameserver() -> None:
    zone = Zone({"six.test": {"MX": [(10, "mx1.six.test")]}, "mx1.six.test": {"AAAA": ["::1"]}})
    try:
        server = DnsServer(zone, host="::1")
        await server.start()
    except OSError:
        if os.environ.get("CI") == "true":  # CI machines have ::1: never skip there
            raise
        pytest.skip("no IPv6 loopback on this machine")
    try:
        stage = DnsStage(Settings(dns_nameservers=[server.nameserver], dns_timeout=1.0))
        facts = await stage.lookup("six.test")
        await stage.close()
    finally:
        await server.close()
    assert server.nameserver.startswith("[::1]:")
    assert facts.mx_hosts == (MxHost(10, "mx1.six.test", ("::1",)),)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::1]", ("::1", 53)),
    ],
)
def test_parse_nameserver(entry: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(entry) == expected


@pytest.mark.parametrize("entry", ["localhost", "127.0.0.1:0", "127.0.0.1:x", "[::1", "[::1]x"])
def test_parse_nameserver_rejects(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(entry)

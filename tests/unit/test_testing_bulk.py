"""The batch benchmark's world (mailvet.testing.bulk): proportions, determinism, cost, the
servers agreeing with the truth, and the lower bound's formula."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter

import pytest

from mailvet.engine.pipeline import Engine
from mailvet.settings import Settings
from mailvet.testing import smtp as sim
from mailvet.testing.bulk import (
    BulkSpec,
    BulkWorld,
    Caps,
    Kind,
    LaneLoad,
    lane_terms,
    lower_bound,
)
from mailvet.testing.dns import DnsServer, Zone

N = 20_000


@pytest.fixture(scope="module")
def world() -> BulkWorld:
    return BulkWorld(BulkSpec(size=N))


def test_shares_of_the_big_providers_and_the_small_domains(world: BulkWorld) -> None:
    lanes = Counter(world.truth(i).domain.lane for i in range(N))
    assert lanes["mx1.alphamail.test"] / N == pytest.approx(0.40, abs=0.015)
    assert lanes["mx1.betamail.test"] / N == pytest.approx(0.20, abs=0.015)
    assert lanes["mx1.gammamail.test"] / N == pytest.approx(0.10, abs=0.015)
    small = {d.lane for d in world.small}
    assert len(world.small) == 2000 == len(small)  # each small domain is its own lane
    assert sum(n for lane, n in lanes.items() if lane in small) / N == pytest.approx(0.3, abs=0.015)
    # hosted customer domains are asked through their provider's MX
    hosted = {world.truth(i).domain.name for i in range(N)} - {d.name for d in world.small}
    assert len(hosted) > 40


def test_a_few_percent_catch_all_greylisted_tarpit_unknown_and_repeated(
    world: BulkWorld,
) -> None:
    kinds = Counter(world.truth(i).domain.kind for i in range(N))
    assert kinds[Kind.CATCH_ALL] / N == pytest.approx(0.03, abs=0.01)
    assert kinds[Kind.GREYLIST] / N == pytest.approx(0.02, abs=0.01)
    assert kinds[Kind.TARPIT] / N == pytest.approx(0.01, abs=0.005)
    missing = sum(not world.truth(i).exists for i in range(N))
    assert missing / N == pytest.approx(0.05, abs=0.01)
    addresses = world.addresses()
    repeats = N - len(set(addresses))
    assert repeats / N == pytest.approx(0.01, abs=0.004)
    # a repeat is the same address as its canonical one, and has the same truth
    i = next(i for i in range(N) if world.canonical(i) != i)
    assert addresses[i] == addresses[world.canonical(i)]
    assert world.truth(i) == world.truth(world.canonical(i))


def test_deterministic_and_seeded(world: BulkWorld) -> None:
    again = BulkWorld(BulkSpec(size=N))
    assert again.addresses() == world.addresses()
    assert again.zone() == world.zone()
    other = BulkWorld(BulkSpec(size=N, seed=7))
    assert other.addresses() != world.addresses()
    # a smaller world is a prefix of a larger one
    assert BulkWorld(BulkSpec(size=100)).addresses() == world.addresses()[:100]


def test_lanes_count_distinct_addresses_and_greylisted_ones(world: BulkWorld) -> None:
    lanes = world.lanes()
    distinct = len(set(world.addresses()))
    assert sum(load.addresses for load in lanes.values()) == distinct
    grey = sum(1 for i in range(N) if world.canonical(i) == i
               and world.truth(i).domain.kind is Kind.GREYLIST)  # fmt: skip
    assert sum(load.greylisted for load in lanes.values()) == grey > 0
    tarpits = [lanes[d.lane] for d in world.small if d.kind is Kind.TARPIT and d.lane in lanes]
    assert tarpits and all(load.latency_ms == world.spec.tarpit_latency_ms for load in tarpits)


def test_every_mx_on_its_own_loopback_address(world: BulkWorld) -> None:
    hosts = world.hosts()
    ips = list(hosts.values())
    assert len(set(ips)) == len(ips)  # no two MX hosts share an address
    assert all(ipaddress.ip_address(ip).is_loopback for ip in ips)
    assert "127.0.0.1" not in ips  # the DNS server's
    zone = world.zone()
    for domain in world.domains():
        assert zone[domain.name]["MX"][0] == (10, domain.lane)
        assert zone[domain.lane]["A"] == [hosts[domain.lane]]
    assert set(world.by_ip()) == set(ips)


def test_a_hundred_thousand_addresses_and_their_zone_are_cheap() -> None:
    t0 = time.perf_counter()
    world = BulkWorld(BulkSpec(size=100_000))
    assert len(world.addresses()) == 100_000
    Zone(world.zone())  # validates every record
    assert time.perf_counter() - t0 < 30  # seconds, in fact; generous on a shared machine


def test_mailbox_rule_accepts_exactly_the_existing_mailboxes(world: BulkWorld) -> None:
    rule = world.mailbox_rule("postfix")
    session = sim.Session(local_ip="127.20.0.1", peer="127.0.0.1")
    for i in range(200):
        address = world.address(i)
        assert rule(address, session).startswith("250") == world.truth(i).exists, address
    # a catch-all probe's random local part is refused
    assert rule("q8x0a1b2c3d4e5f6g7h9@shop00001.test", session).startswith("550")
    assert rule("alice.smith.x@shop00001.test", session).startswith("550")


async def test_the_simulated_servers_give_the_verdicts_the_truth_says() -> None:
    spec = BulkSpec(size=400, small_domains=30, latency_ms=0, tarpit_latency_ms=0,
                    catch_all=0.05, greylisted=0.0, tarpit=0.05)  # fmt: skip
    world = BulkWorld(spec)
    picked: dict[tuple[Kind, bool], int] = {}
    for i in range(spec.size):
        truth = world.truth(i)
        picked.setdefault((truth.domain.kind, truth.exists), i)
    assert {(Kind.MAILBOXES, True), (Kind.MAILBOXES, False), (Kind.CATCH_ALL, True),
            (Kind.TARPIT, True)} <= set(picked)  # fmt: skip
    async with DnsServer(world.zone()) as dns, world.smtp_sim() as smtp:
        settings = Settings(dns_nameservers=[dns.nameserver], smtp_port=smtp.port,
                            allow_private_mx=True, allowed_special_domains=["test"])  # fmt: skip
        engine = Engine(settings)
        try:
            for i in picked.values():
                checked = await engine.verify(world.address(i))
                assert checked.verdict.result.value == world.truth(i).result, world.address(i)
        finally:
            await engine.close()


def test_lane_terms_rate_replies_and_connects() -> None:
    caps = Caps(max_sessions=2, rcpt_per_session=50, rcpt_per_second=10.0,
                connects_per_minute=30)  # fmt: skip
    load = LaneLoad("mx.test", latency_ms=20, addresses=1000, greylisted=0)
    terms = lane_terms(load, caps)
    assert terms["rate"] == pytest.approx(98.0)  # 1000 RCPT at 10/s after a burst of 20
    assert terms["replies"] == pytest.approx((3 + 500) * 0.02)  # 2 sessions, 20 ms a reply
    assert terms["connects"] == pytest.approx(0.0)  # 20 sessions fit the burst of 30
    slow = LaneLoad("tarpit.test", latency_ms=1000, addresses=10)
    assert lane_terms(slow, caps)["replies"] == pytest.approx(8.0)  # (3 + 10/2) x 1 s
    many = LaneLoad("mx.test", latency_ms=0, addresses=90)
    tight = Caps(max_sessions=10, rcpt_per_session=1, rcpt_per_second=1e9,
                 connects_per_minute=6)  # fmt: skip
    assert lane_terms(many, tight)["connects"] == pytest.approx(60 * (90 - 6) / 6)
    grey = LaneLoad("mx.test", latency_ms=0, addresses=100, greylisted=20)
    assert lane_terms(grey, caps)["rate"] == pytest.approx(10.0)  # retries are RCPTs too
    assert lane_terms(LaneLoad("mx.test", 0, addresses=5), caps)["rate"] == 0.0  # one burst


def test_lower_bound_is_the_largest_lane_or_the_greylist_floor() -> None:
    caps = Caps(max_sessions=8, rcpt_per_session=500, rcpt_per_second=100.0,
                connects_per_minute=60)  # fmt: skip
    lanes = {
        "big": LaneLoad("big", 20, addresses=4000),
        "mid": LaneLoad("mid", 20, addresses=2000, greylisted=10),
        "tarpit": LaneLoad("tarpit", 2000, addresses=12),
    }
    bound = lower_bound(lanes, caps, greylist_delay=30.0, latency_ms=20)
    assert bound.seconds == pytest.approx(39.8)  # (4000 - 20) / 100
    assert bound.lane == "big"
    assert bound.greylist_seconds == pytest.approx(30.1)  # 30 s + 5 replies of 20 ms
    assert bound.terms["rate"] == pytest.approx(39.8)
    longer = lower_bound(lanes, caps, greylist_delay=60.0, latency_ms=20)
    assert longer.seconds == pytest.approx(60.1)
    assert longer.lane == "greylist"
    assert longer.lane_seconds == pytest.approx(39.8)
    no_grey = {k: v for k, v in lanes.items() if k != "mid"}
    assert lower_bound(no_grey, caps, greylist_delay=600.0, latency_ms=20).seconds == (
        pytest.approx(39.8)
    )
    slow = {"tarpit": LaneLoad("tarpit", 2000, addresses=40)}
    assert lower_bound(slow, caps, greylist_delay=0, latency_ms=20).seconds == pytest.approx(
        (3 + 5) * 2.0
    )


def test_lower_bound_with_a_cap_on_sessions_over_all_lanes() -> None:
    lanes = {
        "big": LaneLoad("big", 20, addresses=1000),
        "tarpit": LaneLoad("tarpit", 2000, addresses=2),
    }
    # session time: (1000 + 3 x 10 sessions) x 20 ms + (2 + 3 x 1) x 2 s = 20.6 + 10 s
    caps = Caps(max_sessions=8, rcpt_per_session=100, rcpt_per_second=100.0,
                connects_per_minute=60, total_sessions=2)  # fmt: skip
    bound = lower_bound(lanes, caps, greylist_delay=0.0, latency_ms=20)
    assert bound.sessions_seconds == pytest.approx((20.6 + 10.0) / 2)
    assert bound.seconds == pytest.approx(15.3)
    assert bound.lane == "total sessions"
    assert bound.lane_seconds == pytest.approx(9.8)  # the big lane: (1000 - 20) / 100
    roomy = lower_bound(lanes, Caps(8, 100, 100.0, 60, total_sessions=100), greylist_delay=0.0,
                        latency_ms=20)  # fmt: skip
    assert roomy.lane == "big"
    assert roomy.seconds == pytest.approx(9.8)
    assert roomy.sessions_seconds == pytest.approx(0.306)

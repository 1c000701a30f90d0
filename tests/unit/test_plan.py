"""Planning a batch slice (mailvet.jobs.plan): offline verdicts and lanes by MX host."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from mailvet.engine.facts import DnsFacts, DnsOutcome, MxHost
from mailvet.engine.pipeline import Engine
from mailvet.engine.transcript import Transcript
from mailvet.jobs.limits import limits_for
from mailvet.jobs.plan import Planner
from mailvet.settings import Settings


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    email: str
    positions: tuple[int, ...] = (0,)
    attempts: int = 0
    first_try_at: datetime | None = None


def ok(*hosts: tuple[int, str, tuple[str, ...]]) -> DnsFacts:
    return DnsFacts(DnsOutcome.OK, tuple(MxHost(p, h, a) for p, h, a in hosts))


class FakeDns:
    def __init__(self, zone: dict[str, DnsFacts]) -> None:
        self.zone = zone
        self.asked: list[str] = []

    async def lookup(self, ascii_domain: str, transcript: Transcript | None = None) -> DnsFacts:
        self.asked.append(ascii_domain)
        return self.zone.get(ascii_domain, DnsFacts(DnsOutcome.NXDOMAIN))


ZONE = {
    "a.test": ok((10, "mx.shared.test", ("127.0.0.10",))),
    "b.test": ok((10, "mx.shared.test", ("127.0.0.10",))),
    "c.test": ok((5, "mx-none.c.test", ()), (10, "mx2.c.test", ("127.0.0.12", "127.0.0.13", "x"))),
    "d.test": ok(
        (20, "mx2.d.test", ("127.0.0.42",)),
        (10, "mx1.d.test", ("127.0.0.41",)),
        (30, "mx3.d.test", ("127.0.0.43", "127.0.0.44")),
        (40, "mx4.d.test", ("127.0.0.45",)),
    ),
    "gmailhosted.test": ok((5, "aspmx.l.google.com", ("127.0.0.20",))),
    "servfail.test": DnsFacts(DnsOutcome.ERROR, error="SERVFAIL"),
    "private.test": ok((10, "mx.private.test", ("10.0.0.1",))),
    "xn--bcher-kva.test": ok((10, "mx.shared.test", ("127.0.0.10",))),
    "mailinator.com": ok((10, "mx.mailinator.com", ("127.0.0.30",))),
}


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "allowed_special_domains": ["test"],
        "allow_private_mx": True,
        "deny_domains": ["denied.test"],
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def planner(s: Settings | None = None) -> tuple[Planner, FakeDns]:
    s = s or settings()
    dns = FakeDns(ZONE)
    return Planner(Engine(s), dns, s), dns


async def test_offline_verdicts_are_decided_without_dns_or_lanes() -> None:
    p, dns = planner()
    plan = await p.plan(
        "b1",
        [
            Item("k1", "not an address"),
            Item("k2", "x@denied.test"),
            Item("k3", "x@something.invalid"),
        ],
    )
    assert plan.lanes == {}
    got = {key: (c.verdict.result, c.verdict.reason) for key, c in plan.decided}
    assert got == {
        "k1": ("undeliverable", "invalid_format"),
        "k2": ("undeliverable", "denied"),
        "k3": ("undeliverable", "invalid_domain"),
    }
    assert dns.asked == []


async def test_dns_outcomes_disposable_and_private_mx_are_decided_here() -> None:
    p, _ = planner(settings(allow_private_mx=False))
    plan = await p.plan(
        "b1",
        [
            Item("nx", "x@nowhere.test"),
            Item("sf", "x@servfail.test"),
            Item("disp", "x@mailinator.com"),
            Item("priv", "x@private.test"),
        ],
    )
    got = {key: (c.verdict.result, c.verdict.reason) for key, c in plan.decided}
    assert got == {
        "nx": ("undeliverable", "invalid_domain"),
        "sf": ("unknown", "dns_error"),
        "disp": ("risky", "disposable"),
        "priv": ("unknown", "private_mx"),
    }
    # the loopback addresses of the other domains are refused too: no lane at all
    plan = await p.plan("b1", [Item("a", "x@a.test")])
    assert plan.lanes == {}
    assert [c.verdict.reason for _, c in plan.decided] == ["private_mx"]


async def test_domains_on_one_mx_share_a_lane_and_each_domain_is_looked_up_once() -> None:
    p, dns = planner()
    first = await p.plan(
        "b1", [Item("1", "ann@a.test"), Item("2", "bob@b.test"), Item("3", "cy@a.test")]
    )
    second = await p.plan("b1", [Item("4", "dan@a.test"), Item("5", "eve@b.test")])
    assert sorted(dns.asked) == ["a.test", "b.test"]
    assert p.lookups == 2
    assert list(first.lanes) == ["mx.shared.test"]
    route, works = first.lanes["mx.shared.test"]
    assert route.ips == ("127.0.0.10",)
    assert [w.rcpt for w in works] == ["ann@a.test", "bob@b.test", "cy@a.test"]
    assert [w.key for w in works] == ["1", "2", "3"]
    assert all(w.batch_id == "b1" and w.facts.dns is ZONE[w.domain] for w in works)
    assert len(second.lanes["mx.shared.test"][1]) == 2
    assert first.size == 3 and second.size == 2
    p.forget()
    await p.plan("b1", [Item("6", "fay@a.test")])
    assert dns.asked.count("a.test") == 2


async def test_the_lane_is_the_first_mx_with_an_address() -> None:
    p, _ = planner()
    plan = await p.plan("b1", [Item("1", "x@c.test")])
    route, _works = plan.lanes["mx2.c.test"]
    assert route.ips == ("127.0.0.12", "127.0.0.13")  # two addresses at most, in order


async def test_the_next_mx_hosts_are_the_lanes_backups() -> None:
    p, _ = planner(settings(smtp_max_mx_hosts=3))
    plan = await p.plan("b1", [Item("1", "x@d.test")])
    route, _works = plan.lanes["mx1.d.test"]
    assert route.backups == (
        ("mx2.d.test", "127.0.0.42"),
        ("mx3.d.test", "127.0.0.43"),
        ("mx3.d.test", "127.0.0.44"),
    )
    assert route.dials()[0] == ("mx1.d.test", "127.0.0.41")
    p, _ = planner(settings(smtp_max_mx_hosts=1))
    plan = await p.plan("b1", [Item("1", "x@d.test")])
    assert plan.lanes["mx1.d.test"][0].backups == ()


async def test_provider_and_its_limits_ride_with_the_lane() -> None:
    s = settings()
    p, _ = planner(s)
    plan = await p.plan("b1", [Item("1", "x@gmailhosted.test"), Item("2", "y@a.test")])
    route, works = plan.lanes["aspmx.l.google.com"]
    assert route.provider is not None and route.provider.name == "gmail"
    assert route.limits == limits_for(route.provider, s)
    assert works[0].facts.provider == "gmail"
    other, _ = plan.lanes["mx.shared.test"]
    assert other.provider is None and other.limits == limits_for(None, s)


async def test_international_domains_are_asked_in_their_a_label_form() -> None:
    p, dns = planner()
    when = datetime(2026, 1, 1, tzinfo=UTC)
    plan = await p.plan("b1", [Item("k", "Anna@Bücher.test", attempts=2, first_try_at=when)])
    _route, (work,) = plan.lanes["mx.shared.test"]
    assert dns.asked == ["xn--bcher-kva.test"]
    assert work.rcpt == "Anna@xn--bcher-kva.test"
    assert work.domain == "xn--bcher-kva.test"
    assert (work.attempts, work.first_try_at) == (2, when)
    assert work.facts.offline is False


@pytest.mark.parametrize("literal_ok", [True])
async def test_address_literals_go_to_their_own_lane(literal_ok: bool) -> None:
    p, dns = planner(settings(allow_address_literal=literal_ok))
    plan = await p.plan("b1", [Item("k", "x@[127.0.0.9]")])
    assert dns.asked == []
    route, _ = plan.lanes["[127.0.0.9]"]
    assert route.ips == ("127.0.0.9",)

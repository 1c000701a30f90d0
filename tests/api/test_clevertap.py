"""CleverTap Linked Content against the real app on the simulated internet.

CleverTap's Mail.so guide calls ``GET /v1/validate?email={{Profile.Email}}`` with the
``x-mails-api-key`` header and branches in Liquid on the linked response. Both
template forms are rendered with python-liquid against real responses of the app
served by uvicorn on loopback, for a deliverable, an undeliverable and a missing
(``NULL``) address. The real-time promise is tested too: a tarpit mail server still
gets a complete ``unknown`` answer (the engine's deadline, not CleverTap's timeout), and
at the default settings every answer arrives within 4.0 s of sending the request, which
leaves CleverTap's 5 s at least 1 s for the network and TLS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import liquid
import pytest

from mailvet.api.app import create_app
from mailvet.settings import Settings
from mailvet.storage.base import ApiKey, Plan
from mailvet.storage.memory import MemoryStore
from mailvet.testing.dns import Behaviour, DnsServer, Zone
from mailvet.testing.smtp import SmtpSim, mailboxes, tarpit
from mailvet.verdict import Verdict

from .kit import serve

FLAT = '{% if Linked["Mail.so"].result == "deliverable" %}A{% else %}B{% endif %}'
NESTED = '{% if Linked["Mail.so"].data.result == "deliverable" %}A{% else %}B{% endif %}'

ZONE: dict[str, dict[str, list[Any]]] = {
    "shop.test": {"MX": [(10, "mx.shop.test")]},
    "mx.shop.test": {"A": ["127.0.0.1"]},
    "slow.test": {"MX": [(10, "mx.slow.test")]},
    "mx.slow.test": {"A": ["127.0.0.2"]},
}


class Linked:
    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.key = key

    async def fetch(self, email: str, **params: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0) as client:
            r = await client.get(
                "/v1/validate",
                params={"email": email, **params},
                headers={"x-mails-api-key": self.key},
            )
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        return body


@asynccontextmanager
async def linked_app(deadline: float) -> AsyncIterator[Linked]:
    sim = SmtpSim(mailboxes("alice"), by_ip={"127.0.0.2": tarpit()})
    async with DnsServer(Zone(ZONE)) as dns, sim:
        settings = Settings(
            dns_nameservers=[dns.nameserver],
            smtp_port=sim.port,
            allow_private_mx=True,
            deadline=deadline,
            database_url="memory://",
        )
        store = MemoryStore()
        _, key = await store.create_key("clevertap", Plan.PAID)
        app = create_app(settings, store=store)
        async with serve(app) as url:
            yield Linked(url, key)


@pytest.fixture
async def linked() -> AsyncIterator[Linked]:
    """Healthy paths: a generous deadline, so a loaded CI machine still concludes."""
    async with linked_app(deadline=4.0) as running:
        yield running


@pytest.fixture
async def tarpit_linked() -> AsyncIterator[Linked]:
    """The deadline itself is under test: a short one."""
    async with linked_app(deadline=1.5) as running:
        yield running


@pytest.mark.parametrize(
    ("email", "branch", "result"),
    [
        ("alice@shop.test", "A", "deliverable"),
        ("bob@shop.test", "B", "undeliverable"),
        ("NULL", "B", "undeliverable"),  # CleverTap's stand-in for a missing email
    ],
)
async def test_liquid_branches_on_real_responses(
    linked: Linked, email: str, branch: str, result: str
) -> None:
    flat = await linked.fetch(email, flat="1")
    assert flat["result"] == flat["data"]["result"] == result
    assert liquid.render(FLAT, Linked={"Mail.so": flat}) == branch
    assert liquid.render(NESTED, Linked={"Mail.so": flat}) == branch
    nested = await linked.fetch(email)
    assert "result" not in nested
    assert liquid.render(NESTED, Linked={"Mail.so": nested}) == branch
    # without flat=1 the top-level form sees nothing: always the else branch
    assert liquid.render(FLAT, Linked={"Mail.so": nested}) == "B"


async def test_tarpit_gets_a_complete_unknown_before_the_deadline(
    tarpit_linked: Linked,
) -> None:
    body = await tarpit_linked.fetch("anyone@slow.test", flat="1", details="1")
    data = body["data"]
    assert list(data) == list(Verdict._fields)
    assert data["result"] == "unknown"
    assert data["reason"] == "timeout"
    assert data["email"] == "anyone@slow.test"
    assert data["domain"] == "slow.test"
    assert data["isv_format"] is True
    assert body["details"]["deadline_hit"] is True
    assert liquid.render(FLAT, Linked={"Mail.so": body}) == "B"


async def test_real_engine_through_the_app_settings(linked: Linked) -> None:
    # the app built its own Engine from the settings: the MX of the simulated zone shows
    data = (await linked.fetch("alice@shop.test"))["data"]
    assert data["mx_record"] == "mx.shop.test"
    assert data["isv_mx"] is True


class SlowAuthStore(MemoryStore):
    """A database that takes its time to find the key (a cold connection pool, say)."""

    async def authenticate(self, secret: str) -> Any:
        await asyncio.sleep(0.6)
        return await super().authenticate(secret)


async def test_slow_key_look_up_still_gets_the_engines_own_deadline_verdict() -> None:
    # The time budget counts from the request's arrival. The engine must get what is
    # left of it, so its own deadline (which keeps the DNS facts) ends first, rather
    # than the safety net (which knows only the offline facts).
    sim = SmtpSim(mailboxes("alice"), by_ip={"127.0.0.2": tarpit()})
    async with DnsServer(Zone(ZONE)) as dns, sim:
        settings = Settings(
            dns_nameservers=[dns.nameserver],
            smtp_port=sim.port,
            allow_private_mx=True,
            deadline=2.0,
            database_url="memory://",
        )
        store = SlowAuthStore()
        _, key = await store.create_key("clevertap", Plan.PAID)
        async with serve(create_app(settings, store=store)) as url:
            body = await Linked(url, key).fetch("anyone@slow.test", details="1")
    data = body["data"]
    assert (data["result"], data["reason"]) == ("unknown", "timeout")
    assert data["mx_record"] == "mx.slow.test"  # the DNS facts the engine had learned
    assert body["details"]["deadline_hit"] is True


# --- the 4.0 s bound at the default settings ---

ANSWER_BOUND = 4.0  # CleverTap's 5 s, less 1 s for the network and TLS
TARPITS = ["127.0.0.3", "127.0.0.4", "127.0.0.5"]


def three_mx(domain: str) -> dict[str, dict[str, list[Any]]]:
    """``domain`` with three MX hosts, each on a tarpit."""
    hosts = [f"mx{i}.{domain}" for i in (1, 2, 3)]
    zone: dict[str, dict[str, list[Any]]] = {
        domain: {"MX": [(10 * (i + 1), host) for i, host in enumerate(hosts)]}
    }
    for host, ip in zip(hosts, TARPITS, strict=True):
        zone[host] = {"A": [ip]}
    return zone


def budget_zone() -> Zone:
    zone = Zone({**three_mx("tarpit.test"), **three_mx("slowdns.test"), **three_mx("dead.test")})
    for name in ("slowdns.test", "mx1.slowdns.test", "mx2.slowdns.test", "mx3.slowdns.test"):
        zone.behave(name, Behaviour.SLOW, delay=0.4)  # slow, but answers
    zone.behave("dead.test", Behaviour.DROP)  # never answers
    return zone


class KeyStore(MemoryStore):
    """Key look-ups that take 1 s for the ``slow`` secrets and never end for ``stalled``."""

    def __init__(self) -> None:
        super().__init__()
        self.slow: set[str] = set()
        self.stalled: set[str] = set()

    async def authenticate(self, secret: str) -> ApiKey | None:
        if secret in self.stalled:
            await asyncio.sleep(3600)
        if secret in self.slow:
            await asyncio.sleep(1.0)
        return await super().authenticate(secret)


async def timed_get(
    client: httpx.AsyncClient, key: str, email: str
) -> tuple[float, httpx.Response]:
    """Seconds from before the request is sent (its connection included) to the answer."""
    started = time.monotonic()
    r = await client.get("/v1/validate", params={"email": email}, headers={"x-mails-api-key": key})
    return time.monotonic() - started, r


async def test_every_answer_at_default_settings_arrives_within_four_seconds() -> None:
    sim = SmtpSim(mailboxes("alice"), by_ip={ip: tarpit() for ip in TARPITS})
    async with DnsServer(budget_zone()) as dns, sim:
        settings = Settings(  # the defaults, pointed at the simulated internet
            dns_nameservers=[dns.nameserver],
            smtp_port=sim.port,
            allow_private_mx=True,
            database_url="memory://",
        )
        store = KeyStore()
        _, key = await store.create_key("fast", Plan.PAID)
        _, slow = await store.create_key("slow", Plan.PAID)
        _, stalled = await store.create_key("stalled", Plan.PAID)
        store.slow.add(slow)
        store.stalled.add(stalled)
        cases = [
            (key, "alice@tarpit.test"),  # three tarpit MX hosts
            (key, "alice@slowdns.test"),  # slow DNS for the domain and its MX hosts, then tarpits
            (key, "alice@dead.test"),  # a DNS server that never answers
            (slow, "bob@tarpit.test"),  # a slow key look-up, then tarpits
            (stalled, "carol@tarpit.test"),  # a key look-up that never ends
        ]
        async with (
            serve(create_app(settings, store=store)) as url,
            httpx.AsyncClient(base_url=url, timeout=15.0) as client,
        ):
            answers = await asyncio.gather(*(timed_get(client, k, e) for k, e in cases))
    for (_, email), (elapsed, r) in zip(cases, answers, strict=True):
        assert elapsed < ANSWER_BOUND, (email, elapsed)
        if email.startswith("carol"):
            assert r.status_code == 503
            continue
        assert r.status_code == 200
        data = r.json()["data"]
        assert (data["result"], data["reason"]) == ("unknown", "timeout"), email
    assert len(sim.sessions) >= 4  # the tarpits were reached: the budget ran out there

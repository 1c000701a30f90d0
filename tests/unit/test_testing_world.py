"""The world of `mailvet sim`: deterministic, and every domain and example does what it says."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from mailvet.engine.pipeline import Engine
from mailvet.settings import Settings
from mailvet.testing.internet import STANDARD_SITES, STANDARD_ZONE, SimInternet
from mailvet.testing.world import (
    EXAMPLES,
    ORDINARY_COUNT,
    Example,
    OrdinaryDomain,
    ordinary_domains,
    sim_world,
)
from mailvet.verdict import Verdict

_FINGERPRINT = (
    "import hashlib; from mailvet.testing.world import ordinary_domains; "
    "print(hashlib.sha256(repr(ordinary_domains()).encode()).hexdigest())"
)


def test_a_few_hundred_distinct_realistic_domains() -> None:
    domains = ordinary_domains()
    assert len(domains) == ORDINARY_COUNT >= 200
    names = [d.name for d in domains]
    assert len(set(names)) == len(names)
    assert all(n.endswith(".test") and n == n.lower() for n in names)
    assert not set(names) & (set(STANDARD_SITES) | set(STANDARD_ZONE))  # scripted sites stay
    assert all(len(d.mailboxes) >= 2 for d in domains)
    assert any(len(d.mx_hosts) == 2 for d in domains)  # some with a backup MX


def test_the_same_domains_on_every_run() -> None:
    assert ordinary_domains() == ordinary_domains()
    assert ordinary_domains(10) == ordinary_domains()[:10]  # a smaller world is a prefix
    here = hashlib.sha256(repr(ordinary_domains()).encode()).hexdigest()
    # another interpreter with another hash seed builds the very same world
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", _FINGERPRINT], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert there == here


def test_count_is_bounded() -> None:
    with pytest.raises(ValueError, match="count"):
        ordinary_domains(10**6)


@pytest.fixture
async def world() -> AsyncIterator[SimInternet]:
    async with sim_world() as net:
        yield net


@pytest.fixture
async def engine(world: SimInternet, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    """An engine set up the way a user of `mailvet sim` gets it: its MAILVET_* lines."""
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    eng = Engine(Settings())
    yield eng
    await eng.close()


async def _verify_all(engine: Engine, emails: list[str]) -> dict[str, Verdict]:
    sem = asyncio.Semaphore(32)

    async def one(email: str) -> tuple[str, Verdict]:
        async with sem:
            return email, (await engine.verify(email)).verdict

    return dict(await asyncio.gather(*(one(e) for e in emails)))


async def test_every_ordinary_domain_resolves_and_takes_its_mailboxes(
    world: SimInternet, engine: Engine
) -> None:
    domains = ordinary_domains()
    good = [f"{box}@{d.name}" for d in domains for box in d.mailboxes]
    bad = [f"no.such.person@{d.name}" for d in domains]
    got = await _verify_all(engine, good + bad)
    verdicts = {e: (v.result.value, v.reason.value) for e, v in got.items()}
    assert {verdicts[e] for e in good} == {("deliverable", "accepted_email")}
    assert {verdicts[e] for e in bad} == {("undeliverable", "rejected_email")}
    assert {got[f"{d.mailboxes[0]}@{d.name}"].mx_record for d in domains} == {
        d.mx_hosts[0] for d in domains
    }
    # every name was asked of the simulated DNS server, none was made up by the resolver
    asked = {q.name for q in world.dns.log if q.rtype == "MX"}
    assert {d.name for d in domains} <= asked


def test_records_are_what_a_hoster_publishes() -> None:
    d = OrdinaryDomain(
        "acme.test", ("mx1.acme.test", "mx2.acme.test"), ("info",), "exim", "127.0.1.1"
    )
    assert d.records() == {
        "acme.test": {
            "MX": [(10, "mx1.acme.test"), (20, "mx2.acme.test")],
            "TXT": ["v=spf1 mx -all"],
        },
        "mx1.acme.test": {"A": ["127.0.1.1"]},
        "mx2.acme.test": {"A": ["127.0.1.1"]},
    }


def test_examples_cover_every_result() -> None:
    assert {e.result for e in EXAMPLES} == {"deliverable", "undeliverable", "risky", "unknown"}
    reasons = {e.reason for e in EXAMPLES}
    assert {
        "accepted_email",
        "rejected_email",
        "invalid_domain",
        "invalid_format",
        "catch_all",
        "disposable",
        "mailbox_full",
        "no_connect",
        "timeout",
        "unavailable_smtp",
        "invalid_smtp",
    } <= reasons
    first = ordinary_domains(1)[0]
    assert any(e.email.endswith("@" + first.name) for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.email for e in EXAMPLES])
async def test_each_example_shows_the_verdict_printed(engine: Engine, example: Example) -> None:
    v = (await engine.verify(example.email)).verdict
    assert (v.result.value, v.reason.value) == (example.result, example.reason)

"""The batch engine (BatchRunner + Scheduler + SMTP sessions) on the simulated internet.

Caps are asserted from the simulated servers' own counters (sessions open at once,
connection and RCPT times, RCPTs per address), never from the engine's view of itself.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from mailvet.engine.pipeline import Engine
from mailvet.jobs.inprocess import BatchRunner
from mailvet.jobs.limits import MAX_GROUP, Backoff
from mailvet.storage.base import Plan
from mailvet.storage.memory import MemoryStore
from mailvet.testing import smtp as sim
from mailvet.testing.internet import STANDARD_SITES, STANDARD_ZONE, SimInternet

Verdicts = dict[str, dict[str, Any]]


def fast_options() -> dict[str, Any]:
    """Back-off and give-up bounds short enough for a test."""
    return {"backoff": Backoff(base=0.05, cap=0.2), "max_lane_failures": 3}


async def run_batch(net: SimInternet, emails: Sequence[str], **overrides: Any) -> Verdicts:
    values: dict[str, Any] = {
        "batch_connect_timeout": 1.0,
        "batch_command_timeout": 1.0,
        "batch_session_timeout": 30.0,
    }
    values.update(overrides)
    settings = net.settings(**values)
    engine = Engine(settings)
    store = MemoryStore()
    key, _ = await store.create_key("k", Plan.PAID)
    record = await store.create_batch(key.id, None, list(emails))
    runner = BatchRunner(store, engine, settings, scheduler_options=fast_options())
    runner.start()
    try:
        await asyncio.wait_for(runner.wait_idle(), 120)
    finally:
        await runner.stop()
        await engine.close()
    items = [i async for i in store.iter_items(record.id)]
    assert [i.email for i in items] == list(emails)
    out: Verdicts = {}
    for item in items:
        assert item.verdict is not None, item.email
        out[item.email] = item.verdict
    finished = await store.get_batch(key.id, record.id)
    assert finished is not None and finished.finished_at is not None
    return out


def rcpts_by_address(smtp: sim.SmtpSim) -> Counter[str]:
    counts: Counter[str] = Counter()
    for session in smtp.sessions:
        for command in session.commands:
            if command.upper().startswith("RCPT TO:<"):
                counts[command[9:].split(">", 1)[0].lower()] += 1
    return counts


def max_in_window(times: Sequence[float], window: float) -> int:
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def site_ip(sites: Mapping[str, sim.Behaviour], domain: str) -> str:
    """The loopback address ``SimInternet`` gives the MX of ``domain`` (in site order)."""
    return f"127.0.0.{10 + list(sites).index(domain)}"


# --- a mixed list ------------------------------------------------------------------

MIXED: Mapping[str, tuple[str, str]] = {
    "alice@deliverable.test": ("deliverable", "accepted_email"),
    "bob@deliverable.test": ("deliverable", "accepted_email"),
    "nobody@deliverable.test": ("undeliverable", "rejected_email"),
    "alice@postfix.test": ("deliverable", "accepted_email"),
    "ghost@postfix.test": ("undeliverable", "rejected_email"),
    "anyone@catchall.test": ("risky", "catch_all"),
    "x@full.test": ("risky", "mailbox_full"),
    "x@disabled.test": ("undeliverable", "rejected_email"),
    "alice@nopipelining.test": ("deliverable", "accepted_email"),
    "ghost@nopipelining.test": ("undeliverable", "rejected_email"),
    "alice@starttls.test": ("deliverable", "accepted_email"),
    "alice@noehlo.test": ("deliverable", "accepted_email"),
    "x@yahoo.test": ("unknown", "unverifiable"),
    "x@mailinator.com": ("risky", "disposable"),
    "x@nullmx.test": ("undeliverable", "invalid_domain"),
    "x@nomail.test": ("undeliverable", "invalid_domain"),
    "x@nowhere.test": ("undeliverable", "invalid_domain"),
    "x@servfail.test": ("unknown", "dns_error"),
    "not an address": ("undeliverable", "invalid_format"),
    "x@greylist.test": ("unknown", "greylisted"),  # "try again in 3600 s" > max wait
    "x@blocked.test": ("unknown", "unavailable_smtp"),  # Spamhaus names our IP: back-off
    "x@blockedmail.test": ("unknown", "unavailable_smtp"),  # MAIL FROM refused
    "x@banner421.test": ("unknown", "unavailable_smtp"),
    "x@deadmx.test": ("unknown", "no_connect"),
    "x@tarpit.test": ("unknown", "timeout"),
}


async def test_a_mixed_list_reaches_the_right_verdict_for_every_address() -> None:
    async with SimInternet(STANDARD_SITES, STANDARD_ZONE) as net:
        verdicts = await run_batch(net, list(MIXED))
        asked = rcpts_by_address(net.smtp)
    got = {email: (v["result"], v["reason"]) for email, v in verdicts.items()}
    assert got == dict(MIXED)
    assert verdicts["alice@deliverable.test"]["isv_nocatchall"] is True
    assert verdicts["alice@deliverable.test"]["mx_record"] == "mx.deliverable.test"
    # an address the server answered was asked once (back-offs re-ask only the blocked)
    for email in ("alice@deliverable.test", "nobody@deliverable.test", "anyone@catchall.test"):
        assert asked[email] == 1, email


# --- caps and session reuse ------------------------------------------------------------


async def test_per_mx_caps_hold_and_one_session_checks_many_recipients() -> None:
    known = [f"u{i}" for i in range(400) if i % 10]
    sites = {"big.test": sim.mailboxes(*known, style="postfix", latency_ms=1)}
    emails = [f"u{i}@big.test" for i in range(400)]
    async with SimInternet(sites, {}) as net:
        verdicts = await run_batch(
            net,
            emails,
            mx_max_sessions=2,
            mx_rcpt_per_session=50,
            mx_rcpt_per_second=100.0,
            mx_connects_per_minute=30,
        )
        ip = site_ip(sites, "big.test")
        peak = net.smtp.max_concurrent(ip)
        connects = net.smtp.connects(ip)
        rcpt_times = net.smtp.rcpt_times(ip)
        asked = rcpts_by_address(net.smtp)
    for i, email in enumerate(emails):
        assert verdicts[email]["result"] == ("undeliverable" if i % 10 == 0 else "deliverable")
    assert 1 <= peak <= 2
    assert max_in_window(connects, 60.0) <= 30
    burst = min(MAX_GROUP, 100)
    for window in (0.5, 1.0, 2.0):
        # the bucket's bound (burst + rate * window), plus one group for the time the
        # commands spend between the limiter and the server
        assert max_in_window(rcpt_times, window) <= 2 * burst + 100.0 * window, window
    assert len(connects) / len(emails) < 0.1  # sessions per address on a big MX
    assert all(asked[e] == 1 for e in emails)  # every address asked exactly once


async def test_two_batches_on_one_mx_share_its_session_cap() -> None:
    sites = {"shared.test": sim.accept(latency_ms=2)}
    async with SimInternet(sites, {}) as net:
        settings = net.settings(
            mx_max_sessions=1,
            mx_rcpt_per_session=10,
            mx_rcpt_per_second=100.0,
            batch_connect_timeout=1.0,
            batch_command_timeout=1.0,
        )
        engine = Engine(settings)
        store = MemoryStore()
        key, _ = await store.create_key("k", Plan.PAID)
        a = await store.create_batch(key.id, "a", [f"a{i}@shared.test" for i in range(40)])
        b = await store.create_batch(key.id, "b", [f"b{i}@shared.test" for i in range(40)])
        runner = BatchRunner(store, engine, settings, scheduler_options=fast_options())
        runner.start()
        await asyncio.wait_for(runner.wait_idle(), 60)
        await runner.stop()
        await engine.close()
        peak = net.smtp.max_concurrent(site_ip(sites, "shared.test"))
    assert peak == 1
    for record in (a, b):
        items = [i async for i in store.iter_items(record.id)]
        assert all(i.verdict is not None and i.verdict["reason"] == "catch_all" for i in items)


# --- servers that end sessions ---------------------------------------------------------


async def test_a_server_with_an_error_limit_still_gets_every_address_checked() -> None:
    # Postfix smtpd_hard_error_limit 3: "421 4.7.0 Error: too many errors" and close
    sites = {"strict.test": sim.mailboxes("alice", "bob", style="postfix", error_limit=3)}
    emails = [f"nobody{i}@strict.test" for i in range(30)] + [
        "alice@strict.test",
        "bob@strict.test",
    ]
    async with SimInternet(sites, {}) as net:
        verdicts = await run_batch(net, emails, mx_rcpt_per_session=50)
        sessions = len(net.smtp.connects(site_ip(sites, "strict.test")))
        asked = rcpts_by_address(net.smtp)
    for email in emails:
        expected = "deliverable" if email.startswith(("alice", "bob")) else "undeliverable"
        assert verdicts[email]["result"] == expected, email
    assert sessions > 3  # the server ended sessions; the rest went to new ones
    assert all(asked[e] == 1 for e in emails)  # nothing asked twice: answers were kept


async def test_a_server_that_says_421_after_n_recipients_still_gets_every_address() -> None:
    sites = {"capped.test": sim.mailboxes("alice", style="postfix", max_rcpts_per_session=4)}
    emails = [f"user{i}@capped.test" for i in range(25)] + ["alice@capped.test"]
    async with SimInternet(sites, {}) as net:
        verdicts = await run_batch(net, emails, mx_rcpt_per_session=50)
    assert verdicts["alice@capped.test"]["result"] == "deliverable"
    for email in emails[:-1]:
        assert (verdicts[email]["result"], verdicts[email]["reason"]) == (
            "undeliverable",
            "rejected_email",
        )


# --- greylisting ------------------------------------------------------------------------


async def test_a_greylisted_address_is_retried_after_the_delay_and_becomes_deliverable() -> None:
    sites = {
        "grey.test": sim.greylist(delay=1.0, then=sim.mailboxes("alice", style="postfix")),
        "plain.test": sim.mailboxes("alice", style="postfix"),
    }
    emails = ["alice@grey.test", "nobody@grey.test", "alice@plain.test"]
    async with SimInternet(sites, {}) as net:
        verdicts = await run_batch(
            net, emails, greylist_schedule=[1.0, 1.0, 1.0], greylist_max_wait=60.0
        )
        asked = rcpts_by_address(net.smtp)
    assert (verdicts["alice@grey.test"]["result"], verdicts["alice@grey.test"]["reason"]) == (
        "deliverable",
        "accepted_email",
    )
    assert verdicts["nobody@grey.test"]["result"] == "undeliverable"
    assert verdicts["alice@plain.test"]["result"] == "deliverable"
    assert asked["alice@grey.test"] == 2  # greylisted once, then accepted
    assert asked["alice@plain.test"] == 1


async def test_a_tarpit_holds_up_only_its_own_lane() -> None:
    sites = {
        "tarpit.test": sim.tarpit(at="RCPT", rate=2.0),
        **{f"d{i}.test": sim.mailboxes("alice", style="postfix") for i in range(10)},
    }
    emails = ["x@tarpit.test"] + [f"alice@d{i}.test" for i in range(10)]
    async with SimInternet(sites, {}) as net:
        settings = net.settings(batch_connect_timeout=1.0, batch_command_timeout=1.0)
        engine = Engine(settings)
        store = MemoryStore()
        key, _ = await store.create_key("k", Plan.PAID)
        record = await store.create_batch(key.id, None, emails)
        order: list[str] = []
        runner = BatchRunner(
            store,
            engine,
            settings,
            on_checked=lambda checked: order.append(checked.verdict.email),
            scheduler_options=fast_options(),
        )
        runner.start()
        await asyncio.wait_for(runner.wait_idle(), 60)
        await runner.stop()
        await engine.close()
    assert order[-1] == "x@tarpit.test"  # first in the list, last to be decided
    assert sorted(order[:-1]) == sorted(emails[1:])
    items = [i async for i in store.iter_items(record.id)]
    tarpit = items[0].verdict
    assert tarpit is not None and tarpit["result"] == "unknown"


async def test_catch_all_checks_count_against_the_recipients_per_session_cap() -> None:
    # ten domains hosted on one MX, which ends a session after 10 RCPTs: the catch-all
    # checks are RCPTs too, so a session of 10 addresses plus their checks would be cut
    # short and leave the catch-all domains "deliverable"
    zone: dict[str, dict[str, list[Any]]] = {"mx.hosting.test": {"A": ["127.0.0.60"]}}
    domains = [f"d{i}.test" for i in range(10)]
    for domain in domains:
        zone[domain] = {"MX": [(10, "mx.hosting.test")]}
    by_ip = {"127.0.0.60": sim.catch_all(max_rcpts_per_session=10)}
    emails = [f"{name}@{domain}" for domain in domains for name in ("alice", "bob")]
    async with SimInternet({}, zone, by_ip=by_ip) as net:
        verdicts = await run_batch(net, emails, mx_rcpt_per_session=10, mx_rcpt_per_second=100.0)
        per_session = [s.count("RCPT") for s in net.smtp.sessions]
    for email in emails:
        assert (verdicts[email]["result"], verdicts[email]["reason"]) == ("risky", "catch_all"), (
            per_session
        )
    assert max(per_session) <= 10, per_session

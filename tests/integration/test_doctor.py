"""``mailvet doctor`` against the simulated internet."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from rich.console import Console

from mailvet.doctor import Check, diagnose, run_doctor
from mailvet.testing.internet import SimInternet


@pytest.fixture
async def net() -> AsyncIterator[SimInternet]:
    async with SimInternet() as world:
        yield world


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


async def test_healthy_host(net: SimInternet) -> None:
    settings = net.settings(mail_from="probe@deliverable.test")
    checks = by_name(await diagnose(settings, "deliverable.test"))
    assert checks["resolver"].ok and "mx.deliverable.test" in checks["resolver"].detail
    assert checks["smtp port"].ok and "220" in checks["smtp port"].detail
    assert checks["mail from"].ok
    # we leave from 127.0.0.1: a private address, so the PTR advice is a warning
    ptr = checks["ptr/helo"]
    assert not ptr.ok and not ptr.fatal and "private" in ptr.detail
    console = Console(record=True, width=200)
    assert await run_doctor(settings, "deliverable.test", console)
    assert "this host can verify addresses" in console.export_text()


async def test_port_25_blocked(net: SimInternet) -> None:
    checks = by_name(await diagnose(net.settings(), "deadmx.test"))
    assert not checks["smtp port"].ok
    assert "MAILVET_SOCKS_PROXY" in checks["smtp port"].detail


async def test_private_mx_not_probed_by_default(net: SimInternet) -> None:
    checks = by_name(await diagnose(net.settings(allow_private_mx=False), "deliverable.test"))
    assert not checks["smtp port"].ok
    assert net.smtp.sessions == []


async def test_dead_resolver() -> None:
    async with SimInternet() as world:
        settings = world.settings(dns_nameservers=["127.0.0.1:9"], dns_timeout=0.3)
        console = Console(record=True, width=200)
        assert not await run_doctor(settings, "deliverable.test", console)
    assert "MAILVET_DNS_NAMESERVERS" in console.export_text()

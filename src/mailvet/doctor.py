"""``mailvet doctor``: can this host verify addresses at all? Say what to fix.

Checks, in order: the resolver answers; an MX host's SMTP port is reachable from
here (many clouds block outbound port 25); the address we leave from has a PTR that
agrees with ``MAILVET_HELO_NAME`` (forward-confirmed); the envelope sender's domain
takes mail (receivers check it). Only the first two are fatal: without them every
verdict would be ``unknown``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename
from rich.console import Console

from mailvet.engine.dns import DnsStage, make_resolver
from mailvet.engine.facts import DnsOutcome
from mailvet.engine.netpolicy import is_public_address
from mailvet.engine.smtp import open_smtp_connection
from mailvet.settings import Settings

__all__ = ["Check", "diagnose", "run_doctor"]

_BANNER_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fatal: bool = True


async def _names(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[str]:
    try:
        answer = await resolver.resolve(name, rdtype)
    except (dns.exception.DNSException, ValueError):
        return []
    return [r.to_text().rstrip(".").lower() for r in answer]


async def _connect(settings: Settings, address: str) -> tuple[str, str]:
    """Open the SMTP port, read the banner; return (our local address, banner line)."""
    reader, writer = await open_smtp_connection(settings, address)
    try:
        # a scoped IPv6 address ("fe80::1%eth0") is not something ipaddress parses
        local = str(writer.get_extra_info("sockname")[0]).split("%", 1)[0]
        async with asyncio.timeout(settings.smtp_command_timeout):
            banner = await reader.read(_BANNER_LIMIT)
            writer.write(b"QUIT\r\n")
            await writer.drain()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return local, banner.decode("ascii", "replace").splitlines()[0] if banner else ""


async def diagnose(settings: Settings, probe_domain: str) -> list[Check]:
    """Run every check against ``probe_domain``'s mail hosts; never raises."""
    checks: list[Check] = []
    servers = ", ".join(settings.dns_nameservers) or "system resolver"
    try:
        resolver = make_resolver(settings)
        stage = DnsStage(settings)
    except Exception as exc:  # e.g. no /etc/resolv.conf and no MAILVET_DNS_NAMESERVERS
        checks.append(Check("resolver", False, f"{servers}: {exc}; set MAILVET_DNS_NAMESERVERS"))
        return checks
    try:
        facts = await stage.lookup(probe_domain)
    finally:
        await stage.close()
    if facts.outcome is not DnsOutcome.OK:
        checks.append(Check("resolver", False, f"{servers}: MX of {probe_domain} -> "
                            f"{facts.outcome.value} {facts.error or ''}".rstrip()
                            + "; set MAILVET_DNS_NAMESERVERS to a working resolver"))
        return checks
    mx_list = ", ".join(f"{m.host} ({m.preference})" for m in facts.mx_hosts)
    checks.append(Check("resolver", True, f"{servers}: MX of {probe_domain} -> {mx_list}"))

    targets = [(m.host, a) for m in facts.mx_hosts for a in m.addresses]
    if not settings.allow_private_mx:
        targets = [(h, a) for h, a in targets if is_public_address(a)]
    local = None
    errors: list[str] = []
    for host, address in targets[:3]:
        try:
            local, banner = await _connect(settings, address)
        except Exception as exc:  # refused, timed out, proxy error: each is a finding
            errors.append(f"{host} [{address}]:{settings.smtp_port}: {exc or type(exc).__name__}")
            continue
        checks.append(Check("smtp port", True,
                            f"{host} [{address}]:{settings.smtp_port} answers: {banner[:120]}"))
        break
    if local is None:
        hint = ("outbound port 25 is probably blocked here: ask the provider to open it, "
                "or set MAILVET_SOCKS_PROXY to a host that can reach it")
        detail = "; ".join(errors) if errors else "no usable MX address (private ones refused)"
        checks.append(Check("smtp port", False, f"{detail}; {hint}"))
        return checks

    helo = settings.helo_name.rstrip(".").lower()
    ip = ipaddress.ip_address(local)
    if not is_public_address(local):
        checks.append(Check("ptr/helo", False, fatal=False, detail=(
            f"we leave from {local}, a private address (NAT?): make sure the PTR of the "
            f"public address is {helo} and that {helo} resolves back to it")))
    else:
        ptrs = await _names(resolver, dns.reversename.from_address(str(ip)).to_text(), "PTR")
        forward = await _names(resolver, helo, "AAAA" if ip.version == 6 else "A")
        agree = helo in ptrs and str(ip) in forward
        checks.append(Check("ptr/helo", agree, fatal=False, detail=(
            f"{local} PTR {ptrs or 'none'}; {helo} -> {forward or 'nothing'}"
            + ("" if agree else f": set the PTR of {local} to {helo}, {helo} to {local}, "
               "or MAILVET_HELO_NAME to the PTR name"))))

    sender_domain = settings.mail_from.rpartition("@")[2]
    stage = DnsStage(settings)
    try:
        sender = await stage.lookup(sender_domain)
    finally:
        await stage.close()
    checks.append(Check("mail from", sender.outcome is DnsOutcome.OK, fatal=False, detail=(
        f"{settings.mail_from}: domain {sender.outcome.value}"
        + ("" if sender.outcome is DnsOutcome.OK else
           "; receivers may refuse a sender whose domain takes no mail: set MAILVET_MAIL_FROM"))))
    return checks


async def run_doctor(settings: Settings, probe_domain: str, console: Console) -> bool:
    """Print the checks; True when nothing fatal failed."""
    checks = await diagnose(settings, probe_domain)
    for check in checks:
        mark = "[green]ok  [/green]" if check.ok else (
            "[red]FAIL[/red]" if check.fatal else "[yellow]warn[/yellow]")
        console.print(f"{mark} {check.name:<10} {check.detail}")
    ok = all(c.ok or not c.fatal for c in checks)
    console.print("this host can verify addresses" if ok else "this host cannot verify yet")
    return ok

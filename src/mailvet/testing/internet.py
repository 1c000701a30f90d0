"""A whole simulated internet in one object: DNS and SMTP on loopback, per-domain scenarios.

Each mail domain gets its own MX host name and its own loopback address
(127.0.0.10, 127.0.0.11, ...), so connection-level behaviours (tarpit, 421 banner,
garbage) stay with their domain while one SMTP port serves them all. DNS-only
scenarios (NXDOMAIN, null MX, SERVFAIL, slow answers) are zone entries.

    async with SimInternet(STANDARD_SITES) as net:
        engine = Engine(net.settings(deadline=2.0))
        checked = await engine.verify("alice@deliverable.test")

``STANDARD_SITES`` / ``STANDARD_ZONE`` cover every row of the verdict table and every
scripted behaviour; tests and benchmarks share them so they speak about the same world.
``mailvet sim`` serves them too, with a few hundred ordinary domains on top
(:mod:`mailvet.testing.world`): domains whose RCPT replies come from ``by_domain`` and
whose MX hosts share a few "hosting" addresses given in ``by_ip``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Self

from mailvet.settings import Settings
from mailvet.testing import smtp as sim
from mailvet.testing.dns import Behaviour as DnsBehaviour
from mailvet.testing.dns import DnsServer, Zone, run_dns_server_in_thread

__all__ = [
    "STANDARD_SITES",
    "STANDARD_ZONE",
    "SimInternet",
    "build_zone",
    "sim_internet_thread",
    "simulated_getaddrinfo",
]

_FIRST_HOST = 10  # 127.0.0.10 upwards; 127.0.0.1 stays the DNS server's


def _mailboxes() -> sim.Behaviour:
    return sim.mailboxes("alice", "bob", "info", "sales", style="gmail")


# domain -> behaviour of its only MX. Mailboxes alice/bob/info/sales exist where it matters.
STANDARD_SITES: dict[str, sim.Behaviour] = {
    "deliverable.test": _mailboxes(),
    "postfix.test": sim.mailboxes("alice", style="postfix"),
    "exim.test": sim.mailboxes("alice", style="exim"),
    "microsoft.test": sim.mailboxes("alice", style="microsoft"),
    "catchall.test": sim.catch_all(),
    "greylist.test": sim.greylist(delay=3600),
    "full.test": sim.mailbox_full(),
    "fullperm.test": sim.mailbox_full(permanent=True),
    "disabled.test": sim.disabled(),
    "blocked.test": sim.policy_block(at="rcpt", style="spamhaus"),
    "blockedmail.test": sim.policy_block(at="mail", style="outlook"),
    "banner421.test": sim.banner_421(),
    "tarpit.test": sim.tarpit(),
    "endless.test": sim.endless_multiline(),
    "hugeline.test": sim.huge_line(),
    "closebanner.test": sim.close_after_banner(),
    "closemail.test": sim.close_after_mail(),
    "garbage.test": sim.garbage(),
    "starttls.test": sim.mailboxes("alice", style="postfix", starttls="required"),
    "nopipelining.test": sim.mailboxes("alice", style="postfix", pipelining=False),
    "noehlo.test": sim.mailboxes("alice", style="postfix", ehlo_supported=False),
    "slowsmtp.test": sim.mailboxes("alice", style="gmail", latency_ms=50),
    "mailinator.com": sim.accept(),  # a disposable domain that takes mail
    "yahoo.test": sim.accept(),  # MX under yahoodns.net: acceptance proves little
}

# DNS-only scenarios and extra records, merged over the generated zone.
STANDARD_ZONE: dict[str, dict[str, list[Any]]] = {
    "nullmx.test": {"MX": [(0, ".")]},
    "nomail.test": {"TXT": ["v=spf1 -all"]},  # exists, no MX, no A/AAAA
    "implicit.test": {"A": ["127.0.0.10"]},  # no MX: the domain itself is the mail host
    "servfail.test": {},
    "slowdns.test": {},
    "deadmx.test": {"MX": [(10, "mx.deadmx.test")]},
    "mx.deadmx.test": {"A": ["127.0.0.254"]},  # nothing listens there: no_connect
    "private.test": {"MX": [(10, "mx.private.test")]},
    "mx.private.test": {"A": ["127.0.0.10"]},  # loopback MX: refused unless allowed
}
_DNS_BEHAVIOURS = {"servfail.test": DnsBehaviour.SERVFAIL, "slowdns.test": DnsBehaviour.SLOW}


def build_zone(
    sites: Mapping[str, sim.Behaviour], extra: Mapping[str, Mapping[str, list[Any]]]
) -> tuple[Zone, dict[str, sim.Behaviour]]:
    """The DNS zone for ``sites`` plus ``extra``, and the SMTP behaviour per address."""
    records: dict[str, dict[str, list[Any]]] = {}
    by_ip: dict[str, sim.Behaviour] = {}
    for i, (domain, behaviour) in enumerate(sites.items()):
        ip = f"127.0.0.{_FIRST_HOST + i}"
        label = "mta5.am0.yahoodns.net" if domain == "yahoo.test" else f"mx.{domain}"
        records[domain] = {"MX": [(10, label)]}
        records[label] = {"A": [ip]}
        by_ip[ip] = behaviour
    for name, rrs in extra.items():
        records.setdefault(name, {}).update(rrs)
    zone = Zone(records)
    for name, dns_behaviour in _DNS_BEHAVIOURS.items():
        if name in extra:
            zone.behave(name, dns_behaviour, delay=30.0)
    return zone, by_ip


class SimInternet:
    """DNS server + SMTP simulator on loopback; ``settings()`` points the engine at them.

    ``by_domain`` answers RCPT per recipient domain (whatever address the MX is on);
    ``by_ip`` adds listening addresses (with their connection behaviour) to the sites'
    own. ``dns_port`` / ``smtp_port`` 0 pick free ports.
    """

    def __init__(
        self,
        sites: Mapping[str, sim.Behaviour] = STANDARD_SITES,
        extra_zone: Mapping[str, Mapping[str, list[Any]]] = STANDARD_ZONE,
        *,
        by_domain: Mapping[str, sim.Behaviour] | None = None,
        by_ip: Mapping[str, sim.Behaviour] | None = None,
        dns_port: int = 0,
        smtp_port: int = 0,
    ) -> None:
        self.zone, site_ips = build_zone(sites, extra_zone)
        self.dns = DnsServer(self.zone, port=dns_port)
        self.smtp = sim.SmtpSim(
            sim.accept(),
            by_ip={**(by_ip or {}), **site_ips},
            by_domain=by_domain,
            port=smtp_port,
        )

    def env(self) -> dict[str, str]:
        """The ``MAILVET_*`` variables that point a ``mailvet`` process at this world.

        Timeouts and deadline stay at their defaults, so what a newcomer sees is what a
        real host would show.
        """
        return {
            "MAILVET_DNS_NAMESERVERS": self.dns.nameserver,
            "MAILVET_SMTP_PORT": str(self.smtp.port),
            "MAILVET_ALLOW_PRIVATE_MX": "true",  # every simulated MX is on 127.0.0.0/8
            "MAILVET_ALLOWED_SPECIAL_DOMAINS": "test",  # the world's names end in .test
        }

    def forget(self, keep: int = 1000) -> None:
        """Drop all but the last ``keep`` recorded queries and SMTP sessions.

        Tests read those records; a long-running ``mailvet sim`` trims them so its memory
        stays bounded however many checks it answers.
        """
        del self.dns.log[: max(0, len(self.dns.log) - keep)]
        del self.smtp.sessions[: max(0, len(self.smtp.sessions) - keep)]

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "dns_nameservers": [self.dns.nameserver],
            "dns_timeout": 1.0,
            "smtp_port": self.smtp.port,
            "allow_private_mx": True,
            "smtp_connect_timeout": 1.0,
            "smtp_command_timeout": 1.0,
            "deadline": 3.0,
            # the simulated internet lives under the special-use name "test" (RFC 6761)
            "allowed_special_domains": ["test"],
        }
        values.update(overrides)
        return Settings(**values)

    async def __aenter__(self) -> Self:
        await self.dns.start()
        try:
            await self.smtp.start()
        except BaseException:
            await self.dns.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.smtp.stop()
        await self.dns.close()


@contextlib.contextmanager
def sim_internet_thread(
    sites: Mapping[str, sim.Behaviour] = STANDARD_SITES,
    extra_zone: Mapping[str, Mapping[str, list[Any]]] = STANDARD_ZONE,
) -> Iterator[tuple[DnsServer, sim.SmtpSimThread]]:
    """The same world on background threads, for sync code and benchmarks."""
    zone, by_ip = build_zone(sites, extra_zone)
    with run_dns_server_in_thread(zone) as dns_server, sim.SmtpSimThread(
        sim.SmtpSim(sim.accept(), by_ip=by_ip)
    ) as smtp_thread:
        yield dns_server, smtp_thread


@contextmanager
def simulated_getaddrinfo(hosts: dict[str, str]) -> Iterator[None]:
    """Resolve the simulated host names in-process (``socket.getaddrinfo``); refuse every
    other name. For peers that resolve through the system (py3-validate-email in
    bench/single.py and bench/batch.py): nothing they look up can leave loopback."""
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in hosts:
            return real(hosts[name], *args, **kwargs)
        if name and name.startswith("127."):
            return real(name, *args, **kwargs)
        raise socket.gaierror(f"bench: {name!r} is not in the simulated internet")

    socket.getaddrinfo = fake
    try:
        yield
    finally:
        socket.getaddrinfo = real

"""Plan a slice of a batch: offline verdicts, and lane work grouped by MX host.

For each work item (one distinct address of a batch, ``Store.next_work``):

- the offline stages (syntax, lists) decide it when they can: bad syntax, a denied
  domain, a special-use name;
- otherwise its domain's mail hosts are looked up, once per batch (a per-planner memo
  over the DNS stage, which has its own cache and single flight); a domain that takes no
  mail, a DNS failure, a disposable domain or no MX host we may connect to is decided
  here too, as the real-time pipeline would decide it;
- the rest become :class:`LaneWork` on the lane of the MX host that will be asked: the
  first host, in the DNS stage's order (preference, random among equals), with an
  address the private-address policy allows. The item carries its facts (syntax,
  lists, DNS, provider) so the scheduler only adds the SMTP answer before ``decide``.

Nothing here talks SMTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mailvet.engine.facts import DnsFacts, DnsOutcome, Facts, MxHost, SmtpFacts, SmtpOutcome
from mailvet.engine.netpolicy import is_public_address
from mailvet.engine.pipeline import _literal_host
from mailvet.engine.protocol import Checked
from mailvet.engine.providers import Provider, provider_for
from mailvet.engine.scoring import decide
from mailvet.engine.transcript import Transcript
from mailvet.jobs.limits import LaneLimits, limits_for
from mailvet.settings import Settings

__all__ = ["LaneWork", "Plan", "Planner", "Route", "Work"]

_MAX_DOMAINS = 100_000  # per-batch memo of DNS answers; cleared when full
_LOOKUPS_AT_ONCE = 32
_MAX_ADDRESSES = 2  # addresses of the lane's host tried, as the real-time probe does


class Work(Protocol):
    """What the planner needs of a ``storage.base.WorkItem``."""

    @property
    def key(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def first_try_at(self) -> datetime | None: ...


class Checker(Protocol):
    """The offline half of an engine (``Engine.check_offline``)."""

    def check_offline(self, raw: str) -> Facts: ...


class Resolver(Protocol):
    """The DNS stage (``DnsStage.lookup``)."""

    async def lookup(self, ascii_domain: str, transcript: Transcript | None = None) -> DnsFacts: ...


@dataclass(frozen=True, slots=True)
class Route:
    """A lane: the MX host asked, the addresses to dial (in order) and its limits.

    ``backups`` are the next MX hosts' (host, address) pairs, dialled when the lane's
    own addresses refuse connections (as an MTA falls back to the next MX)."""

    host: str
    ips: tuple[str, ...]
    provider: Provider | None
    limits: LaneLimits
    backups: tuple[tuple[str, str], ...] = ()

    def dials(self) -> tuple[tuple[str, str], ...]:
        """Every (host, address) to try, in order."""
        return tuple((self.host, ip) for ip in self.ips) + self.backups


@dataclass(slots=True)
class LaneWork:
    """One address to ask on a lane."""

    batch_id: str
    key: str
    rcpt: str  # as sent in RCPT TO: local part @ A-label domain
    domain: str  # the A-label domain (catch-all checks, cache)
    facts: Facts  # syntax, lists, DNS and provider; the SMTP answer is added at the end
    attempts: int = 0  # greylist retries already done
    first_try_at: datetime | None = None
    ends: int = 0  # sessions that ended while this address waited for its answer


@dataclass(slots=True)
class Plan:
    decided: list[tuple[str, Checked]] = field(default_factory=list)  # (key, verdict)
    lanes: dict[str, tuple[Route, list[LaneWork]]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.decided) + sum(len(works) for _, works in self.lanes.values())


class Planner:
    """Plans the work items of one batch; keep one per batch (its DNS memo is the
    batch's "each domain looked up once")."""

    def __init__(self, checker: Checker, resolver: Resolver, settings: Settings) -> None:
        self.checker = checker
        self.resolver = resolver
        self.settings = settings
        self._dns: dict[str, DnsFacts] = {}
        self.lookups = 0  # DNS lookups asked of the resolver (for tests)

    async def plan(self, batch_id: str, items: Sequence[Work]) -> Plan:
        plan = Plan()
        waiting: list[tuple[Work, Facts]] = []
        for item in items:
            facts = self.checker.check_offline(item.email)
            syntax = facts.syntax
            if (
                not syntax.ok
                or (facts.lists is not None and facts.lists.denied)
                or syntax.special_use is not None
                or syntax.ascii_domain is None
            ):
                plan.decided.append((item.key, Checked(decide(facts), facts)))
                continue
            facts.offline = False
            waiting.append((item, facts))
        await self._resolve({f.syntax.ascii_domain for _, f in waiting if f.syntax.ascii_domain})
        for item, facts in waiting:
            self._route(plan, batch_id, item, facts)
        return plan

    async def _resolve(self, domains: set[str | None]) -> None:
        todo = sorted(d for d in domains if d is not None and d not in self._dns)
        if len(self._dns) + len(todo) > _MAX_DOMAINS:
            self._dns.clear()
        semaphore = asyncio.Semaphore(_LOOKUPS_AT_ONCE)

        async def one(domain: str) -> None:
            async with semaphore:
                if domain.startswith("["):
                    answer = _literal_host(domain)
                else:
                    self.lookups += 1
                    answer = await self.resolver.lookup(domain)
            self._dns[domain] = answer

        await asyncio.gather(*(one(d) for d in todo))

    def _route(self, plan: Plan, batch_id: str, item: Work, facts: Facts) -> None:
        syntax = facts.syntax
        assert syntax.ascii_domain is not None and syntax.local is not None
        dns = self._dns[syntax.ascii_domain]
        facts.dns = dns
        if dns.outcome is not DnsOutcome.OK or not dns.mx_hosts:
            plan.decided.append((item.key, Checked(decide(facts), facts)))
            return
        provider = provider_for([mx.host for mx in dns.mx_hosts])
        facts.provider = provider.name if provider is not None else None
        lists = facts.lists
        if lists is not None and lists.is_disposable and not lists.allowed:
            # risky / disposable whatever the server says: not worth a lane
            plan.decided.append((item.key, Checked(decide(facts), facts)))
            return
        host = self._host(dns)
        if isinstance(host, SmtpFacts):
            facts.smtp = host
            plan.decided.append((item.key, Checked(decide(facts), facts)))
            return
        mx, ips, backups = host
        lane = plan.lanes.get(mx.host)
        if lane is None:
            limits = limits_for(provider, self.settings)
            route = Route(mx.host, ips, provider, limits, backups)
            lane = plan.lanes[mx.host] = (route, [])
        lane[1].append(
            LaneWork(
                batch_id=batch_id,
                key=item.key,
                rcpt=f"{syntax.local}@{syntax.ascii_domain}",
                domain=syntax.ascii_domain,
                facts=facts,
                attempts=item.attempts,
                first_try_at=item.first_try_at,
            )
        )

    def _host(
        self, dns: DnsFacts
    ) -> tuple[MxHost, tuple[str, ...], tuple[tuple[str, str], ...]] | SmtpFacts:
        """The first MX host (stable by preference) with an address we may dial, its
        addresses, and the (host, address) pairs of the next ones (up to
        ``smtp_max_mx_hosts`` hosts in all, as the real-time probe tries)."""
        refused: MxHost | None = None
        found: list[tuple[MxHost, tuple[str, ...]]] = []
        for mx in sorted(dns.mx_hosts, key=lambda m: m.preference):
            if len(found) >= max(1, self.settings.smtp_max_mx_hosts):
                break
            allowed = tuple(
                ip for ip in mx.addresses if self.settings.allow_private_mx or is_public_address(ip)
            )
            if allowed:
                found.append((mx, allowed[:_MAX_ADDRESSES]))
            elif mx.addresses and refused is None:
                refused = mx
        if found:
            (first, ips), rest = found[0], found[1:]
            return first, ips, tuple((mx.host, ip) for mx, addresses in rest for ip in addresses)
        if refused is not None:
            return SmtpFacts(
                SmtpOutcome.PRIVATE_MX,
                mx_host=refused.host,
                message=f"refused to probe non-public MX address(es) of {refused.host}; "
                "set allow_private_mx to allow",
            )
        return SmtpFacts(SmtpOutcome.NO_CONNECT, message="no MX host has an address")

    def forget(self) -> None:
        self._dns.clear()

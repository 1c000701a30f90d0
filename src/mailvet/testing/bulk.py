"""A big simulated world for batch benchmarks (``bench/batch.py``), and its time bound.

:class:`BulkWorld` is a list of addresses and the mail servers that answer for them,
generated from a :class:`BulkSpec` (size, seed, shares). By default: 40 % of the
addresses on one big provider's MX, 20 % and 10 % on two others (each provider's MX
serves its own consumer domain plus hosted customer domains), the rest spread over
2,000 small domains, each with its own MX host on its own loopback address. A few
percent of the addresses are on catch-all domains, on greylisting domains, on tarpits
(every reply seconds late), or name mailboxes that do not exist; 1 % repeat an earlier
address; every reply of every server comes ``latency_ms`` (20 ms) late.

Every address is a pure function of ``(seed, index)`` (integer mixing, no
``random.Random`` per address), so a million addresses cost a second or two, any
process can rebuild the same world from the spec alone, and the truth about any
address (``truth(i)``) is known without keeping the list. The simulated servers know
whether a mailbox exists from its local part alone (``first.last.<index>``), so they
hold no mailbox lists either.

:func:`lower_bound` is the shortest time any scheduler could finish the batch in
without breaking the per-MX caps; docs/BENCHMARKS.md ("Batch engine") writes the
formula out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mailvet.testing import smtp as sim

__all__ = [
    "Bound",
    "BulkSpec",
    "BulkWorld",
    "Caps",
    "Domain",
    "Kind",
    "LaneLoad",
    "Truth",
    "lower_bound",
]

_MASK = (1 << 64) - 1
_FIRST = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "karl", "laura", "mike", "nina", "oscar", "peggy", "quinn", "rita", "sam", "tina",
    "uma", "victor", "wendy", "xavier", "yara", "zoe", "adam", "bella", "chris", "dora",
    "eli", "fay",
)  # fmt: skip
_LAST = (
    "adams", "baker", "chen", "diaz", "evans", "fischer", "garcia", "hughes", "ito",
    "jones", "kim", "lopez", "miller", "nguyen", "olsen", "patel", "rossi", "smith",
    "tanaka", "weber", "young", "zhang", "novak", "silva", "costa", "dubois", "khan",
    "ali", "berg", "moreau", "sato", "wong",
)  # fmt: skip
_SMALL_STYLES = ("postfix", "exim", "sendmail", "qmail", "cpanel")
_PROVIDERS = ("alphamail", "betamail", "gammamail")
_PROVIDER_STYLES = ("gmail", "postfix", "exim")
_UNIT = 1_000_000  # resolution of the share draws


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class Kind(StrEnum):
    """How a domain's MX answers."""

    MAILBOXES = "mailboxes"  # 250 for existing mailboxes, 550 user unknown for others
    CATCH_ALL = "catch_all"  # 250 for everything
    GREYLIST = "greylist"  # 450 on the first try of each recipient, then as MAILBOXES
    TARPIT = "tarpit"  # as MAILBOXES, but every reply comes tarpit_latency_ms late


@dataclass(frozen=True, slots=True)
class BulkSpec:
    """What :class:`BulkWorld` generates. Shares are of all submitted addresses."""

    size: int = 100_000
    seed: int = 20_261_130
    providers: tuple[float, ...] = (0.40, 0.20, 0.10)  # share on each big provider's MX
    hosted: tuple[int, ...] = (40, 20, 0)  # customer domains on each provider's MX
    hosted_share: float = 0.30  # of a provider's addresses, on its hosted domains
    small_domains: int = 2000
    catch_all: float = 0.03  # on catch-all (small) domains
    greylisted: float = 0.02  # on greylisting (small) domains
    tarpit: float = 0.01  # on tarpit (small) domains
    unknown: float = 0.05  # mailboxes that do not exist (everywhere)
    duplicates: float = 0.01  # repeats of one of the previous 1,000 addresses
    latency_ms: float = 20.0  # before every reply of every server
    tarpit_latency_ms: float = 2000.0  # before every reply of a tarpit
    greylist_delay: float = 30.0  # seconds a greylisting server wants between tries

    def __post_init__(self) -> None:
        if self.size < 0 or self.small_domains < 1:
            raise ValueError("size must be >= 0 and small_domains >= 1")
        if len(self.hosted) != len(self.providers) or len(self.providers) > len(_PROVIDERS):
            raise ValueError(f"one hosted count per provider, at most {len(_PROVIDERS)}")
        small = 1.0 - sum(self.providers)
        if small <= 0 or self.catch_all + self.greylisted + self.tarpit > small:
            raise ValueError("catch-all + greylisted + tarpit must fit in the small domains")

    @property
    def small_share(self) -> float:
        return 1.0 - sum(self.providers)


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    kind: Kind
    mx_hosts: tuple[str, ...]  # preference order; the first is the one asked (the lane)
    ips: tuple[str, ...]  # one per MX host
    style: str  # whose "user unknown" text it answers with

    @property
    def lane(self) -> str:
        return self.mx_hosts[0]


@dataclass(frozen=True, slots=True)
class Truth:
    """What a correct verifier says about one address."""

    domain: Domain
    exists: bool

    @property
    def result(self) -> str:
        if self.domain.kind is Kind.CATCH_ALL:
            return "risky"
        return "deliverable" if self.exists else "undeliverable"


@dataclass(slots=True)
class LaneLoad:
    """The work one MX host (lane) gets: distinct addresses, of which greylisted."""

    host: str
    latency_ms: float
    addresses: int = 0
    greylisted: int = 0

    @property
    def rcpts(self) -> int:
        """RCPT commands at the least: one per address, a second per greylisted one."""
        return self.addresses + self.greylisted


@dataclass(frozen=True, slots=True)
class Caps:
    """Per-MX limits (the ``mx_*`` settings), the same for every lane of the world."""

    max_sessions: int = 2
    rcpt_per_session: int = 50
    rcpt_per_second: float = 10.0
    connects_per_minute: int = 30
    rcpt_burst: int = 20  # RCPTs the rate bucket lets through at once (mailvet: a group)
    total_sessions: int | None = None  # sessions open at once over all lanes (None: no cap)


@dataclass(frozen=True, slots=True)
class Bound:
    seconds: float  # the bound: max(lane_seconds, greylist_seconds, sessions_seconds)
    lane: str  # the lane that sets it, or "greylist", or "total sessions"
    lane_seconds: float  # max over lanes of the lane's own bound
    greylist_seconds: float  # the greylist floor (0 without greylisted addresses)
    terms: dict[str, float] = field(default_factory=dict)  # the dominant lane's terms
    sessions_seconds: float = 0.0  # the total-sessions floor (0 without that cap)


def lane_terms(load: LaneLoad, caps: Caps) -> dict[str, float]:
    """One lane's three floors (seconds), see :func:`lower_bound`."""
    rcpts = load.rcpts
    latency = load.latency_ms / 1000
    sessions = math.ceil(rcpts / max(1, caps.rcpt_per_session))
    burst = max(1, caps.connects_per_minute)
    return {
        "rate": max(0, rcpts - min(caps.rcpt_burst, rcpts)) / caps.rcpt_per_second,
        "replies": (3 + math.ceil(rcpts / max(1, caps.max_sessions))) * latency,
        "connects": max(0.0, 60.0 * (sessions - burst) / burst),
    }


def lower_bound(
    lanes: dict[str, LaneLoad], caps: Caps, *, greylist_delay: float, latency_ms: float
) -> Bound:
    """The shortest wall time the caps allow for these lanes.

    For each lane (MX host asked) with R RCPTs at the least (``LaneLoad.rcpts``) and a
    reply latency L, no scheduler within the caps finishes it before the largest of:

    - ``(R - b) / rcpt_per_second``: the RCPT rate cap, after a first burst of
      ``b = rcpt_burst`` RCPTs (the token bucket's size);
    - ``(3 + ceil(R / max_sessions)) * L``: at most ``max_sessions`` sessions at once,
      each answering one command at a time; a session waits for banner, EHLO and MAIL
      before its first RCPT reply;
    - ``60 * (ceil(R / rcpt_per_session) - c) / c`` with ``c = connects_per_minute``:
      the sessions it needs, opened at ``c`` per minute after an initial burst of ``c``.

    Lanes run side by side, so the batch's bound is the largest lane bound; and when
    any address is greylisted, at least ``greylist_delay + 5 * L``: its retry comes
    ``greylist_delay`` after a first try that needed 4 replies, and needs a reply.
    With a cap of ``total_sessions`` over all lanes, at least the session time every
    lane needs, ``sum of (R + 3 * ceil(R / rcpt_per_session)) * L``, over that cap.
    Catch-all probes are not counted (a lower bound stays one).
    """
    best = Bound(0.0, "", 0.0, 0.0)
    session_time = 0.0
    for load in lanes.values():
        terms = lane_terms(load, caps)
        seconds = max(terms.values())
        if seconds > best.lane_seconds:
            best = Bound(seconds, load.host, seconds, 0.0, terms)
        setups = 3 * math.ceil(load.rcpts / max(1, caps.rcpt_per_session))
        session_time += (load.rcpts + setups) * load.latency_ms / 1000
    greylisted = any(load.greylisted for load in lanes.values())
    grey = greylist_delay + 5 * latency_ms / 1000 if greylisted else 0.0
    total = session_time / caps.total_sessions if caps.total_sessions else 0.0
    seconds = max(best.lane_seconds, grey, total)
    lane = "greylist" if seconds == grey > best.lane_seconds else best.lane
    if total > max(best.lane_seconds, grey):
        lane = "total sessions"
    return Bound(seconds, lane, best.lane_seconds, grey, best.terms, total)


class BulkWorld:
    """The domains, addresses, DNS zone and SMTP behaviours of one :class:`BulkSpec`."""

    def __init__(self, spec: BulkSpec | None = None) -> None:
        self.spec = spec = spec or BulkSpec()
        self.providers: list[tuple[Domain, list[Domain]]] = []  # (consumer, hosted)
        for p, (name, hosted) in enumerate(zip(_PROVIDERS, spec.hosted, strict=False)):
            if p >= len(spec.providers):
                break
            hosts = (f"mx1.{name}.test", f"mx2.{name}.test")
            ips = (f"127.10.{p}.1", f"127.10.{p}.2")
            style = _PROVIDER_STYLES[p]
            own = Domain(f"{name}.test", Kind.MAILBOXES, hosts, ips, style)
            customers = [
                Domain(f"corp{i:03d}-{name}.test", Kind.MAILBOXES, hosts, ips, style)
                for i in range(hosted)
            ]
            self.providers.append((own, customers))
        n = spec.small_domains
        counts = [round(share / spec.small_share * n) for share in
                  (spec.catch_all, spec.greylisted, spec.tarpit)]  # fmt: skip
        kinds = [Kind.CATCH_ALL] * counts[0] + [Kind.GREYLIST] * counts[1]
        kinds += [Kind.TARPIT] * counts[2]
        kinds += [Kind.MAILBOXES] * (n - len(kinds))
        random.Random(spec.seed).shuffle(kinds)
        self.small = [
            Domain(
                f"shop{i:05d}.test",
                kinds[i],
                (f"mx.shop{i:05d}.test",),
                (f"127.{20 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}",),
                _SMALL_STYLES[i % len(_SMALL_STYLES)],
            )
            for i in range(n)
        ]
        shares = [round(s * _UNIT) for s in spec.providers]
        self._cuts = [sum(shares[: p + 1]) for p in range(len(shares))]
        self._hosted_cut = round(spec.hosted_share * _UNIT)
        self._unknown_cut = round(spec.unknown * _UNIT)
        self._dup_cut = round(spec.duplicates * _UNIT)

    # --- addresses ---

    def _domain_of(self, u: int) -> Domain:
        draw = u % _UNIT
        for p, cut in enumerate(self._cuts):
            if draw < cut:
                own, hosted = self.providers[p]
                if hosted and (u >> 20) % _UNIT < self._hosted_cut:
                    return hosted[(u >> 40) % len(hosted)]
                return own
        return self.small[(u >> 20) % len(self.small)]

    def canonical(self, i: int) -> int:
        """The index whose address ``i`` repeats (``i`` itself when it is no repeat)."""
        seed = self.spec.seed << 32
        while i > 0:
            v = _mix(_mix(seed + i))
            if (v >> 32) % _UNIT >= self._dup_cut:
                break
            i -= 1 + (v >> 52) % min(i, 1000)
        return i

    def address(self, i: int) -> str:
        i = self.canonical(i)
        u = _mix((self.spec.seed << 32) + i)
        v = _mix(u)
        return f"{_FIRST[(v >> 8) & 31]}.{_LAST[(v >> 13) & 31]}.{i}@{self._domain_of(u).name}"

    def addresses(self) -> list[str]:
        return [self.address(i) for i in range(self.spec.size)]

    def exists(self, index: int) -> bool:
        """Whether the mailbox of canonical address ``index`` exists."""
        v = _mix(_mix((self.spec.seed << 32) + index))
        return v % _UNIT >= self._unknown_cut

    def truth(self, i: int) -> Truth:
        i = self.canonical(i)
        return Truth(self._domain_of(_mix((self.spec.seed << 32) + i)), self.exists(i))

    def domains(self) -> Iterator[Domain]:
        for own, hosted in self.providers:
            yield own
            yield from hosted
        yield from self.small

    def lanes(self) -> dict[str, LaneLoad]:
        """Per MX host asked: its distinct addresses and greylisted ones."""
        lanes: dict[str, LaneLoad] = {}
        for i in range(self.spec.size):
            if self.canonical(i) != i:
                continue
            domain = self.truth(i).domain
            load = lanes.get(domain.lane)
            if load is None:
                latency = self._latency(domain)
                load = lanes[domain.lane] = LaneLoad(domain.lane, latency)
            load.addresses += 1
            if domain.kind is Kind.GREYLIST:
                load.greylisted += 1
        return lanes

    # --- the servers ---

    def _latency(self, domain: Domain) -> float:
        if domain.kind is Kind.TARPIT:
            return self.spec.tarpit_latency_ms
        return self.spec.latency_ms

    def zone(self) -> dict[str, dict[str, list[Any]]]:
        records: dict[str, dict[str, list[Any]]] = {}
        for domain in self.domains():
            records[domain.name] = {
                "MX": [(10 * (k + 1), host) for k, host in enumerate(domain.mx_hosts)]
            }
            for host, ip in zip(domain.mx_hosts, domain.ips, strict=True):
                records[host] = {"A": [ip]}
        return records

    def hosts(self) -> dict[str, str]:
        """MX host name -> its address."""
        return {
            host: ip
            for domain in self.domains()
            for host, ip in zip(domain.mx_hosts, domain.ips, strict=True)
        }

    def mailbox_rule(self, style: str) -> sim.RcptRule:
        """250 for the world's existing mailboxes (``first.last.<index>``), else 550."""
        reject = sim.USER_UNKNOWN_REPLIES[style]
        exists = self.exists

        def rule(rcpt: str, session: sim.Session) -> str:
            local = rcpt.rpartition("@")[0]
            tail = local.rpartition(".")[2]
            if local.count(".") == 2 and tail.isdigit() and exists(int(tail)):
                return "250 2.1.5 Ok"
            return reject.format(rcpt=rcpt, ip=session.peer)

        return rule

    def behaviour(self, domain: Domain) -> sim.Behaviour:
        latency = self._latency(domain)
        if domain.kind is Kind.CATCH_ALL:
            return sim.catch_all(latency_ms=latency)
        inner = sim.Behaviour(rcpt=self.mailbox_rule(domain.style), latency_ms=latency)
        if domain.kind is Kind.GREYLIST:
            return sim.greylist(delay=self.spec.greylist_delay, then=inner)
        return inner

    def by_ip(self) -> dict[str, sim.Behaviour]:
        """Listening address -> behaviour: every MX host of every domain."""
        by_ip: dict[str, sim.Behaviour] = {}
        for domain in self.domains():
            if domain.ips[0] in by_ip:  # hosted domains share their provider's MX
                continue
            behaviour = self.behaviour(domain)
            for ip in domain.ips:
                by_ip[ip] = behaviour
        return by_ip

    def smtp_sim(self, port: int = 0) -> sim.SmtpSim:
        return sim.SmtpSim(sim.accept(), by_ip=self.by_ip(), hosts=(), port=port)

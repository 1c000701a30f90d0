"""The world ``mailvet sim`` serves: the scripted sites plus a few hundred ordinary domains.

The scripted sites are :data:`~mailvet.testing.internet.STANDARD_SITES` and
:data:`~mailvet.testing.internet.STANDARD_ZONE`, the ones the tests use (catch-all,
greylist, mailbox full, disabled, policy block, tarpit, null MX, SERVFAIL, ...). On top
come :func:`ordinary_domains`: realistic-looking ``*.test`` domains of small companies,
each with one or two MX hosts and a handful of mailboxes, refusing every other address
the way a real server does. They are generated from fixed word lists with a fixed seed,
so every run (and every machine) serves the same names.

:data:`EXAMPLES` are addresses that show every verdict; ``mailvet sim`` prints them and a
test checks each against the real pipeline, so what it prints stays true.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from mailvet.testing import smtp as sim
from mailvet.testing.internet import STANDARD_SITES, STANDARD_ZONE, SimInternet

__all__ = [
    "EXAMPLES",
    "HOSTING_IPS",
    "ORDINARY_COUNT",
    "Example",
    "OrdinaryDomain",
    "ordinary_domains",
    "sim_world",
]

ORDINARY_COUNT = 300
_SEED = 20_260_701
# the ordinary domains' MX hosts share these addresses, like customers of a few hosters
HOSTING_IPS = ("127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4")

_PREFIXES = (
    "amber", "azure", "birch", "bright", "cedar", "clear", "coastal", "copper", "crimson",
    "golden", "granite", "green", "harbor", "hidden", "iron", "lunar", "maple", "meadow",
    "misty", "north", "oak", "pine", "quiet", "rapid", "red", "river", "silver", "solar",
    "stone", "summit", "sunny", "swift", "true", "urban", "valley", "west", "wild", "willow",
    "winter", "yellow",
)  # fmt: skip
_TRADES = (
    "bakery", "bikes", "books", "cafe", "clinic", "coffee", "consulting", "design", "dental",
    "farm", "finance", "florist", "foods", "garden", "health", "homes", "labs", "law",
    "logistics", "media", "motors", "music", "outdoors", "partners", "pets", "photo", "press",
    "realty", "robotics", "school", "software", "studio", "supply", "systems", "tools",
    "travel", "ventures", "wines", "works", "yoga",
)  # fmt: skip
_FIRST = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "karl", "laura", "mike", "nina", "oscar", "peggy", "quinn", "rita", "sam", "tina", "uma",
    "victor", "wendy", "xavier", "yara", "zoe",
)  # fmt: skip
_LAST = (
    "adams", "baker", "chen", "diaz", "evans", "fischer", "garcia", "hughes", "ito", "jones",
    "kim", "lopez", "miller", "nguyen", "olsen", "patel", "rossi", "smith", "tanaka", "weber",
)  # fmt: skip
_ROLES = ("info", "sales", "hello", "support", "contact", "office")
# refusal texts that say plainly the mailbox does not exist (USER_UNKNOWN_REPLIES keys)
_STYLES = ("postfix", "exim", "sendmail", "qmail", "cpanel")


@dataclass(frozen=True, slots=True)
class OrdinaryDomain:
    """One ordinary domain: its MX hosts (preference order) and its mailboxes."""

    name: str
    mx_hosts: tuple[str, ...]
    mailboxes: tuple[str, ...]  # local parts; every other address is refused as unknown
    style: str  # which server's "user unknown" text it answers with
    ip: str  # the hosting address all its MX hosts resolve to

    def behaviour(self) -> sim.Behaviour:
        return sim.mailboxes(*self.mailboxes, style=self.style)

    def records(self) -> dict[str, dict[str, list[Any]]]:
        """Its DNS records: MX, SPF, and an A record per MX host."""
        mx = [(10 * (i + 1), host) for i, host in enumerate(self.mx_hosts)]
        records: dict[str, dict[str, list[Any]]] = {
            self.name: {"MX": mx, "TXT": ["v=spf1 mx -all"]}
        }
        for host in self.mx_hosts:
            records[host] = {"A": [self.ip]}
        return records


def _local_part(rng: random.Random, pattern: int) -> str:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return (first, f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}")[pattern]


def ordinary_domains(count: int = ORDINARY_COUNT) -> tuple[OrdinaryDomain, ...]:
    """The first ``count`` ordinary domains, the same on every run and machine.

    A fixed seed and no hashing: a smaller ``count`` gives a prefix of a larger one.
    """
    names = [
        f"{p}-{t}.test" if (i + j) % 3 == 0 else f"{p}{t}.test"
        for i, p in enumerate(_PREFIXES)
        for j, t in enumerate(_TRADES)
    ]
    if not 0 <= count <= len(names):
        raise ValueError(f"count must be between 0 and {len(names)}")
    random.Random(_SEED).shuffle(names)
    domains: list[OrdinaryDomain] = []
    for n, name in enumerate(names[:count]):
        rng = random.Random(f"{_SEED}:{name}")  # str seeds go through SHA-512, not hash()
        hosts = (f"mx1.{name}", f"mx2.{name}") if n % 4 == 0 else (f"mx.{name}",)
        pattern = rng.randrange(4)  # one address scheme per company, like real ones
        people = {_local_part(rng, pattern) for _ in range(rng.randint(2, 5))}
        boxes = (rng.choice(_ROLES), *sorted(people))
        style = _STYLES[rng.randrange(len(_STYLES))]
        domains.append(OrdinaryDomain(name, hosts, boxes, style, HOSTING_IPS[n % 4]))
    return tuple(domains)


@dataclass(frozen=True, slots=True)
class Example:
    """An address and the verdict the simulated internet gives it at default settings."""

    email: str
    result: str
    reason: str
    shows: str


def _examples() -> tuple[Example, ...]:
    first = ordinary_domains(1)[0]
    person = first.mailboxes[1]
    return (
        Example("alice@deliverable.test", "deliverable", "accepted_email", "the mailbox exists"),
        Example(
            f"{person}@{first.name}", "deliverable", "accepted_email", "one of the ordinary domains"
        ),
        Example(
            "nobody@deliverable.test", "undeliverable", "rejected_email", "550 5.1.1 user unknown"
        ),
        Example(
            "alice@disabled.test", "undeliverable", "rejected_email", "the mailbox is disabled"
        ),
        Example("alice@nullmx.test", "undeliverable", "invalid_domain", "null MX (RFC 7505)"),
        Example("alice@nxdomain.test", "undeliverable", "invalid_domain", "NXDOMAIN"),
        Example("alice.deliverable.test", "undeliverable", "invalid_format", "no @"),
        Example("anyone@catchall.test", "risky", "catch_all", "a random address is accepted too"),
        Example("alice@full.test", "risky", "mailbox_full", "452 4.2.2 over quota"),
        Example("anyone@mailinator.com", "risky", "disposable", "a disposable-address domain"),
        Example("alice@greylist.test", "unknown", "unavailable_smtp", "450 greylisted"),
        Example("alice@blocked.test", "unknown", "unavailable_smtp", "our IP on a block list"),
        Example("alice@garbage.test", "unknown", "invalid_smtp", "the server speaks nonsense"),
        Example("alice@deadmx.test", "unknown", "no_connect", "nothing listens on the MX"),
        Example("alice@servfail.test", "unknown", "dns_error", "the DNS answers SERVFAIL"),
        Example("alice@tarpit.test", "unknown", "timeout", "a tarpit: one byte a second"),
        Example("anyone@yahoo.test", "unknown", "unverifiable", "Yahoo takes any RCPT"),
    )


EXAMPLES: tuple[Example, ...] = _examples()


def sim_world(
    *, dns_port: int = 0, smtp_port: int = 0, ordinary: int = ORDINARY_COUNT
) -> SimInternet:
    """The simulated internet of ``mailvet sim`` (not started: ``async with`` it)."""
    domains = ordinary_domains(ordinary)
    zone = dict(STANDARD_ZONE)
    for domain in domains:
        zone.update(domain.records())
    return SimInternet(
        STANDARD_SITES,
        zone,
        by_domain={d.name: d.behaviour() for d in domains},
        by_ip={ip: sim.accept() for ip in HOSTING_IPS},
        dns_port=dns_port,
        smtp_port=smtp_port,
    )

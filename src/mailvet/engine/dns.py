"""DNS stage: where does mail for a domain go?

``DnsStage.lookup`` asks for MX, falls back to the implicit MX of RFC 5321 5.1 (the
domain's own A/AAAA), recognises the null MX of RFC 7505, resolves each MX host to its
addresses and optionally checks domain block lists. It never raises: timeouts and
SERVFAIL/REFUSED are "unknown" outcomes (``TIMEOUT``/``ERROR``), never "invalid".

Design choices:

- Resolver: dnspython's ``dns.asyncresolver`` (already a dependency, pure Python, typed
  exceptions that map onto our outcomes, TCP fallback on truncation, no hidden cache).
  aiodns/c-ares spends 2.5-3x less client CPU per cache-missing MX query (~100-180 us vs
  ~300-360 us, and ~1.6x the lookups/s against the same loopback server; see
  ``bench/dns_resolvers.py`` and "DNS resolver" in docs/BENCHMARKS.md), but a
  verification costs one MX query plus a few shared, cached address queries against
  seconds of SMTP, so resolver CPU limits nothing; not worth a C extension with its own
  cache and coarser error reporting. A fully cached lookup costs ~30 us.
- Timeouts: each query is bounded by ``settings.dns_timeout`` (a retry after half of
  it); a whole lookup by three times that.
- Cache: one bounded LRU of query answers keyed by (name, type), shared by all lookups
  of the stage (MX hosts of big providers are shared by many domains). Answers live
  for their TTL clamped to [30 s, 1 h]; NXDOMAIN/NODATA for the SOA minimum (RFC 2308)
  clamped to [30 s, 15 min], 60 s without an SOA; timeouts and SERVFAIL for 5 s
  (RFC 2308 section 7), so a dead domain in a big list does not cost a timeout per
  address. Concurrent lookups of one name share one in-flight query (single flight).
- Order: MX hosts by preference; hosts of equal preference in random order, drawn anew
  for every lookup (RFC 5321 5.1: the sender "MUST randomize them to spread the load
  across multiple mail exchangers"). ``mx_hosts`` is the order the hosts are resolved
  and tried in (the SMTP stage keeps it). A hostile zone may publish hundreds of MX
  records: only the first 32 by preference (then name) are considered; when none of
  those resolves, the ones left out might have: ``ERROR`` (unknown), never "invalid".
- Resolution: the first ``smtp_max_mx_hosts`` hosts (all the SMTP stage will try once one
  resolves); if none of them has an address, all the others at once.
- MX hosts that do not resolve: one outcome however many there are. When no MX host has
  an address, the outcome is ``NO_MAIL_HOST`` (the domain takes no mail: undeliverable,
  ``invalid_domain``) if every host's A and AAAA answers were definite (NXDOMAIN or no
  such record), and ``TIMEOUT`` / ``ERROR`` (unknown) if any host's lookup timed out or
  failed (SERVFAIL, REFUSED, junk): that host might have been the one that takes the
  mail. RFC 5321 5.1: "If MX records are present, but none of them are usable [...] this
  situation MUST be reported as an error"; an MTA bounces such mail (Postfix: "Host or
  domain name not found. Name service error for name=... type=A: Host not found") and
  retries later only when a lookup failed temporarily.
- A null MX mixed with real MX records is ignored in favour of the real ones.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.resolver

from mailvet.engine.facts import DnsFacts, DnsOutcome, MxHost
from mailvet.engine.transcript import Transcript
from mailvet.settings import Settings, parse_nameserver

__all__ = ["DnsCache", "DnsStage", "make_resolver"]

_TTL_FLOOR = 30.0
_TTL_CEILING = 3600.0
_NEGATIVE_CEILING = 900.0
_NEGATIVE_DEFAULT = 60.0
_ERROR_TTL = 5.0
_MAX_MX = 32  # a hostile zone may publish hundreds
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


class _Status(StrEnum):
    OK = "ok"
    NXDOMAIN = "NXDOMAIN"
    NODATA = "NODATA"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class _Result:
    status: _Status
    mx: tuple[tuple[int, str], ...] = ()  # (preference, host) for MX; host "." = null
    addresses: tuple[str, ...] = ()  # for A/AAAA
    ttl: float = 0.0
    error: str | None = None
    server: str | None = None


_Key = tuple[str, int]


class DnsCache:
    """Bounded LRU of DNS answers with per-entry expiry (monotonic clock)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(0, max_entries)
        self._data: OrderedDict[_Key, tuple[float, _Result]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: _Key) -> _Result | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry[1]

    def put(self, key: _Key, result: _Result, ttl: float) -> None:
        if self.max_entries == 0 or ttl <= 0:
            return
        self._data[key] = (time.monotonic() + ttl, result)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


def make_resolver(settings: Settings) -> dns.asyncresolver.Resolver:
    """dnspython async resolver for ``settings`` (no cache of its own; timeouts set).

    Raises ``ValueError`` for a malformed ``dns_nameservers`` entry, and
    ``dns.resolver.NoResolverConfiguration`` when the list is empty and the host has no
    resolver configuration.
    """
    if settings.dns_nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(*parse_nameserver(e)) for e in settings.dns_nameservers
        ]
    else:  # production: the host's resolver configuration (never in tests)
        resolver = dns.asyncresolver.Resolver(configure=True)
    resolver.cache = None  # we cache ourselves, with negative and error caching
    resolver.timeout = max(settings.dns_timeout / 2, 0.01)
    resolver.lifetime = settings.dns_timeout
    resolver.retry_servfail = False
    resolver.use_edns(0, 0, 1232)
    return resolver


def _domain_name(text: str) -> dns.name.Name:
    """An absolute DNS name from an A-label domain, refusing anything odd."""
    domain = text.strip().rstrip(".").lower()
    labels = domain.split(".")
    if not domain or len(domain) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"not a DNS domain name: {text[:80]!r}")
    return dns.name.from_text(domain + ".")


def _negative_ttl(response: dns.message.Message | None) -> float:
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                soa = rrset[0]
                assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
                return float(min(rrset.ttl, soa.minimum))
    return _NEGATIVE_DEFAULT


def _clamp(ttl: float, ceiling: float) -> float:
    return max(_TTL_FLOOR, min(ceiling, ttl))


def _describe(rdtype: str, name: str, result: _Result, how: str) -> str:
    if result.status is _Status.OK:
        body = ", ".join(f"{p} {h}" for p, h in result.mx) or ", ".join(result.addresses)
        text = f"{rdtype} {name}: {body} (ttl {int(result.ttl)})"
    else:
        text = f"{rdtype} {name}: {result.status.value}"
        if result.error:
            text += f" ({result.error})"
    return text if how == "fresh" else f"{text} [{how}]"


class DnsStage:
    """MX/implicit MX/null MX lookup with a shared TTL cache and single-flight queries."""

    def __init__(
        self,
        settings: Settings,
        *,
        cache: DnsCache | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._rng = rng if rng is not None else random.Random()  # order of equal MX hosts
        self.cache = cache if cache is not None else DnsCache(settings.dns_cache_size)
        self._inflight: dict[_Key, asyncio.Task[_Result]] = {}
        self._max_hosts = max(1, settings.smtp_max_mx_hosts)
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._config_error: str | None = None
        try:
            self._resolver = make_resolver(settings)
        except dns.resolver.NoResolverConfiguration as exc:
            self._config_error = f"no resolver configuration: {exc}"

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        self._inflight.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def lookup(self, ascii_domain: str, transcript: Transcript | None = None) -> DnsFacts:
        """Everything DNS says about mail for ``ascii_domain``. Never raises."""
        try:
            name = _domain_name(ascii_domain)
        except (ValueError, dns.exception.DNSException) as exc:
            return DnsFacts(DnsOutcome.ERROR, error=str(exc))
        if self._resolver is None:
            return DnsFacts(DnsOutcome.ERROR, error=self._config_error)
        domain = name.to_text(omit_final_dot=True)
        try:
            async with asyncio.timeout(3 * self._settings.dns_timeout):
                if not self._settings.dns_blocklists:
                    return await self._mail_hosts(name, domain, transcript)
                facts, (listed, zones) = await asyncio.gather(
                    self._mail_hosts(name, domain, transcript),
                    self._blocklists(domain, transcript),
                )
        except TimeoutError:
            return DnsFacts(DnsOutcome.TIMEOUT, error="DNS lookup took too long")
        except Exception as exc:  # a bug or a dnspython surprise: unknown, never invalid
            return DnsFacts(DnsOutcome.ERROR, error=f"{type(exc).__name__}: {exc}"[:200])
        return replace(facts, blocklisted=listed, blocklists=zones)

    async def _mail_hosts(
        self, name: dns.name.Name, domain: str, transcript: Transcript | None
    ) -> DnsFacts:
        mx = await self._query(name, dns.rdatatype.MX, transcript)
        if mx.status is _Status.NXDOMAIN:
            return DnsFacts(DnsOutcome.NXDOMAIN)
        if mx.status in (_Status.TIMEOUT, _Status.ERROR):
            return DnsFacts(_outcome(mx.status), error=mx.error)
        if mx.status is _Status.NODATA or not mx.mx:
            return await self._implicit(name, domain, transcript)
        best: dict[str, int] = {}
        for pref, host in mx.mx:
            if host != ".":
                best[host] = min(pref, best.get(host, pref))
        kept = sorted(best.items(), key=lambda item: (item[1], item[0]))[:_MAX_MX]
        if not kept:
            return DnsFacts(DnsOutcome.NULL_MX)
        # RFC 5321 5.1: equal preferences in random order (a random tie-break per host)
        keys = {host: self._rng.random() for host, _ in kept}
        hosts = sorted(kept, key=lambda item: (item[1], keys[item[0]]))
        names = [h for h, _ in hosts]
        resolved: dict[str, tuple[_Result, _Result]] = {}
        # the hosts the SMTP stage may try; all the others only if none of these resolves
        for batch in (names[: self._max_hosts], names[self._max_hosts :]):
            if not batch:
                break
            answers = [self._cached_pair(h, transcript) for h in batch]
            missing = [i for i, answer in enumerate(answers) if answer is None]
            fetched = await asyncio.gather(
                *(self._addresses(batch[i], transcript) for i in missing)
            )
            for i, answer in zip(missing, fetched, strict=True):
                answers[i] = answer
            done = [answer for answer in answers if answer is not None]
            resolved.update(zip(batch, done, strict=True))
            if any(a.addresses or b.addresses for a, b in done):
                break
        mx_hosts = tuple(
            MxHost(pref, host, _merge(resolved[host]) if host in resolved else ())
            for host, pref in hosts
        )
        if any(h.addresses for h in mx_hosts):
            return DnsFacts(DnsOutcome.OK, mx_hosts=mx_hosts)
        # every host was asked and none has an address: one outcome, however many
        statuses = {r.status for pair in resolved.values() for r in pair}
        for status in (_Status.TIMEOUT, _Status.ERROR):
            if status in statuses:
                return DnsFacts(_outcome(status), mx_hosts=mx_hosts, error="MX host lookup failed")
        if len(best) > len(kept):
            error = f"none of the first {_MAX_MX} of {len(best)} MX hosts resolves; rest not asked"
            return DnsFacts(DnsOutcome.ERROR, mx_hosts=mx_hosts, error=error)
        return DnsFacts(DnsOutcome.NO_MAIL_HOST, mx_hosts=mx_hosts, error="no MX host resolves")

    async def _implicit(
        self, name: dns.name.Name, domain: str, transcript: Transcript | None
    ) -> DnsFacts:
        pair = self._cached_pair(domain, transcript) or await self._addresses(domain, transcript)
        addresses = _merge(pair)
        if addresses:
            if transcript is not None:
                transcript.add("dns", f"no MX for {domain}: implicit MX (RFC 5321 5.1)")
            host = MxHost(0, domain, addresses)
            return DnsFacts(DnsOutcome.OK, mx_hosts=(host,), implicit_mx=True)
        for status in (_Status.TIMEOUT, _Status.ERROR):
            if any(r.status is status for r in pair):
                errors = [r.error for r in pair if r.error]
                return DnsFacts(_outcome(status), error=errors[0] if errors else None)
        return DnsFacts(DnsOutcome.NO_MAIL_HOST)

    async def _addresses(self, host: str, transcript: Transcript | None) -> tuple[_Result, _Result]:
        try:
            name = dns.name.from_text(host + ".")
        except dns.exception.DNSException as exc:
            bad = _Result(_Status.ERROR, error=str(exc))
            return bad, bad
        a, aaaa = await asyncio.gather(
            self._query(name, dns.rdatatype.A, transcript),
            self._query(name, dns.rdatatype.AAAA, transcript),
        )
        return a, aaaa

    def _cached_pair(
        self, host: str, transcript: Transcript | None
    ) -> tuple[_Result, _Result] | None:
        """A and AAAA of ``host`` when both are cached (no task, no await), else None."""
        key = host + "."
        a = self.cache.get((key, dns.rdatatype.A))
        aaaa = self.cache.get((key, dns.rdatatype.AAAA)) if a is not None else None
        if a is None or aaaa is None:
            return None
        if transcript is not None:
            transcript.add("dns", _describe("A", host, a, "cached"))
            transcript.add("dns", _describe("AAAA", host, aaaa, "cached"))
        return a, aaaa

    async def _blocklists(
        self, domain: str, transcript: Transcript | None
    ) -> tuple[bool | None, tuple[str, ...]]:
        zones = [z.strip().strip(".").lower() for z in self._settings.dns_blocklists if z.strip()]
        if not zones:
            return None, ()
        verdicts = await asyncio.gather(*(self._listed(domain, z, transcript) for z in zones))
        listed = tuple(z for z, v in zip(zones, verdicts, strict=True) if v)
        if listed:
            return True, listed
        return (None if any(v is None for v in verdicts) else False), ()

    async def _listed(self, domain: str, zone: str, transcript: Transcript | None) -> bool | None:
        try:
            name = _domain_name(f"{domain}.{zone}")
        except (ValueError, dns.exception.DNSException):
            return None  # too long to ask: not concluded
        result = await self._query(name, dns.rdatatype.A, transcript)
        if result.status in (_Status.NXDOMAIN, _Status.NODATA):
            return False
        if result.status is not _Status.OK:
            return None
        codes = [ipaddress.ip_address(a) for a in result.addresses]
        if any(c in _LOOPBACK and c not in _BL_ERRORS for c in codes):
            return True
        return None  # only error codes (127.255.255.x) or a hijacking resolver's junk

    async def _query(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, transcript: Transcript | None
    ) -> _Result:
        key = (name.to_text().lower(), rdtype)
        result = self.cache.get(key)
        how = "cached"
        if result is None:
            task = self._inflight.get(key)
            how = "shared"
            if task is None or task.get_loop() is not asyncio.get_running_loop():
                task = asyncio.ensure_future(self._fetch(name, rdtype))
                self._inflight[key] = task
                task.add_done_callback(lambda t: self._forget(key, t))
                how = "fresh"
            result = await asyncio.shield(task)
        if transcript is not None:
            text = _describe(dns.rdatatype.to_text(rdtype), key[0].rstrip("."), result, how)
            transcript.add("dns", text, host=result.server if how == "fresh" else None)
        return result

    def _forget(self, key: _Key, task: asyncio.Task[_Result]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _fetch(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Result:
        result = await self._resolve(name, rdtype)
        ttl = _ERROR_TTL if result.status in (_Status.TIMEOUT, _Status.ERROR) else result.ttl
        self.cache.put((name.to_text().lower(), rdtype), result, ttl)
        return result

    async def _resolve(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Result:
        assert self._resolver is not None
        try:
            answer = await self._resolver.resolve(
                name, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.responses()  # type: ignore[no-untyped-call]
            response = next(iter(responses.values()), None)
            ttl = _clamp(_negative_ttl(response), _NEGATIVE_CEILING)
            return _Result(_Status.NXDOMAIN, ttl=ttl)
        except dns.exception.Timeout as exc:
            return _Result(_Status.TIMEOUT, error=str(exc)[:200])
        except Exception as exc:  # NoNameservers (SERVFAIL, REFUSED, garbage), OSError ...
            return _Result(_Status.ERROR, error=f"{type(exc).__name__}: {exc}"[:300])
        server = f"{answer.nameserver}:{answer.port}" if answer.nameserver else None
        remaining = answer.expiration - time.time()
        if answer.rrset is None:
            ttl = _clamp(remaining, _NEGATIVE_CEILING)
            return _Result(_Status.NODATA, ttl=ttl, server=server)
        ttl = _clamp(remaining, _TTL_CEILING)
        if rdtype == dns.rdatatype.MX:
            mx = tuple(
                sorted(
                    (int(rd.preference), rd.exchange.to_text(omit_final_dot=True).lower() or ".")
                    for rd in answer.rrset
                )
            )
            return _Result(_Status.OK, mx=mx, ttl=ttl, server=server)
        addresses = tuple(str(rd.address) for rd in answer.rrset)
        return _Result(_Status.OK, addresses=addresses, ttl=ttl, server=server)


_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_BL_ERRORS = ipaddress.ip_network("127.255.255.0/24")


def _outcome(status: _Status) -> DnsOutcome:
    return DnsOutcome.TIMEOUT if status is _Status.TIMEOUT else DnsOutcome.ERROR


def _merge(pair: tuple[_Result, _Result]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*pair[0].addresses, *pair[1].addresses)))

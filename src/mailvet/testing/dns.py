"""An authoritative DNS server on loopback, serving zones declared as Python data.

Part of the simulated internet tests and benchmarks run against (never a real server)::

    zone = Zone({
        "example.test": {"MX": [(10, "mx1.example.test"), (20, "mx2.example.test")]},
        "mx1.example.test": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
        "nomail.test": {"MX": [(0, ".")]},                      # RFC 7505 null MX
        "alias.test": {"CNAME": ["example.test"]},
        "*.wild.test": {"A": ["127.0.0.1"]},                    # wildcard
    })
    zone.behave("broken.test", Behaviour.SERVFAIL)
    zone.behave("slow.test", Behaviour.SLOW, delay=3.0)
    zone.list_in_dnsbl("spam.test", "dbl.test")                 # A 127.0.1.2
    async with DnsServer(zone) as srv:                          # or a plain dict
        settings = Settings(dns_nameservers=[srv.nameserver],   # "127.0.0.1:PORT"
                            allowed_special_domains=["test"])   # .test is special-use
        ...
        assert srv.count("example.test", "MX") == 1

From sync code (benchmarks, sync tests): ``with run_dns_server_in_thread(zone) as srv:``.
Names absent from the zone get NXDOMAIN; present names without the type get NODATA (with
an SOA in the authority section so resolvers can negative-cache). UDP and TCP share a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = [
    "Behaviour",
    "DnsServer",
    "Query",
    "Zone",
    "dnsbl_name",
    "run_dns_server_in_thread",
]

Records = Mapping[str, Mapping[str, Sequence[Any]]]
_MAX_CNAME_HOPS = 8


class Behaviour(StrEnum):
    SERVFAIL = "servfail"  # rcode SERVFAIL
    REFUSED = "refused"  # rcode REFUSED
    DROP = "drop"  # never answer: the client times out
    SLOW = "slow"  # answer normally after ``delay`` seconds
    TRUNCATE = "truncate"  # over UDP: empty answer with TC set, forcing a TCP retry
    # a malformed answer. Stub resolvers drop junk UDP datagrams as possibly spoofed, so
    # over UDP this sends TC to bring the client to TCP, where junk is a hard error
    GARBAGE = "garbage"


def _key(name: str) -> str:
    return name.strip().rstrip(".").lower()


def dnsbl_name(domain: str, zone: str) -> str:
    """``<domain>.<zone>``: where a domain-based block list (e.g. Spamhaus DBL) lists it."""
    return f"{_key(domain)}.{_key(zone)}"


def _rdata_text(rtype: str, value: Any) -> str:
    if rtype == "MX":
        pref, host = value
        return f"{int(pref)} {_key(host) + '.' if _key(host) else '.'}"
    if rtype == "CNAME":
        return _key(str(value)) + "."
    if rtype == "TXT":
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    return str(value)


class Zone:
    """Mutable record store: ``{name: {type: [values]}}`` plus per-name behaviours.

    Values: MX ``(preference, host)``, A/AAAA address strings, CNAME a target name,
    TXT strings; any other type its presentation text. Names are case-insensitive.
    """

    def __init__(
        self, records: Records | None = None, *, ttl: int = 300, negative_ttl: int = 60
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._names: dict[str, dict[str, list[Any]]] = {}
        self._behaviour: dict[str, tuple[Behaviour, float]] = {}
        for name, types in (records or {}).items():
            self._names.setdefault(_key(name), {})  # {} declares a name with no records
            for rtype, values in types.items():
                self.set(name, rtype, values)

    def set(self, name: str, rtype: str, values: Sequence[Any]) -> None:
        """Replace the records of one type (an empty list keeps the name: NODATA)."""
        rtype = rtype.upper()
        for value in values:  # validate now, not when the first query arrives
            dns.rdata.from_text(dns.rdataclass.IN, rtype, _rdata_text(rtype, value))
        self._names.setdefault(_key(name), {})[rtype] = list(values)

    def add(self, name: str, rtype: str, *values: Any) -> None:
        current = self._names.get(_key(name), {}).get(rtype.upper(), [])
        self.set(name, rtype, [*current, *values])

    def remove(self, name: str) -> None:
        self._names.pop(_key(name), None)

    def behave(self, name: str, behaviour: Behaviour | None, *, delay: float = 0.0) -> None:
        """Give ``name`` a behaviour (``None`` clears it). SLOW waits ``delay`` seconds."""
        if behaviour is None:
            self._behaviour.pop(_key(name), None)
        else:
            self._behaviour[_key(name)] = (behaviour, delay)

    def behaviour(self, name: str) -> tuple[Behaviour, float] | None:
        return self._behaviour.get(_key(name))

    def list_in_dnsbl(self, domain: str, zone: str, code: str = "127.0.1.2") -> None:
        """List ``domain`` on the domain-based block list ``zone`` (A ``code``)."""
        self.set(dnsbl_name(domain, zone), "A", [code])

    def lookup(self, name: str) -> dict[str, list[Any]] | None:
        """The record types of ``name`` (exact, else ``*.parent`` wildcard), or None."""
        key = _key(name)
        if key in self._names:
            return self._names[key]
        if "." in key:
            return self._names.get("*." + key.split(".", 1)[1])
        return None

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """Build the authoritative response to ``query`` (behaviours are the server's job)."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        for _ in range(_MAX_CNAME_HOPS):
            types = self.lookup(qname.to_text())
            if types is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                break
            wanted = dns.rdatatype.to_text(qtype)
            if "CNAME" in types and wanted != "CNAME" and types["CNAME"]:
                target = dns.name.from_text(_rdata_text("CNAME", types["CNAME"][0]))
                response.answer.append(self._rrset(qname, "CNAME", types["CNAME"][:1]))
                qname = target
                continue
            if types.get(wanted):
                response.answer.append(self._rrset(qname, wanted, types[wanted]))
                return response
            break
        soa_owner = dns.name.from_text(qname.labels[-2].decode() if len(qname) > 1 else ".")
        soa = f"ns.{soa_owner.to_text()} hostmaster.{soa_owner.to_text()} 1 3600 600 86400 "
        response.authority.append(
            dns.rrset.from_text(
                soa_owner, self.negative_ttl, "IN", "SOA", soa + str(self.negative_ttl)
            )
        )
        return response

    def _rrset(self, name: dns.name.Name, rtype: str, values: Sequence[Any]) -> dns.rrset.RRset:
        texts = [_rdata_text(rtype, v) for v in values]
        return dns.rrset.from_text_list(name, self.ttl, "IN", rtype, texts)


@dataclass(frozen=True, slots=True)
class Query:
    name: str  # lower-case, no trailing dot
    rtype: str  # "MX", "A", ...
    transport: str  # "udp" or "tcp"


class DnsServer:
    """The server, as an async context manager. ``port=0`` binds an ephemeral port."""

    def __init__(self, zone: Zone | Records, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.zone = zone if isinstance(zone, Zone) else Zone(zone)
        self.host = host
        self.port = port
        self.log: list[Query] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def queries(self) -> int:
        """How many queries arrived (all names, types and transports)."""
        return len(self.log)

    @property
    def nameserver(self) -> str:
        """The ``dns_nameservers`` entry for this server: ``127.0.0.1:PORT``/``[::1]:PORT``."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def count(self, name: str | None = None, rtype: str | None = None) -> int:
        return sum(
            1
            for q in self.log
            if (name is None or q.name == _key(name)) and (rtype is None or q.rtype == rtype)
        )

    def reset_counts(self) -> None:
        self.log.clear()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(20):  # the ephemeral UDP port may be taken on TCP: retry
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
            )
            port = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:
                udp.close()
                if self.port or attempt == 19:
                    raise
                continue
            self._udp, self.port = udp, port
            return

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def respond(self, wire: bytes, transport: str) -> bytes | None:
        """The reply to one query in wire format, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if query.question:
            q = query.question[0]
            name = _key(q.name.to_text())
            self.log.append(Query(name, dns.rdatatype.to_text(q.rdtype), transport))
            behaviour, delay = self.zone.behaviour(name) or (None, 0.0)
        else:
            behaviour, delay = None, 0.0
        if behaviour is Behaviour.DROP:
            return None
        if behaviour is Behaviour.GARBAGE and transport == "tcp":
            return wire[:2] + b"\x81\x80not a dns message"
        if behaviour is Behaviour.SLOW:
            await asyncio.sleep(delay)
        if behaviour in (Behaviour.SERVFAIL, Behaviour.REFUSED):
            response = dns.message.make_response(query)
            code = dns.rcode.SERVFAIL if behaviour is Behaviour.SERVFAIL else dns.rcode.REFUSED
            response.set_rcode(code)
        elif behaviour in (Behaviour.TRUNCATE, Behaviour.GARBAGE) and transport == "udp":
            response = dns.message.make_response(query)
            response.flags |= dns.flags.TC
        else:
            try:
                response = self.zone.answer(query)
            except Exception:  # a zone the client cannot be told about: like a broken server
                response = dns.message.make_response(query)
                response.set_rcode(dns.rcode.SERVFAIL)
        limit = 65535 if transport == "tcp" else max(512, query.payload if query.edns >= 0 else 0)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:  # RFC 1035 4.2.1: truncate, the client retries over TCP
            response = dns.message.make_response(query)
            response.flags |= dns.flags.TC
            return response.to_wire()

    async def _answer_udp(self, wire: bytes, addr: Any) -> None:
        reply = await self.respond(wire, "udp")
        if reply is not None and self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # tracked so close() can end idle connections
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = await self.respond(await reader.readexactly(length), "tcp")
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._spawn(self.server._answer_udp(data, addr))


@contextlib.contextmanager
def run_dns_server_in_thread(
    zone: Zone | Records, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[DnsServer]:
    """Run a ``DnsServer`` on its own event loop in a daemon thread, for sync callers."""
    server = DnsServer(zone, host=host, port=port)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="mailvet-test-dns", daemon=True)
    thread.start()
    ready.wait()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        yield server
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

"""The simulated authoritative DNS server itself (mailvet.testing.dns)."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from mailvet.testing.dns import (
    Behaviour,
    DnsServer,
    Query,
    Zone,
    dnsbl_name,
    run_dns_server_in_thread,
)

ZONE: dict[str, dict[str, list[Any]]] = {
    "example.test": {
        "MX": [(10, "mx1.example.test"), (20, "mx2.example.test")],
        "TXT": ["v=spf1 -all"],
    },
    "mx1.example.test": {"A": ["127.0.0.1", "127.0.0.2"], "AAAA": ["::1"]},
    "nomail.test": {"MX": [(0, ".")]},
    "alias.test": {"CNAME": ["alias2.test"]},
    "alias2.test": {"CNAME": ["example.test."]},
    "dangling.test": {"CNAME": ["nowhere.test"]},
    "loop1.test": {"CNAME": ["loop2.test"]},
    "loop2.test": {"CNAME": ["loop1.test"]},
    "*.wild.test": {"A": ["127.0.0.7"]},
    "empty.test": {},
}


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with DnsServer(ZONE) as srv:
        yield srv


async def ask(
    srv: DnsServer, name: str, rdtype: str, *, tcp: bool = False, timeout: float = 2.0
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(query, "127.0.0.1", timeout=timeout, port=srv.port)
    return await dns.asyncquery.udp(query, "127.0.0.1", timeout=timeout, port=srv.port)


def texts(response: dns.message.Message, rdtype: str) -> list[str]:
    want = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in response.answer if rrset.rdtype == want for rd in rrset)


async def test_binds_an_ephemeral_port_on_loopback(server: DnsServer) -> None:
    assert server.port > 0
    assert server.nameserver == f"127.0.0.1:{server.port}"


async def test_mx_a_aaaa_txt(server: DnsServer) -> None:
    mx = await ask(server, "example.test", "MX")
    assert mx.rcode() == dns.rcode.NOERROR and mx.flags & dns.flags.AA
    assert texts(mx, "MX") == ["10 mx1.example.test.", "20 mx2.example.test."]
    assert texts(await ask(server, "MX1.Example.Test.", "A"), "A") == ["127.0.0.1", "127.0.0.2"]
    assert texts(await ask(server, "mx1.example.test", "AAAA"), "AAAA") == ["::1"]
    assert texts(await ask(server, "example.test", "TXT"), "TXT") == ['"v=spf1 -all"']


async def test_null_mx(server: DnsServer) -> None:
    assert texts(await ask(server, "nomail.test", "MX"), "MX") == ["0 ."]


async def test_nxdomain_and_nodata_carry_an_soa(server: DnsServer) -> None:
    nx = await ask(server, "nowhere.test", "MX")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert (await ask(server, "empty.test", "A")).rcode() == dns.rcode.NOERROR  # exists
    nodata = await ask(server, "mx1.example.test", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    for response in (nx, nodata):
        (soa,) = response.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 60


async def test_cname_chain_is_followed(server: DnsServer) -> None:
    response = await ask(server, "alias.test", "MX")
    assert texts(response, "CNAME") == ["alias2.test.", "example.test."]
    assert texts(response, "MX") == ["10 mx1.example.test.", "20 mx2.example.test."]
    assert texts(await ask(server, "alias.test", "CNAME"), "CNAME") == ["alias2.test."]
    assert (await ask(server, "dangling.test", "A")).rcode() == dns.rcode.NXDOMAIN
    looped = await ask(server, "loop1.test", "A")  # terminates
    assert not texts(looped, "A")


async def test_wildcard(server: DnsServer) -> None:
    assert texts(await ask(server, "anything.wild.test", "A"), "A") == ["127.0.0.7"]
    assert (await ask(server, "a.b.wild.test", "A")).rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("behaviour", "rcode"),
    [(Behaviour.SERVFAIL, dns.rcode.SERVFAIL), (Behaviour.REFUSED, dns.rcode.REFUSED)],
)
async def test_error_rcodes(server: DnsServer, behaviour: Behaviour, rcode: int) -> None:
    server.zone.behave("example.test", behaviour)
    assert (await ask(server, "example.test", "MX")).rcode() == rcode
    server.zone.behave("example.test", None)
    assert (await ask(server, "example.test", "MX")).rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize("tcp", [False, True])
async def test_drop_never_answers(server: DnsServer, tcp: bool) -> None:
    server.zone.behave("example.test", Behaviour.DROP)
    with pytest.raises(dns.exception.Timeout):
        await ask(server, "example.test", "MX", tcp=tcp, timeout=1.0)
    assert server.count("example.test", "MX") == 1


async def test_slow_answers_after_the_delay(server: DnsServer) -> None:
    server.zone.behave("example.test", Behaviour.SLOW, delay=0.05)
    assert texts(await ask(server, "example.test", "MX"), "MX")
    assert server.zone.behaviour("example.test") == (Behaviour.SLOW, 0.05)


async def test_truncate_sets_tc_over_udp_only(server: DnsServer) -> None:
    server.zone.behave("example.test", Behaviour.TRUNCATE)
    udp = await ask(server, "example.test", "MX")
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = await ask(server, "example.test", "MX", tcp=True)
    assert not tcp.flags & dns.flags.TC and texts(tcp, "MX")
    assert [q.transport for q in server.log] == ["udp", "tcp"]


async def test_answers_too_big_for_udp_are_truncated(server: DnsServer) -> None:
    server.zone.set(
        "big.test", "TXT", [f"{i}" * 200 for i in range(10)]
    )  # > 512 bytes, no EDNS in the query
    udp = await ask(server, "big.test", "TXT")
    assert udp.flags & dns.flags.TC and not udp.answer
    assert len(texts(await ask(server, "big.test", "TXT", tcp=True), "TXT")) == 10
    query = dns.message.make_query("big.test", "TXT", use_edns=0, payload=4096)
    edns = await dns.asyncquery.udp(query, "127.0.0.1", timeout=2, port=server.port)
    assert not edns.flags & dns.flags.TC and len(texts(edns, "TXT")) == 10


async def test_garbage_over_tcp_is_not_a_dns_message(server: DnsServer) -> None:
    server.zone.behave("example.test", Behaviour.GARBAGE)
    assert (await ask(server, "example.test", "MX")).flags & dns.flags.TC
    with pytest.raises(dns.exception.DNSException):
        await ask(server, "example.test", "MX", tcp=True)


async def test_query_counter(server: DnsServer) -> None:
    await ask(server, "example.test", "MX")
    await ask(server, "example.test", "MX", tcp=True)
    await ask(server, "mx1.example.test", "A")
    assert server.queries == 3
    assert server.count("EXAMPLE.test.") == 2
    assert server.count(rtype="A") == 1
    assert server.log[1] == Query("example.test", "MX", "tcp")
    server.reset_counts()
    assert server.queries == 0


async def test_junk_and_empty_queries(server: DnsServer) -> None:
    assert await server.respond(b"\x00\x01junk", "udp") is None
    empty = dns.message.Message()
    reply = await server.respond(empty.to_wire(), "udp")
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


async def test_zone_is_live_and_mutable(server: DnsServer) -> None:
    server.zone.add("new.test", "A", "127.0.0.9")
    server.zone.add("new.test", "A", "127.0.0.10")
    assert texts(await ask(server, "new.test", "A"), "A") == ["127.0.0.10", "127.0.0.9"]
    server.zone.set("new.test", "A", [])
    assert (await ask(server, "new.test", "A")).rcode() == dns.rcode.NOERROR  # NODATA
    server.zone.remove("new.test")
    assert (await ask(server, "new.test", "A")).rcode() == dns.rcode.NXDOMAIN


def test_bad_records_fail_when_declared() -> None:
    with pytest.raises(dns.exception.SyntaxError):
        Zone({"x.test": {"A": ["not an address"]}})


def test_dnsbl_helpers() -> None:
    assert dnsbl_name("Spam.Test.", "dbl.example.") == "spam.test.dbl.example"
    zone = Zone()
    zone.list_in_dnsbl("spam.test", "dbl.example")
    assert zone.lookup("spam.test.dbl.example") == {"A": ["127.0.1.2"]}


async def test_tcp_connection_serves_several_queries(server: DnsServer) -> None:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for name in ("example.test", "nomail.test"):
        wire = dns.message.make_query(name, "MX").to_wire()
        writer.write(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        assert dns.message.from_wire(await reader.readexactly(length)).answer
    writer.close()
    await writer.wait_closed()


def test_thread_runner_serves_sync_callers() -> None:
    with run_dns_server_in_thread({"sync.test": {"A": ["127.0.0.3"]}}) as srv:
        query = dns.message.make_query("sync.test", "A")
        response = dns.query.udp(query, "127.0.0.1", timeout=2, port=srv.port)
        assert texts(response, "A") == ["127.0.0.3"]
        response = dns.query.tcp(query, "127.0.0.1", timeout=2, port=srv.port)
        assert texts(response, "A") == ["127.0.0.3"]
        assert srv.queries == 2

"""engine/netpolicy.py: which MX addresses may be dialled."""

from __future__ import annotations

import pytest

from mailvet.engine.netpolicy import is_public_address

# Only parsed, never connected to: documentation / well-known public anycast addresses.
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "142.250.102.27",  # a Gmail MX address
    "40.107.22.52",  # an Outlook protection address
    "2606:4700:4700::1111",
    "2a00:1450:4025:401::1b",
    "[2606:4700:4700::1111]",
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:0808:0808::1",  # 6to4 wrapping 8.8.8.8
]

NOT_PUBLIC = [
    # loopback
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "::1",
    # RFC 1918
    "10.0.0.5",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    # link-local (cloud metadata!)
    "169.254.169.254",
    "fe80::1",
    "fe80::1%eth0",
    # CGNAT
    "100.64.0.1",
    "100.127.255.254",
    # unspecified, broadcast, reserved, this-network
    "0.0.0.0",
    "0.1.2.3",
    "255.255.255.255",
    "240.0.0.1",
    "::",
    # multicast
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    # documentation / benchmarking / IETF
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "192.0.0.8",
    "2001:db8::1",
    # unique local, site local
    "fc00::1",
    "fd12:3456:789a::1",
    "fec0::1",
    # IPv4-mapped / compatible / NAT64 / 6to4 / Teredo wrapping private addresses
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "::10.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b:1::a00:1",
    "2002:7f00:0001::1",
    "2002:c0a8:0101::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45
    "2001:0::f5ff:fffe",
    # garbage
    "",
    "localhost",
    "mx.example.com",
    "999.1.1.1",
    "1.2.3",
    "[::1]",
    " 127.0.0.1 ",
]


@pytest.mark.parametrize("ip", PUBLIC)
def test_public(ip: str) -> None:
    assert is_public_address(ip) is True


@pytest.mark.parametrize("ip", NOT_PUBLIC)
def test_not_public(ip: str) -> None:
    assert is_public_address(ip) is False

"""Which addresses the SMTP stage may connect to.

An MX record is attacker-controlled data: anyone can publish ``MX 10 intranet.example``
pointing at 10.0.0.5 or 127.0.0.1 and make a verification service probe its own
network. Unless ``settings.allow_private_mx`` is set, only globally routable unicast
addresses are dialled. Addresses that wrap an IPv4 address (IPv4-mapped, IPv4-compatible,
NAT64, 6to4, Teredo) are judged by the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_public_address"]

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 shared address space
# IETF protocol assignments (RFC 6890); older Pythons only know parts of it as private.
_IETF = ipaddress.IPv4Network("192.0.0.0/24")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215 local-use translation
_IPV4_COMPAT = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible (and ::, ::1)


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip in _CGNAT
        or ip in _IETF
        or not ip.is_global
    )


def _public_v6(ip: ipaddress.IPv6Address) -> bool:
    if ip.ipv4_mapped is not None:
        return _public_v4(ip.ipv4_mapped)
    if ip in _IPV4_COMPAT or ip in _NAT64_LOCAL:
        return False
    if ip in _NAT64:
        return _public_v4(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        return _public_v4(ip.sixtofour)
    if ip.teredo is not None:
        server, client = ip.teredo
        return _public_v4(server) and _public_v4(client)
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_site_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def is_public_address(ip: str) -> bool:
    """True when ``ip`` is a globally routable unicast address we may connect to.

    Anything unparsable is not public. Accepts "[v6]" brackets and "%zone" suffixes.
    """
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:  # a zone id means link-scoped anyway
        return False
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv4Address):
        return _public_v4(addr)
    return _public_v6(addr)

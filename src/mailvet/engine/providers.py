"""Provider knowledge: who runs a domain's mail, from its MX host names.

The table is data (``data/providers.json``): each provider lists MX host suffixes,
matched on a label boundary (``aspmx.l.google.com`` is under ``google.com``,
``evilgoogle.com`` is not), case-insensitively, trailing dot ignored. The longest
matching suffix wins, so ``*.olc.protection.outlook.com`` (Outlook.com consumer
mailboxes) and ``*.mail.protection.outlook.com`` (Microsoft 365 tenants) are told apart.
``unreliable_accept`` marks providers that may answer 250 to RCPT for any local part
(Yahoo, AOL, Microsoft 365), so their acceptance proves little on its own (the verdict
trusts it when the same domain refused a random address as unknown).

Names are the wire's ``provider``: Mails.so's where known (``gmail`` for any mail hosted
by Google, Google Workspace included, as Mails.so answers), else short lower-case names.
docs/API.md ("Providers") lists the table; a test keeps the two equal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["Provider", "provider_for"]

_MAX_LABELS = 127  # a DNS name has at most this many labels; ignore anything longer


@dataclass(frozen=True, slots=True)
class Provider:
    name: str  # short stable slug, e.g. "gmail", "microsoft365"; the wire's ``provider``
    unreliable_accept: bool


def _normalise(host: str) -> str:
    return host.strip().rstrip(".").lower()


@cache
def _table() -> dict[str, Provider]:
    """MX host suffix -> provider, from the packaged JSON."""
    raw = resources.files("mailvet.engine").joinpath("data/providers.json").read_text("utf-8")
    table: dict[str, Provider] = {}
    for entry in json.loads(raw)["providers"]:
        provider = Provider(str(entry["name"]), bool(entry["unreliable_accept"]))
        for suffix in entry["suffixes"]:
            key = _normalise(str(suffix))
            if key in table:
                raise ValueError(f"providers.json: suffix {key!r} listed twice")
            table[key] = provider
    return table


def _match(host: str) -> Provider | None:
    labels = _normalise(host).split(".")
    if len(labels) > _MAX_LABELS or not all(labels):
        return None
    table = _table()
    for start in range(len(labels)):  # longest suffix first
        provider = table.get(".".join(labels[start:]))
        if provider is not None:
            return provider
    return None


def provider_for(mx_hosts: Sequence[str]) -> Provider | None:
    """The provider of the first MX host (in the order given) that the table knows."""
    for host in mx_hosts:
        provider = _match(host)
        if provider is not None:
            return provider
    return None

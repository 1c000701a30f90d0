"""Provider knowledge: who runs a domain's mail, from its MX host names.

The table is data (``data/providers.json``): each provider lists MX host suffixes,
matched on a label boundary (``aspmx.l.google.com`` is under ``google.com``,
``evilgoogle.com`` is not), case-insensitively, trailing dot ignored. The longest
matching suffix wins, so ``*.olc.protection.outlook.com`` (Outlook.com consumer
mailboxes) and ``*.mail.protection.outlook.com`` (Microsoft 365 tenants) are told apart.
``unreliable_accept`` marks providers that may answer 250 to RCPT for any local part
(Yahoo, AOL, Microsoft 365), so their acceptance proves little on its own (the verdict
trusts it when the same domain refused a random address as unknown). An optional
``limits`` object caps how hard the batch engine asks the provider's MX (sessions at
once, recipients a session, RCPT a second, connects a minute; ``jobs/limits.py``).

Names are the wire's ``provider``: Mails.so's where known (``gmail`` for any mail hosted
by Google, Google Workspace included, as Mails.so answers), else short lower-case names.
docs/API.md ("Providers") lists the table; a test keeps the two equal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

__all__ = ["Provider", "ProviderLimits", "provider_for"]

_MAX_LABELS = 127  # a DNS name has at most this many labels; ignore anything longer


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """How hard the batch engine may ask this provider's MX (``jobs/limits.py``); None:
    the setting's value. The settings cap these too."""

    max_sessions: int | None = None
    rcpt_per_session: int | None = None
    rcpt_per_second: float | None = None
    connects_per_minute: int | None = None


_LIMIT_KEYS = frozenset(ProviderLimits.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Provider:
    name: str  # short stable slug, e.g. "gmail", "microsoft365"; the wire's ``provider``
    unreliable_accept: bool
    # batch lane limits (the row's "limits" object); not part of a provider's identity
    limits: ProviderLimits | None = field(default=None, compare=False)


def _limits(name: str, raw: object) -> ProviderLimits | None:
    """A row's optional "limits" object; every value a positive number."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw.keys() <= _LIMIT_KEYS:
        raise ValueError(f"providers.json: bad limits for {name!r}: {raw!r}")
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"providers.json: {name!r} limit {key} must be > 0")

    def whole(key: str) -> int | None:
        value = raw.get(key)
        return None if value is None else int(value)

    per_second = raw.get("rcpt_per_second")
    return ProviderLimits(
        max_sessions=whole("max_sessions"),
        rcpt_per_session=whole("rcpt_per_session"),
        rcpt_per_second=None if per_second is None else float(per_second),
        connects_per_minute=whole("connects_per_minute"),
    )


def _normalise(host: str) -> str:
    return host.strip().rstrip(".").lower()


@cache
def _table() -> dict[str, Provider]:
    """MX host suffix -> provider, from the packaged JSON."""
    raw = resources.files("mailvet.engine").joinpath("data/providers.json").read_text("utf-8")
    table: dict[str, Provider] = {}
    for entry in json.loads(raw)["providers"]:
        name = str(entry["name"])
        limits = _limits(name, entry.get("limits"))
        provider = Provider(name, bool(entry["unreliable_accept"]), limits)
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

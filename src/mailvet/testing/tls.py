"""Throw-away TLS material for the simulated internet (STARTTLS on loopback).

The certificates come from ``trustme`` (a dev dependency): a private CA that exists
only in this process, issuing a leaf for the simulated MX names. The engine never
verifies MX certificates (they are routinely self-signed in the wild), so the CA is
only exposed for tests that want to check the handshake with verification on.
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from typing import Any

__all__ = ["client_context", "server_context"]

_IDENTITIES = ("localhost", "127.0.0.1", "::1", "mx.sim.test", "*.sim.test")


@lru_cache(maxsize=1)
def _ca() -> Any:
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - dev extra missing
        raise RuntimeError("STARTTLS in the simulated SMTP server needs `trustme`") from exc
    return trustme.CA()


def server_context() -> ssl.SSLContext:
    """A server-side context with a certificate for the simulated MX hosts."""
    ca = _ca()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*_IDENTITIES).configure_cert(ctx)
    return ctx


def client_context() -> ssl.SSLContext:
    """A client context that trusts the simulated CA (verification on)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    _ca().configure_trust(ctx)
    return ctx

"""Shared fixtures: settings that never reach beyond loopback."""

from __future__ import annotations

import pytest

from mailvet.settings import Settings


@pytest.fixture
def offline_settings(tmp_path: object) -> Settings:
    """Settings for tests that must not do DNS at all (no nameserver is reachable)."""
    return Settings(dns_nameservers=["127.0.0.1:9"], dns_timeout=0.2, deadline=1.0)

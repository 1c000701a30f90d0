"""Typo suggestion for the domain of an address: ``gmial.com`` -> ``gmail.com``.

The method (documented with its reasoning in docs/LISTS.md):

- The targets are a curated list of popular mailbox domains (``data/popular_domains.txt``,
  loaded by ``engine.datasets``, most used first). A domain on that list never gets a
  suggestion, nor does a real provider marked ``not-a-typo`` there (``y7mail.com`` is
  Yahoo's, not a slip for ``ymail.com``).
- A domain is split into its first label (the *name*: ``gmial``) and the rest (the
  *suffix*: ``com``, ``co.uk``). Name and suffix are compared separately, with the
  optimal string alignment (restricted Damerau-Levenshtein) distance: one insertion,
  deletion, substitution or transposition of neighbours costs 1.
- A mistyped name is corrected only when the suffix is exactly the target's (or an
  unreal suffix, below), the first letter is right (first-letter slips are rare, and
  the guard keeps ``wahoo.com``, ``email.com`` and ``cloud.com`` away from
  ``yahoo.com``, ``gmail.com`` and ``icloud.com``), and the distance is within a limit
  scaled by the target name's length: 0 up to 4 characters (``live``, ``aol``: too many
  real names are one edit away), 1 up to 8, 2 from 9 (``googlemail``).
  Targets marked ``tld-only`` (ordinary words, surnames: ``rogers``, ``naver``) never
  have their name corrected.
- A mistyped suffix is corrected when the name is exactly a target's name and the
  suffix is one edit from the target's suffix *and is not itself a real suffix*
  (``con``, ``cmo``, ``comm``; real means some known mail domain ends with it), or is on
  a short table of real top-level domains that are classic slips for ``.com`` /
  ``.net`` (``.co``, ``.cm``, ``.om``, ``.cam``, ``.ne``). So ``hotmail.co`` becomes
  ``hotmail.com`` while ``hotmail.ca`` and ``hotmail.co.uk`` (real, and not on the
  table) stay.
- Both wrong at once (``gmial.con``) only with an unreal suffix.
- The cheapest candidate wins; equal cost goes to the more popular target.

Results are cached (``functools.lru_cache``): domains repeat a lot in real traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from mailvet.engine.datasets import (
    disposable_domains,
    free_domains,
    popular_domains,
    popular_entries,
)

__all__ = ["osa_distance", "popular_domains", "suggest_domain"]

_CACHE_SIZE = 65_536

# Real top-level domains that are common slips for a popular suffix. Anything else that
# is a real suffix is taken as meant (yahoo.ca, hotmail.de).
_REAL_SUFFIX_SLIPS: dict[str, frozenset[str]] = {
    "com": frozenset({"co", "cm", "om", "cam"}),
    "net": frozenset({"ne"}),
}


def osa_distance(a: str, b: str, limit: int = 1_000) -> int:
    """Optimal string alignment distance, or ``limit + 1`` as soon as it exceeds ``limit``."""
    la, lb = len(a), len(b)
    if abs(la - lb) > limit:
        return limit + 1
    if la == 0 or lb == 0:
        return max(la, lb)
    before: list[int] = []
    prev = list(range(lb + 1))
    for i in range(1, la + 1):
        ai = a[i - 1]
        cur = [i] + [0] * lb
        row_min = i
        for j in range(1, lb + 1):
            bj = b[j - 1]
            v = prev[j - 1] + (ai != bj)
            if prev[j] + 1 < v:
                v = prev[j] + 1
            if cur[j - 1] + 1 < v:
                v = cur[j - 1] + 1
            if i > 1 and j > 1 and ai == b[j - 2] and a[i - 2] == bj and before[j - 2] + 1 < v:
                v = before[j - 2] + 1
            cur[j] = v
            if v < row_min:
                row_min = v
        if row_min > limit:
            return limit + 1
        before, prev = prev, cur
    return prev[lb] if prev[lb] <= limit else limit + 1


@dataclass(frozen=True, slots=True)
class _Target:
    domain: str
    name: str
    suffix: str
    rank: int
    name_limit: int  # how many edits of the name are corrected (0: tld-only)


@dataclass(frozen=True, slots=True)
class _Index:
    known: frozenset[str]  # never suggested for: the targets and the not-a-typo domains
    by_name: dict[str, tuple[_Target, ...]]  # exact name -> its targets
    by_initial: dict[str, tuple[_Target, ...]]  # first letter -> targets with name_limit > 0
    real_suffixes: frozenset[str]


def _name_limit(name: str) -> int:
    if len(name) <= 4:
        return 0
    return 1 if len(name) <= 8 else 2


@lru_cache(maxsize=1)
def _index() -> _Index:
    targets: list[_Target] = []
    exempt: set[str] = set()
    for rank, (domain, flags) in enumerate(popular_entries()):
        if "not-a-typo" in flags:
            exempt.add(domain)
            continue
        name, _, suffix = domain.partition(".")
        limit = 0 if "tld-only" in flags else _name_limit(name)
        targets.append(_Target(domain, name, suffix, rank, limit))
    by_name: dict[str, list[_Target]] = {}
    by_initial: dict[str, list[_Target]] = {}
    for t in targets:
        by_name.setdefault(t.name, []).append(t)
        if t.name_limit:
            by_initial.setdefault(t.name[0], []).append(t)
    # every suffix of a known domain after one of its dots (a level at a time: sets
    # of C-level partitions, at every start, so kept cheap)
    level = {d.partition(".")[2] for d in (*free_domains(), *disposable_domains())}
    level.update(t.suffix for t in targets)
    real: set[str] = set()
    while level:
        level.discard("")
        real |= level
        level = {d.partition(".")[2] for d in level if "." in d}
    return _Index(
        known=frozenset(t.domain for t in targets) | exempt,
        by_name={k: tuple(v) for k, v in by_name.items()},
        by_initial={k: tuple(v) for k, v in by_initial.items()},
        real_suffixes=frozenset(real),
    )


def _suffix_cost(typed: str, target: str, real: frozenset[str]) -> int | None:
    """1 if ``typed`` is a slip for ``target``, 0 if equal, else None."""
    if typed == target:
        return 0
    if typed in _REAL_SUFFIX_SLIPS.get(target, ()):
        return 1
    if typed in real:
        return None
    return 1 if osa_distance(typed, target, 1) <= 1 else None


@lru_cache(maxsize=_CACHE_SIZE)
def suggest_domain(domain: str) -> str | None:
    """The popular mail domain ``domain`` is probably a typo of, or ``None``.

    ``domain`` is the domain part of an address (any case, Unicode or ASCII); the
    answer is a lower-case domain. Internationalised domains never get a suggestion.
    """
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii() or "xn--" in domain:
        return None
    index = _index()
    if domain in index.known:
        return None
    name, _, suffix = domain.partition(".")
    if not name or not suffix:
        return None
    best: tuple[int, int, str] | None = None  # (cost, rank, domain)
    real = index.real_suffixes
    # 1. the name is right, the suffix is a slip
    for t in index.by_name.get(name, ()):
        cost = _suffix_cost(suffix, t.suffix, real)
        if cost and (best is None or (cost, t.rank) < best[:2]):
            best = (cost, t.rank, t.domain)
    # 2. the name is a slip (and the suffix right, or an unreal slip)
    for t in index.by_initial.get(name[0], ()):
        if abs(len(name) - len(t.name)) > t.name_limit or name == t.name:
            continue
        if suffix == t.suffix:
            suffix_cost = 0
        elif suffix in real:
            continue
        else:
            sc = _suffix_cost(suffix, t.suffix, real)
            if sc is None:
                continue
            suffix_cost = sc
        name_cost = osa_distance(name, t.name, t.name_limit)
        if name_cost > t.name_limit:
            continue
        cost = name_cost + suffix_cost
        if best is None or (cost, t.rank) < best[:2]:
            best = (cost, t.rank, t.domain)
    return None if best is None else best[2]

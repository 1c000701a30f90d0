"""Small bounded TTL caches for the hot path (validation results, key look-ups), and
the single flight that lets identical concurrent validations share one probe.

Both caches are plain dicts in insertion order with an expiry per entry: reads are one
dict look-up; when full, the oldest entries go first (FIFO, close enough to LRU for
a cache whose entries all share one TTL).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from mailvet.engine.facts import Facts

__all__ = ["CachedResult", "SingleFlight", "TTLCache", "cache_key", "result_cost"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A validation as the API serves it: the wire ``data`` dict, the facts behind it,
    and ``owner``, the id of the API key whose request ran the probe: the evidence in
    ``facts`` (transcript, SMTP reply, timings) is shown to that key only."""

    data: dict[str, Any]
    facts: Facts
    owner: str


class TTLCache(Generic[V]):
    """Bounded by entry count and, when ``cost`` is given, by the sum of entry costs
    (e.g. approximate bytes), so a few huge entries cannot grow it without bound."""

    __slots__ = (
        "_clock",
        "_cost",
        "_costs",
        "_data",
        "_max_cost",
        "_max_size",
        "_total",
        "hits",
        "misses",
    )

    def __init__(
        self,
        max_size: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        cost: Callable[[V], int] | None = None,
        max_cost: int = 0,
    ) -> None:
        self._max_size = max(1, max_size)
        self._clock = clock
        self._data: dict[str, tuple[float, V]] = {}
        self._cost = cost
        self._max_cost = max_cost
        self._costs: dict[str, int] = {}
        self._total = 0
        self.hits = 0
        self.misses = 0

    @property
    def total_cost(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, value = entry
        if expires < self._clock():
            self._drop(key)
            self.misses += 1
            return None
        self.hits += 1
        return value

    def set(self, key: str, value: V, ttl: float) -> None:
        if ttl <= 0:
            return
        cost = self._cost(value) if self._cost is not None else 0
        if self._cost is not None and cost > self._max_cost:
            return  # larger than the whole budget: not worth keeping
        self._drop(key)
        if len(self._data) >= self._max_size:
            self._shrink()
        if self._cost is not None:
            # oldest first; next(iter()) rather than list(self._data): a full cache must
            # not copy every key on every insert
            while self._data and self._total + cost > self._max_cost:
                self._drop(next(iter(self._data)))
            self._costs[key] = cost
            self._total += cost
        self._data[key] = (self._clock() + ttl, value)

    def clear(self) -> None:
        self._data.clear()
        self._costs.clear()
        self._total = 0

    def _drop(self, key: str) -> None:
        if self._data.pop(key, None) is not None and self._cost is not None:
            self._total -= self._costs.pop(key, 0)

    def _shrink(self) -> None:
        now = self._clock()
        expired = [k for k, (exp, _) in self._data.items() if exp < now]
        for k in expired:
            self._drop(k)
        excess = len(self._data) - self._max_size + 1
        if excess > 0:
            for k in list(self._data)[: max(excess, self._max_size // 10)]:
                self._drop(k)


def result_cost(entry: CachedResult) -> int:
    """Bytes of memory an entry holds: ``sys.getsizeof`` of every object it keeps
    alive, walked through its dicts, lists, tuples and dataclasses. A string costs what
    CPython stores (1, 2 or 4 bytes a character plus its header), so a non-ASCII
    transcript counts at its real size. Not counted: what every entry shares (the
    ``data`` dict's keys, which are the verdict's field names; ``None``, booleans,
    enum members, small ints). tests/api/test_cache.py checks it against tracemalloc."""
    seen: set[int] = set()  # an object both hold (the address, say) counts once
    return _held(entry.data, seen) + _held(entry.facts, seen)


def _held(obj: object, seen: set[int]) -> int:
    if obj is None or isinstance(obj, bool | Enum) or (type(obj) is int and -5 <= obj <= 256):
        return 0  # shared singletons and CPython's cached small ints
    ident = id(obj)
    if ident in seen:
        return 0
    seen.add(ident)
    size = sys.getsizeof(obj)
    if isinstance(obj, str | bytes | int | float):
        return size
    if isinstance(obj, dict):
        return size + sum(_held(v, seen) for v in obj.values())  # keys: shared field names
    if isinstance(obj, list | tuple):
        return size + sum(_held(v, seen) for v in obj)
    fields = getattr(obj, "__dataclass_fields__", None)
    if fields is not None:
        return size + sum(_held(getattr(obj, name), seen) for name in fields)
    return size


class SingleFlight(Generic[V]):
    """One running task per key: identical concurrent requests share it.

    ``join(key, start)`` returns the task already running for ``key``, or starts
    ``start()`` as a new task. Callers wait with ``asyncio.shield(task)``, so a caller
    that is cancelled (its client went away) leaves the task running for the others;
    an exception the task raises reaches every caller, and the key is forgotten as soon
    as the task ends, so the next caller starts afresh. Bounded: at most ``max_keys``
    keys are shared at once; past that a new task runs unshared.
    """

    __slots__ = ("_max_keys", "_running", "_tasks")

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max(1, max_keys)
        self._tasks: dict[str, asyncio.Task[V]] = {}
        self._running: set[asyncio.Task[V]] = set()  # shared or not, for close()

    def __len__(self) -> int:
        return len(self._tasks)

    def join(
        self, key: str, start: Callable[[], Coroutine[Any, Any, V]]
    ) -> tuple[asyncio.Task[V], bool]:
        """The task for ``key`` and whether this call started it."""
        task = self._tasks.get(key)
        if task is not None and not task.done():
            return task, False
        task = asyncio.create_task(start())
        self._running.add(task)
        shared = len(self._tasks) < self._max_keys
        if shared:
            self._tasks[key] = task

        def done(finished: asyncio.Task[V]) -> None:
            self._running.discard(finished)
            if shared and self._tasks.get(key) is finished:
                del self._tasks[key]
            if not finished.cancelled():
                finished.exception()  # retrieved: no "never retrieved" noise if all left

        task.add_done_callback(done)
        return task, True

    async def close(self) -> None:
        """Cancel every running task (app shutdown) and wait for them to end."""
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


def cache_key(raw: str, facts: Facts) -> str:
    """The cache key of an address, from the offline facts of ``raw``.

    A valid address is keyed on the syntax stage's normalised form (so
    ``a@Example.com`` and ``a@example.com`` share an entry: normalisation lives in
    one place); anything else on the exact input, never trimmed, so an input the
    syntax stage rejects (``"a@example.com "``) never meets the verdict of the
    address it resembles. The prefixes keep the two kinds of key apart.
    """
    syntax = facts.syntax
    if syntax.ok:
        return "v:" + syntax.email
    return "r:" + raw

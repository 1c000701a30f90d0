"""What the rest of mailvet needs of an engine: the ``Engine`` protocol and ``Checked``.

The API (``api/deps.py``, ``api/app.py``), the batch runner (``jobs/inprocess.py``) and
the test double ``mailvet.testing.engine.FakeEngine`` speak to an engine only through
this protocol; ``mailvet.engine.pipeline.Engine`` is the implementation. mypy checks
both against it (``make typecheck`` covers tests/ too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailvet.engine.facts import Facts
from mailvet.verdict import Verdict

__all__ = ["Checked", "Engine"]


@dataclass(frozen=True, slots=True)
class Checked:
    """A verdict and the stage facts it was decided from."""

    verdict: Verdict
    facts: Facts


class Engine(Protocol):
    """Verifies addresses; built once per process and shared by every request."""

    def check_offline(self, raw: str) -> Facts:
        """The stages that need no I/O (syntax, lists, typo); never raises."""
        ...

    def verdict_offline(self, raw: str) -> Verdict:
        """The verdict of the offline stages alone (``mailvet validate --offline``)."""
        ...

    async def verify(
        self, raw: str, *, offline: bool = False, deadline: float | None = None
    ) -> Checked:
        """The whole pipeline for one address, answering within ``deadline`` seconds
        (default: the engine's own setting); never raises for any input."""
        ...

    async def close(self) -> None:
        """Release network resources (resolvers, pooled connections)."""
        ...

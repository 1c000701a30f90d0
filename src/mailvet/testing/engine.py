"""``FakeEngine``: a scripted ``mailvet.engine.Engine`` for tests of what sits on top.

It decides by domain, without any network, so route and batch-runner behaviour is
tested apart from the pipeline (tests that need the real engine build
``mailvet.engine.pipeline.Engine`` on the simulated internet). mypy checks it against
the protocol, so it cannot drift from the real engine's signatures.

Domains: see ``OUTCOMES``; ``stall.test`` never answers; anything else is
``unknown`` / ``no_connect``. The fake has no deadline of its own: it exercises the
caller's safety nets. ``calls``, ``in_flight``, ``max_in_flight`` and ``closed`` record
how it was used; ``gate`` and ``delay`` hold ``verify`` back.
"""

from __future__ import annotations

import asyncio

from mailvet.engine.facts import Facts, SyntaxFacts, TranscriptEntry
from mailvet.engine.protocol import Checked
from mailvet.verdict import Reason, Result, Verdict

__all__ = ["OUTCOMES", "STALL_DOMAIN", "FakeEngine"]

# domain -> (result, reason, score)
OUTCOMES: dict[str, tuple[Result, Reason, int]] = {
    "deliverable.test": (Result.DELIVERABLE, Reason.ACCEPTED_EMAIL, 100),
    "rejecting.test": (Result.UNDELIVERABLE, Reason.REJECTED_EMAIL, 10),
    "catchall.test": (Result.RISKY, Reason.CATCH_ALL, 80),
}
STALL_DOMAIN = "stall.test"


class FakeEngine:
    """Engine stand-in: ``verify`` decides by domain; ``stall.test`` never answers."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.delay = delay
        self.closed = False
        self.gate: asyncio.Event | None = None  # when set, verify waits for it
        self.in_flight = 0
        self.max_in_flight = 0

    def check_offline(self, raw: str) -> Facts:
        local, at, domain = raw.rpartition("@")
        ok = bool(at and local and "." in domain) and not any(c.isspace() for c in raw)
        syntax = SyntaxFacts(
            ok=ok,
            email=raw if not ok else f"{local}@{domain.lower()}",
            local=local if ok else None,
            domain=domain.lower() if ok else None,
            ascii_domain=domain.lower() if ok else None,
        )
        return Facts(syntax=syntax, offline=True)

    def verdict_offline(self, raw: str) -> Verdict:
        facts = self.check_offline(raw)
        if not facts.syntax.ok:
            return Verdict.make(
                email=raw[:254],
                score=0,
                isv_format=False,
                result=Result.UNDELIVERABLE,
                reason=Reason.INVALID_FORMAT,
            )
        return Verdict.make(
            email=facts.syntax.email,
            username=facts.syntax.local,
            domain=facts.syntax.domain,
            score=50,
            isv_format=True,
            result=Result.UNKNOWN,
            reason=Reason.NOT_CHECKED,
        )

    async def verify(
        self, raw: str, *, offline: bool = False, deadline: float | None = None
    ) -> Checked:
        self.calls.append(raw)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        facts = self.check_offline(raw)
        base = self.verdict_offline(raw)
        if not facts.syntax.ok or offline:
            return Checked(base, facts)
        facts.offline = False
        domain = facts.syntax.domain or ""
        if domain == STALL_DOMAIN:
            await asyncio.sleep(3600)
        result, reason, score = OUTCOMES.get(domain, (Result.UNKNOWN, Reason.NO_CONNECT, 40))
        facts.transcript = [
            TranscriptEntry(1.0, "dns", f"MX {domain}: mx.{domain}"),
            TranscriptEntry(2.0, "connect", f"mx.{domain}:25", f"mx.{domain}"),
            TranscriptEntry(5.5, "recv", "250 2.1.5 ok", f"mx.{domain}"),
        ]
        verdict = base._replace(
            result=result,
            reason=reason,
            score=score,
            isv_domain=True,
            isv_mx=True,
            mx_record=f"mx.{domain}",
        )
        return Checked(verdict, facts)

    async def close(self) -> None:
        self.closed = True

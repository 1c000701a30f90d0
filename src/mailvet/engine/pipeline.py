"""The only module that knows the order of the stages.

syntax -> lists (+ typo) -> dns -> smtp -> verdict. Each stage returns facts; the
verdict is decided once, by ``scoring.decide``. A single validation is bounded by
``settings.deadline``: whatever is known when it passes becomes the verdict, with the
DNS facts filled in and ``deadline_hit`` set.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mailvet.engine.dns import DnsStage
from mailvet.engine.facts import DnsOutcome, Facts
from mailvet.engine.lists import Lists
from mailvet.engine.providers import provider_for
from mailvet.engine.scoring import decide
from mailvet.engine.smtp import SmtpStage
from mailvet.engine.syntax import SyntaxPolicy, check_syntax
from mailvet.engine.transcript import Transcript
from mailvet.settings import Settings
from mailvet.verdict import Verdict

__all__ = ["Checked", "Engine"]


@dataclass(frozen=True, slots=True)
class Checked:
    verdict: Verdict
    facts: Facts


class Engine:
    """Runs the pipeline; built once per process from the settings and reused."""

    def __init__(
        self,
        settings: Settings,
        *,
        dns: DnsStage | None = None,
        smtp: SmtpStage | None = None,
    ) -> None:
        self.settings = settings
        self._policy = SyntaxPolicy.from_settings(settings)
        self._lists = Lists(settings)
        self._dns = dns
        self._smtp = smtp

    @property
    def dns(self) -> DnsStage:
        if self._dns is None:
            self._dns = DnsStage(self.settings)
        return self._dns

    @property
    def smtp(self) -> SmtpStage:
        if self._smtp is None:
            self._smtp = SmtpStage(self.settings)
        return self._smtp

    def check_offline(self, raw: str) -> Facts:
        """Syntax, lists and typo suggestion: no I/O."""
        syntax = check_syntax(raw, self._policy)
        if not syntax.ok:
            return Facts(syntax=syntax, offline=True)
        return Facts(syntax=syntax, lists=self._lists.check(syntax), offline=True)

    def verdict_offline(self, raw: str) -> Verdict:
        return decide(self.check_offline(raw))

    async def verify(self, raw: str, *, offline: bool = False) -> Checked:
        """The whole pipeline for one address, within ``settings.deadline``."""
        facts = self.check_offline(raw)
        if offline or not facts.syntax.ok or (facts.lists is not None and facts.lists.denied):
            return Checked(decide(facts), facts)
        facts.offline = False
        transcript = Transcript()
        try:
            async with asyncio.timeout(self.settings.deadline):
                await self._network(facts, transcript)
        except TimeoutError:
            facts.deadline_hit = True
            transcript.add("note", f"deadline of {self.settings.deadline:g} s reached")
        facts.transcript = transcript.entries
        return Checked(decide(facts), facts)

    async def _network(self, facts: Facts, transcript: Transcript) -> None:
        """DNS then SMTP; fills ``facts`` as it goes so a deadline keeps what is known."""
        syntax = facts.syntax
        assert syntax.ascii_domain is not None and syntax.domain is not None
        dns = await self.dns.lookup(syntax.ascii_domain, transcript)
        facts.dns = dns
        if dns.outcome is not DnsOutcome.OK:
            return
        provider = provider_for([mx.host for mx in dns.mx_hosts])
        facts.provider = provider.name if provider is not None else None
        # RCPT TO uses the A-label domain: every server understands it, SMTPUTF8 or not.
        rcpt = f"{syntax.local}@{syntax.ascii_domain}"
        facts.smtp = await self.smtp.probe(
            rcpt, syntax.ascii_domain, dns, transcript, provider=provider
        )

    async def close(self) -> None:
        if self._smtp is not None:
            await self._smtp.close()
        if self._dns is not None:
            await self._dns.close()

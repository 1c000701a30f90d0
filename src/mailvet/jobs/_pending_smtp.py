"""TEMPORARY stand-ins for part S's session exceptions (engine/smtp.py on i8-session),
same shapes; replaced by imports from mailvet.engine.smtp once that lands on main."""

from __future__ import annotations

from collections.abc import Sequence

from mailvet.engine.facts import SmtpFacts


class SessionEnded(Exception):
    def __init__(
        self, facts: SmtpFacts, answered: int = 0, partial: Sequence[SmtpFacts] = ()
    ) -> None:
        super().__init__(facts.message or facts.outcome.value)
        self.facts = facts
        self.answered = answered
        self.partial: list[SmtpFacts] = list(partial)


class SessionRefused(Exception):
    def __init__(self, facts: SmtpFacts) -> None:
        super().__init__(facts.message or facts.outcome.value)
        self.facts = facts

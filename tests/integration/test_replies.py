"""engine/replies.py through the real SMTP stage: every row of engine/reply_table.py is
answered to RCPT TO by a scripted SMTP server on loopback; the stage's outcome must be the
row's, and the reply text must reach SmtpFacts.message and the transcript (a BLOCKED
verdict quotes the server's words)."""

from __future__ import annotations

from mailvet.engine.facts import DnsFacts, DnsOutcome, MxHost, SmtpOutcome
from mailvet.engine.replies import parse_reply_lines
from mailvet.engine.reply_table import ROWS
from mailvet.engine.smtp import SmtpStage
from mailvet.engine.transcript import Transcript
from mailvet.settings import Settings
from mailvet.testing.smtp import Behaviour, Session, SmtpSim

_DNS = DnsFacts(DnsOutcome.OK, (MxHost(10, "mx1.rows.test", ("127.0.0.1",)),))


def _answer(rcpt: str, session: Session) -> str:
    local = rcpt.rsplit("@", 1)[0]
    if local.startswith("row") and local[3:].isdigit():
        return ROWS[int(local[3:])].raw  # as the server sends it: no templating
    return "550 5.1.1 no such user"  # the stage's random catch-all probe


def _quotes(message: str | None, text: str) -> bool:
    """``message`` is the reply text, or (bounded) a long start of it."""
    shown = (message or "").removesuffix("...")
    return text.startswith(shown) and len(shown) >= min(len(text), 200)


async def test_every_table_row_through_the_smtp_stage() -> None:
    wrong: list[str] = []
    async with SmtpSim(Behaviour(rcpt=_answer)) as sim:
        stage = SmtpStage(
            Settings(
                smtp_port=sim.port,
                allow_private_mx=True,
                smtp_connect_timeout=10.0,
                smtp_command_timeout=10.0,
            )
        )
        try:
            for i, row in enumerate(ROWS):
                transcript = Transcript()
                facts = await stage.probe(f"row{i}@rows.test", "rows.test", _DNS, transcript)
                reply = parse_reply_lines(row.raw.split("\n"))
                received = [e.text for e in transcript.entries if e.kind == "recv"]
                if facts.outcome is not row.expected:
                    wrong.append(f"{facts.outcome.value} != {row.expected.value}: {row.raw!r}")
                elif (facts.code, facts.enhanced) != (reply.code, reply.enhanced):
                    wrong.append(f"code {facts.code} {facts.enhanced}: {row.raw!r}")
                elif reply.code >= 400 and not _quotes(facts.message, reply.text):
                    wrong.append(f"message {facts.message!r}: {row.raw!r}")
                elif str(reply)[:400] not in "\n".join(received):
                    wrong.append(f"transcript lacks the reply: {row.raw!r}")
        finally:
            await stage.close()
    assert not sim.received("DATA")
    assert wrong == []


async def test_blocked_reply_is_quoted_whole_in_message_and_transcript() -> None:
    raw = (
        "550-Requested action not taken: mailbox unavailable\n"
        "550-Reject due to policy restrictions.\n"
        "550 For explanation visit http://postmaster.gmx.com/en/error-messages?ip=192.0.2.1&c=poli"
    )
    async with SmtpSim(Behaviour(rcpt=lambda rcpt, session: raw)) as sim:
        stage = SmtpStage(Settings(smtp_port=sim.port, allow_private_mx=True))
        transcript = Transcript()
        try:
            facts = await stage.probe("a@gmx.test", "gmx.test", _DNS, transcript)
        finally:
            await stage.close()
    assert facts.outcome is SmtpOutcome.BLOCKED  # was USER_UNKNOWN: a false "undeliverable"
    assert facts.code == 550
    assert facts.message == (
        "Requested action not taken: mailbox unavailable Reject due to policy restrictions."
        " For explanation visit http://postmaster.gmx.com/en/error-messages?ip=192.0.2.1&c=poli"
    )
    assert f"550 {facts.message}" in [e.text for e in transcript.entries if e.kind == "recv"]

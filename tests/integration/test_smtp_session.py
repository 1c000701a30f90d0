"""engine/smtp.py's batch session (SmtpStage.open_session / SmtpSession) on loopback.

Against the scripted servers of testing/smtp.py: many recipients in one session, RSET
where a server needs it, PIPELINING groups, sessions ended by 421 / hang-ups / timeouts
(SessionEnded with the answers read before), refusals at open (SessionRefused), hostile
servers. Timeouts are generous except where a test needs one to fire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from mailvet.engine.facts import SmtpFacts, SmtpOutcome
from mailvet.engine.replies import greylist_delay
from mailvet.engine.smtp import (
    SessionEnded,
    SessionRefused,
    SessionTimeouts,
    SmtpSession,
    SmtpStage,
)
from mailvet.engine.transcript import Transcript
from mailvet.settings import Settings
from mailvet.testing.smtp import (
    Behaviour,
    SmtpSim,
    accept,
    banner_421,
    catch_all,
    endless_multiline,
    garbage,
    greylist,
    huge_line,
    mailboxes,
    policy_block,
    reply_rule,
    starttls_broken,
    starttls_required,
    tarpit,
)

GENEROUS = SessionTimeouts(connect=10.0, command=10.0, session=120.0)
HOST = "mx1.sim.test"
IP = "127.0.0.1"


def settings(sim: SmtpSim, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"smtp_port": sim.port, "allow_private_mx": True}
    base.update(overrides)
    return Settings(**base)


@dataclass
class Opened:
    sim: SmtpSim
    stage: SmtpStage


@pytest.fixture
async def known() -> AsyncIterator[Opened]:
    """alice, bob and carol exist at corp.test; every other mailbox is unknown."""
    async with SmtpSim(mailboxes("alice", "bob", "carol")) as sim:
        yield Opened(sim, SmtpStage(settings(sim)))


async def open_session(stage: SmtpStage, **kwargs: Any) -> SmtpSession:
    timeouts = kwargs.pop("timeouts", GENEROUS)
    return await stage.open_session(HOST, IP, timeouts=timeouts, **kwargs)


def outcomes(facts: list[SmtpFacts]) -> list[SmtpOutcome]:
    return [f.outcome for f in facts]


# --- many recipients, one session ---------------------------------------------------------


async def test_many_recipients_one_connection_one_mail(known: Opened) -> None:
    addresses = [f"user{i}@corp.test" for i in range(30)] + ["alice@corp.test"]
    session = await open_session(known.stage)
    try:
        many = await session.rcpt_many(addresses)
        one = await session.rcpt("bob@corp.test")
    finally:
        await session.close()
    assert outcomes(many) == [SmtpOutcome.USER_UNKNOWN] * 30 + [SmtpOutcome.ACCEPTED]
    assert one.outcome is SmtpOutcome.ACCEPTED
    assert (one.mx_host, one.code, one.enhanced, one.catch_all) == (HOST, 250, "2.1.5", None)
    assert many[0].code == 550 and many[0].enhanced == "5.1.1"
    assert "User unknown" in (many[0].message or "")
    (sim_session,) = known.sim.sessions  # one connection
    assert sim_session.count("MAIL") == 1
    assert sim_session.count("RCPT") == 32
    assert sim_session.count("RSET") == 0
    assert sim_session.verbs()[-1] == "QUIT"
    assert not known.sim.received("DATA")
    assert known.sim.connects(IP) and len(known.sim.connects(IP)) == 1
    assert len(known.sim.rcpt_times(IP)) == 32
    assert (session.rcpts, session.errors) == (32, 30)
    assert session.pipelining


async def test_pipelining_groups_rcpts_in_writes_of_bounded_size(known: Opened) -> None:
    transcript = Transcript()
    session = await open_session(known.stage, transcript=transcript, pipeline_group=5)
    try:
        await session.rcpt_many([f"u{i}@corp.test" for i in range(12)])
    finally:
        await session.close()
    # the stage counts a round trip per write that awaits a reply: banner, EHLO, MAIL,
    # then 12 RCPTs in writes of 5, 5 and 2
    sends = [e.text for e in transcript.entries if e.kind == "send"]
    assert sends.count("EHLO mailvet.localhost") == 1
    assert sum(1 for s in sends if s.startswith("RCPT")) == 12
    assert known.sim.sessions[0].count("RCPT") == 12
    assert session.round_trips == 3 + 3 + 1  # + QUIT


@pytest.mark.parametrize("pipelining", [True, False])
async def test_pace_is_awaited_before_each_write_of_rcpts(pipelining: bool) -> None:
    async with SmtpSim(mailboxes("alice", pipelining=pipelining)) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage, pipeline_group=5)
        paced: list[tuple[int, int]] = []  # (RCPTs asked for, RCPTs the server had seen)

        async def pace(n: int) -> None:
            paced.append((n, sim.sessions[0].count("RCPT")))

        try:
            await session.rcpt_many([f"u{i}@corp.test" for i in range(12)], pace=pace)
            await session.rcpt("alice@corp.test", pace=pace)
            await session.catch_all("other.test")  # no pace given: not paced
        finally:
            await session.close()
    if pipelining:
        assert paced == [(5, 0), (5, 5), (2, 10), (1, 12)]
    else:
        assert paced == [(1, i) for i in range(13)]
    assert sum(n for n, _ in paced) == 13


async def test_without_pipelining_one_command_at_a_time() -> None:
    async with SmtpSim(mailboxes("alice", pipelining=False)) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        try:
            got = await session.rcpt_many(["alice@corp.test", "x@corp.test", "y@corp.test"])
        finally:
            await session.close()
    assert not session.pipelining
    assert outcomes(got) == [
        SmtpOutcome.ACCEPTED,
        SmtpOutcome.USER_UNKNOWN,
        SmtpOutcome.USER_UNKNOWN,
    ]
    assert session.round_trips == 3 + 3 + 1
    assert sim.sessions[0].verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "QUIT"]


async def test_helo_only_server() -> None:
    async with SmtpSim(mailboxes("alice", ehlo_supported=False)) as sim:
        stage = SmtpStage(settings(sim))
        async with await open_session(stage) as session:
            got = await session.rcpt_many(["alice@corp.test", "x@corp.test", "jürgen@corp.test"])
    assert not session.pipelining and not session.smtputf8
    assert outcomes(got) == [
        SmtpOutcome.ACCEPTED,
        SmtpOutcome.USER_UNKNOWN,
        SmtpOutcome.TEMPORARY,  # needs SMTPUTF8: never sent
    ]
    assert sim.sessions[0].verbs() == ["EHLO", "HELO", "MAIL", "RCPT", "RCPT", "QUIT"]


async def test_rset_and_mail_again_every_n_recipients(known: Opened) -> None:
    session = await open_session(known.stage, rcpt_per_transaction=4)
    try:
        got = await session.rcpt_many([f"u{i}@corp.test" for i in range(10)])
    finally:
        await session.close()
    assert len(got) == 10
    verbs = known.sim.sessions[0].verbs()
    assert verbs.count("MAIL") == 3 and verbs.count("RSET") == 2
    # never more than 4 RCPTs between two MAILs
    runs = "".join("M" if v == "MAIL" else "R" if v == "RCPT" else "" for v in verbs)
    assert max(len(r) for r in runs.split("M")) == 4
    assert session.transactions == 3


@pytest.mark.parametrize("pipelining", [True, False])
async def test_452_too_many_recipients_resets_and_goes_on(pipelining: bool) -> None:
    server = mailboxes("alice", max_rcpts_per_transaction=3, pipelining=pipelining)
    async with SmtpSim(server) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        try:
            addresses = [f"u{i}@corp.test" for i in range(7)] + ["alice@corp.test"]
            got = await session.rcpt_many(addresses)
            later = await session.rcpt_many(["x@corp.test", "y@corp.test", "z@corp.test"])
        finally:
            await session.close()
    assert outcomes(got) == [SmtpOutcome.USER_UNKNOWN] * 7 + [SmtpOutcome.ACCEPTED]
    assert all(f.code != 452 for f in got + later)  # a 452 4.5.3 is nobody's answer
    assert session.rcpt_per_transaction == 3  # it keeps to what the server takes
    (s,) = sim.sessions
    assert s.count("RSET") >= 2
    assert session.rcpts == 11


async def test_smtputf8_address_in_a_session(known: Opened) -> None:
    session = await open_session(known.stage)
    try:
        plain = await session.rcpt("alice@corp.test")
        utf8 = await session.rcpt("jürgen@corp.test")
    finally:
        await session.close()
    assert plain.outcome is SmtpOutcome.ACCEPTED
    assert utf8.outcome is SmtpOutcome.USER_UNKNOWN
    cmds = known.sim.sessions[0].commands
    mails = [c for c in cmds if c.startswith("MAIL")]
    plain_mail = "MAIL FROM:<verify@mailvet.localhost>"
    assert mails == [plain_mail, f"{plain_mail} SMTPUTF8"]
    assert "RCPT TO:<jürgen@corp.test>" in cmds


async def test_smtputf8_from_the_start_and_a_server_without_it() -> None:
    async with SmtpSim(accept(), by_ip={"127.0.0.2": accept(smtputf8=False)}) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage, smtputf8=True)
        lacking = await stage.open_session(HOST, "127.0.0.2", timeouts=GENEROUS, smtputf8=True)
        try:
            yes = await session.rcpt("jürgen@corp.test")
            no, ascii_ok = await lacking.rcpt_many(["jürgen@corp.test", "ann@corp.test"])
        finally:
            await session.close()
            await lacking.close()
    assert yes.outcome is SmtpOutcome.ACCEPTED
    assert no.outcome is SmtpOutcome.TEMPORARY and "SMTPUTF8" in (no.message or "")
    assert ascii_ok.outcome is SmtpOutcome.ACCEPTED
    by_ip = {s.local_ip: s for s in sim.sessions}
    assert by_ip["127.0.0.1"].commands[1].endswith(" SMTPUTF8")
    assert by_ip["127.0.0.2"].commands[1] == "MAIL FROM:<verify@mailvet.localhost>"
    assert not any("jürgen" in c for c in by_ip["127.0.0.2"].commands)  # never sent


async def test_unsafe_address_is_never_sent(known: Opened) -> None:
    session = await open_session(known.stage)
    try:
        bad, good = await session.rcpt_many(["a@corp.test>\r\nDATA", "alice@corp.test"])
    finally:
        await session.close()
    assert bad.outcome is SmtpOutcome.INVALID_SMTP
    assert good.outcome is SmtpOutcome.ACCEPTED
    assert not known.sim.received("DATA")
    assert known.sim.sessions[0].count("RCPT") == 1


# --- catch-all ---------------------------------------------------------------------------


async def test_catch_all_probed_once_per_domain() -> None:
    sim = SmtpSim(mailboxes("alice"), by_domain={"any.test": catch_all()})
    async with sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        try:
            first = await session.catch_all("any.test")
            again = await session.catch_all("ANY.test")
            strict = await session.catch_all("corp.test")
        finally:
            await session.close()
        other = await open_session(stage)  # another session: the stage remembers
        try:
            remembered = await other.catch_all("any.test")
        finally:
            await other.close()
    assert (first, again, strict, remembered) == (True, True, False, True)
    rcpts = [c for s in sim.sessions for c in s.commands if c.startswith("RCPT")]
    assert len(rcpts) == 2
    assert sum(c.endswith("@any.test>") for c in rcpts) == 1


async def test_catch_all_known_false_after_a_user_unknown_answer(known: Opened) -> None:
    session = await open_session(known.stage)
    try:
        await session.rcpt("nobody@corp.test")
        assert await session.catch_all("corp.test") is False
    finally:
        await session.close()
    assert known.sim.sessions[0].count("RCPT") == 1


async def test_catch_all_unknown_on_other_replies() -> None:
    async with SmtpSim(greylist(delay=3600)) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        try:
            assert await session.catch_all("grey.test") is None
        finally:
            await session.close()
        assert stage.catch_all_cached("grey.test") is None


async def test_catch_all_single_flight_across_sessions() -> None:
    # two sessions ask the same domain at once: one random RCPT in all
    async with SmtpSim(accept(latency_ms=200)) as sim:
        stage = SmtpStage(settings(sim))
        one = await open_session(stage)
        two = await open_session(stage)
        try:
            got = await asyncio.gather(one.catch_all("any.test"), two.catch_all("any.test"))
        finally:
            await one.close()
            await two.close()
    assert list(got) == [True, True]
    assert sum(s.count("RCPT") for s in sim.sessions) == 1


async def test_catch_all_asked_again_when_the_first_session_ends() -> None:
    # the first asker's server hangs up (421) instead of answering: the second asks itself
    sim = SmtpSim(accept(), by_ip={"127.0.0.2": accept(max_rcpts_per_session=0, latency_ms=200)})
    async with sim:
        stage = SmtpStage(settings(sim))
        doomed = await stage.open_session(HOST, "127.0.0.2", timeouts=GENEROUS)
        healthy = await open_session(stage)
        try:
            first, second = await asyncio.gather(
                doomed.catch_all("any.test"), healthy.catch_all("any.test"), return_exceptions=True
            )
        finally:
            await doomed.close()
            await healthy.close()
    assert isinstance(first, SessionEnded) and first.facts.code == 421
    assert second is True
    assert stage.catch_all_cached("any.test") is True
    assert not stage._catch_all_probing


# --- greylisting ---------------------------------------------------------------------------


async def test_greylist_delay_readable_from_the_answer() -> None:
    async with SmtpSim(greylist(delay=120)) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        try:
            facts = await session.rcpt("alice@corp.test")
        finally:
            await session.close()
    assert facts.outcome is SmtpOutcome.TEMPORARY
    assert (facts.code, facts.enhanced) == (450, "4.2.0")
    delay = greylist_delay(facts)
    assert delay is not None and 100 <= delay <= 120


async def test_greylisted_then_accepted_in_a_later_session() -> None:
    async with SmtpSim(greylist(delay=0)) as sim:
        stage = SmtpStage(settings(sim))
        async with await open_session(stage) as first:
            grey = await first.rcpt("alice@corp.test")
        async with await open_session(stage) as second:
            ok = await second.rcpt("alice@corp.test")
    assert grey.outcome is SmtpOutcome.TEMPORARY
    assert ok.outcome is SmtpOutcome.ACCEPTED


# --- sessions the server ends --------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
async def test_error_limit_ends_the_session_with_the_answers_read(pipelining: bool) -> None:
    server = mailboxes("alice", error_limit=5, pipelining=pipelining)
    async with SmtpSim(server) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        addresses = ["alice@corp.test"] + [f"u{i}@corp.test" for i in range(9)]
        with pytest.raises(SessionEnded) as info:
            await session.rcpt_many(addresses)
        ended = info.value
        assert ended.answered == 6  # alice and 5 unknown users, then 421
        assert len(ended.partial) == 6
        assert outcomes(ended.partial) == [SmtpOutcome.ACCEPTED] + [SmtpOutcome.USER_UNKNOWN] * 5
        assert ended.facts.code == 421 and ended.facts.enhanced == "4.7.0"
        assert "too many errors" in (ended.facts.message or "")
        assert ended.facts.message is not None and ended.facts.message.startswith("421")
        assert ended.facts.outcome is SmtpOutcome.TEMPORARY
        assert session.ended == ended.facts
        # the session stays ended: nothing more is sent
        with pytest.raises(SessionEnded) as again:
            await session.rcpt("bob@corp.test")
        assert again.value.answered == 0 and again.value.partial == []
        await session.close()
        await session.close()  # idempotent
        # the rest in a new session
        rest = addresses[ended.answered :]
        async with await open_session(stage) as fresh:
            got = await fresh.rcpt_many(rest[:3])
    assert outcomes(got) == [SmtpOutcome.USER_UNKNOWN] * 3
    assert len(sim.sessions) == 2
    assert sim.sessions[0].count("QUIT") == 0


async def test_max_rcpts_per_session_421_single_rcpt() -> None:
    async with SmtpSim(accept(max_rcpts_per_session=2)) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        assert (await session.rcpt("a@corp.test")).outcome is SmtpOutcome.ACCEPTED
        assert (await session.rcpt("b@corp.test")).outcome is SmtpOutcome.ACCEPTED
        with pytest.raises(SessionEnded) as info:
            await session.rcpt("c@corp.test")
        await session.close()
    assert info.value.answered == 0
    assert info.value.facts.code == 421
    assert "Too many recipients this session" in (info.value.facts.message or "")
    assert session.rcpts == 2


async def test_hang_up_mid_group_keeps_the_answers_before() -> None:
    # the server drops the connection on the 2nd RCPT of the session
    async with SmtpSim(accept(second_rcpt="close")) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        with pytest.raises(SessionEnded) as info:
            await session.rcpt_many(["a@corp.test", "b@corp.test", "c@corp.test"])
        await session.close()
    assert info.value.answered == 1
    assert outcomes(info.value.partial) == [SmtpOutcome.ACCEPTED]
    assert info.value.facts.outcome is SmtpOutcome.TEMPORARY
    assert "closed" in (info.value.facts.message or "")


async def test_stall_mid_group_times_out() -> None:
    async with SmtpSim(accept(second_rcpt="stall")) as sim:
        stage = SmtpStage(settings(sim))
        timeouts = SessionTimeouts(connect=10.0, command=1.0, session=60.0)
        session = await open_session(stage, timeouts=timeouts)
        with pytest.raises(SessionEnded) as info:
            await session.rcpt_many(["a@corp.test", "b@corp.test"])
        await session.close()
    assert info.value.answered == 1
    assert info.value.facts.outcome is SmtpOutcome.TIMEOUT


async def test_421_naming_our_ip_mid_group_is_blocked_and_quoted() -> None:
    unusual = (
        "421-4.7.0 [{ip}] Our system has detected an unusual rate of\n"
        "421 4.7.0 unsolicited mail originating from your IP address."
    )
    sim = SmtpSim(accept(), by_address={"c@corp.test": Behaviour(rcpt=reply_rule(unusual))})
    async with sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        with pytest.raises(SessionEnded) as info:
            await session.rcpt_many(["a@corp.test", "b@corp.test", "c@corp.test", "d@corp.test"])
        await session.close()
    ended = info.value
    assert ended.answered == 2 and outcomes(ended.partial) == [SmtpOutcome.ACCEPTED] * 2
    assert ended.facts.outcome is SmtpOutcome.BLOCKED
    assert (ended.facts.code, ended.facts.enhanced) == (421, "4.7.0")
    message = ended.facts.message or ""
    assert message.startswith("421 4.7.0 [127.0.0.1] Our system has detected an unusual rate")
    assert "unsolicited mail" in message
    assert sim.sessions[0].count("QUIT") == 0  # the server closed the channel: no QUIT


async def test_every_address_answered_across_sessions_after_421s() -> None:
    # what the scheduler does with SessionEnded: the unanswered rest in a new session
    addresses = [f"u{i}@corp.test" for i in range(40)] + ["alice@corp.test"]
    async with SmtpSim(mailboxes("alice", error_limit=7)) as sim:
        stage = SmtpStage(settings(sim))
        answers: dict[str, SmtpFacts] = {}
        todo = list(addresses)
        while todo:
            async with await open_session(stage) as session:
                try:
                    got = await session.rcpt_many(todo)
                except SessionEnded as ended:
                    got = ended.partial
            for address, facts in zip(todo, got, strict=False):
                assert address not in answers
                answers[address] = facts
            todo = todo[len(got) :]
    assert list(answers) == addresses
    assert answers["alice@corp.test"].outcome is SmtpOutcome.ACCEPTED
    assert {f.outcome for a, f in answers.items() if a != "alice@corp.test"} == {
        SmtpOutcome.USER_UNKNOWN
    }
    assert len(sim.sessions) == 6  # 7 answers a session: 40 unknown users, then alice
    assert sum(s.count("RCPT") for s in sim.sessions) <= len(addresses) + 20 * 6


async def test_more_replies_than_commands_decide_nothing() -> None:
    # b is answered twice in one write: the group's answers are out of step with the
    # addresses, so none of them counts (a later one could be read for the wrong address)
    sim = SmtpSim(
        mailboxes("a", "b"),
        by_address={"b@corp.test": Behaviour(rcpt=reply_rule("250 2.1.5 Ok\n250 2.1.5 Ok"))},
    )
    async with sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        first = await session.rcpt("nobody@corp.test")
        with pytest.raises(SessionEnded) as info:
            await session.rcpt_many(["a@corp.test", "b@corp.test"])
        await session.close()
    assert first.outcome is SmtpOutcome.USER_UNKNOWN
    assert info.value.answered == 0 and info.value.partial == []
    assert info.value.facts.outcome is SmtpOutcome.INVALID_SMTP


async def test_close_while_another_task_is_mid_exchange_hangs_up() -> None:
    async with SmtpSim(accept(second_rcpt="stall")) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        assert 0 < session.time_left <= GENEROUS.session
        task = asyncio.create_task(session.rcpt_many(["a@corp.test", "b@corp.test"]))
        while sim.sessions[0].count("RCPT") < 2:
            await asyncio.sleep(0.01)
        await session.close()
        with pytest.raises(SessionEnded) as info:
            await task
    assert info.value.answered == 1
    assert sim.sessions[0].count("QUIT") == 0  # no QUIT in the middle of a group


@pytest.mark.parametrize(
    ("server", "outcome"),
    [
        (endless_multiline(at="RCPT"), SmtpOutcome.INVALID_SMTP),
        (huge_line(at="RCPT"), SmtpOutcome.INVALID_SMTP),
        (garbage(at="RCPT"), SmtpOutcome.INVALID_SMTP),
        (tarpit(at="RCPT", rate=5.0), SmtpOutcome.TIMEOUT),
    ],
    ids=["flood", "huge_line", "garbage", "tarpit"],
)
async def test_hostile_server_ends_the_session_quickly_with_bounded_memory(
    server: Behaviour, outcome: SmtpOutcome
) -> None:
    async with SmtpSim(server) as sim:
        stage = SmtpStage(settings(sim))
        timeouts = SessionTimeouts(connect=10.0, command=2.0, session=60.0)
        session = await open_session(stage, timeouts=timeouts)
        with pytest.raises(SessionEnded) as info:
            await session.rcpt_many(["a@corp.test", "b@corp.test"])
        await session.close()
    assert info.value.facts.outcome is outcome
    assert info.value.answered == 0
    assert stage.max_buffered_bytes <= 64 * 1024 + 4096


async def test_cancelled_mid_group_ends_the_session() -> None:
    async with SmtpSim(accept(second_rcpt="stall")) as sim:
        stage = SmtpStage(settings(sim))
        session = await open_session(stage)
        task = asyncio.create_task(session.rcpt_many(["a@corp.test", "b@corp.test"]))
        while sim.sessions[0].count("RCPT") < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.ended is not None
        with pytest.raises(SessionEnded):
            await session.rcpt("c@corp.test")
        await session.close()
        while not sim.sessions[0].closed:
            await asyncio.sleep(0.01)
    assert sim.sessions[0].count("RCPT") == 2


class Scripted:
    """A tiny SMTP server on loopback whose replies to each verb come from a list in turn
    (the last one repeats): for what the scripted simulator has no option for."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.commands: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._handle, IP, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: dict[str, int] = {}
        writer.write(b"220 mx.scripted.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                command = line.decode().rstrip("\r\n")
                self.commands.append(command)
                verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
                replies = self.script.get(verb, ["250 2.0.0 Ok"])
                n = seen.get(verb, 0)
                seen[verb] = n + 1
                writer.write(replies[min(n, len(replies) - 1)].encode() + b"\r\n")
                await writer.drain()
                if verb == "QUIT":
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("pipelining", [True, False])
async def test_mail_refused_mid_session_ends_it_politely(pipelining: bool) -> None:
    ehlo = "250-mx.scripted.test\r\n250 PIPELINING" if pipelining else "250 mx.scripted.test"
    script = {
        "EHLO": [ehlo],
        "MAIL": ["250 2.1.0 Ok", "550 5.7.1 Sender rejected by policy"],
        "RCPT": ["250 2.1.5 Ok", "250 2.1.5 Ok", "503 5.5.1 Error: need MAIL command"],
        "QUIT": ["221 2.0.0 Bye"],
    }
    async with Scripted(script) as server:
        stage = SmtpStage(Settings(smtp_port=server.port, allow_private_mx=True))
        session = await open_session(stage, rcpt_per_transaction=2)
        with pytest.raises(SessionEnded) as info:
            await session.rcpt_many([f"u{i}@corp.test" for i in range(4)])
        await session.close()
    ended = info.value
    assert ended.answered == 2 and outcomes(ended.partial) == [SmtpOutcome.ACCEPTED] * 2
    assert ended.facts.outcome is SmtpOutcome.BLOCKED
    assert ended.facts.message == "550 5.7.1 Sender rejected by policy"
    verbs = [c.split(" ", 1)[0].split(":", 1)[0] for c in server.commands]
    expected_tail = (
        ["RSET", "MAIL", "RCPT", "RCPT", "QUIT"] if pipelining else ["RSET", "MAIL", "QUIT"]
    )
    assert verbs[-len(expected_tail) :] == expected_tail
    assert verbs.count("RCPT") == (4 if pipelining else 2)


async def test_a_lost_transaction_is_started_again_once() -> None:
    script = {"RCPT": ["503 5.5.1 Error: need MAIL command", "250 2.1.5 Ok"]}
    async with Scripted(script) as server:
        stage = SmtpStage(Settings(smtp_port=server.port, allow_private_mx=True))
        async with await open_session(stage) as session:
            facts = await session.rcpt("a@corp.test")
    assert facts.outcome is SmtpOutcome.ACCEPTED
    verbs = [c.split(" ", 1)[0].split(":", 1)[0] for c in server.commands]
    assert verbs == ["EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "QUIT"]


async def test_too_many_recipients_even_in_a_fresh_transaction_ends_the_session() -> None:
    script = {"RCPT": ["250 2.1.5 Ok", "452 4.5.3 Error: too many recipients"]}
    async with Scripted(script) as server:
        stage = SmtpStage(Settings(smtp_port=server.port, allow_private_mx=True))
        session = await open_session(stage)
        with pytest.raises(SessionEnded) as info:
            await session.rcpt_many(["a@corp.test", "b@corp.test"])
        await session.close()
    assert info.value.answered == 1
    assert info.value.facts.outcome is SmtpOutcome.TEMPORARY
    assert info.value.facts.message == "452 4.5.3 Error: too many recipients"
    verbs = [c.split(" ", 1)[0].split(":", 1)[0] for c in server.commands]
    assert verbs.count("RCPT") == 3  # b once in each transaction, then no more


# --- refused at open ---------------------------------------------------------------------


async def test_refused_at_the_banner_and_at_mail() -> None:
    sim = SmtpSim(accept(), by_ip={"127.0.0.2": banner_421(), "127.0.0.3": policy_block("mail")})
    async with sim:
        stage = SmtpStage(settings(sim))
        with pytest.raises(SessionRefused) as banner:
            await stage.open_session(HOST, "127.0.0.2", timeouts=GENEROUS)
        with pytest.raises(SessionRefused) as mail:
            await stage.open_session(HOST, "127.0.0.3", timeouts=GENEROUS)
    assert banner.value.facts.outcome is SmtpOutcome.TEMPORARY
    assert banner.value.facts.code == 421
    assert mail.value.facts.outcome is SmtpOutcome.BLOCKED
    assert mail.value.facts.code == 554 and "spamhaus" in (mail.value.facts.message or "")
    by_ip = {s.local_ip: s for s in sim.sessions}
    assert by_ip["127.0.0.3"].verbs() == ["EHLO", "MAIL", "QUIT"]


async def test_refused_when_nothing_listens_or_the_address_is_private() -> None:
    async with SmtpSim(accept()) as sim:
        port = sim.port
    stage = SmtpStage(Settings(smtp_port=port, allow_private_mx=True))
    with pytest.raises(SessionRefused) as closed:
        await stage.open_session(HOST, IP, timeouts=GENEROUS)
    assert closed.value.facts.outcome is SmtpOutcome.NO_CONNECT
    strict = SmtpStage(Settings(smtp_port=port))
    with pytest.raises(SessionRefused) as private:
        await strict.open_session(HOST, IP, timeouts=GENEROUS)
    assert private.value.facts.outcome is SmtpOutcome.PRIVATE_MX


# --- STARTTLS --------------------------------------------------------------------------------


async def test_starttls_session() -> None:
    async with SmtpSim(starttls_required()) as sim:
        stage = SmtpStage(settings(sim))
        async with await open_session(stage) as session:
            got = await session.rcpt_many(["a@corp.test", "b@corp.test"])
    assert session.tls
    assert all(f.tls for f in got)
    assert outcomes(got) == [SmtpOutcome.ACCEPTED] * 2
    (s,) = sim.sessions
    assert s.tls and s.verbs() == ["EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "RCPT", "QUIT"]


async def test_broken_starttls_retried_in_plain_text() -> None:
    async with SmtpSim(starttls_broken()) as sim:
        stage = SmtpStage(settings(sim))
        async with await open_session(stage) as session:
            got = await session.rcpt("a@corp.test")
    assert not session.tls
    assert got.outcome is SmtpOutcome.ACCEPTED
    assert len(sim.sessions) == 2


# --- timeouts ----------------------------------------------------------------------------


async def test_session_time_limit_bounds_the_opening() -> None:
    async with SmtpSim(accept(latency_ms=700)) as sim:
        stage = SmtpStage(settings(sim))
        timeouts = SessionTimeouts(connect=10.0, command=10.0, session=1.0)
        with pytest.raises(SessionRefused) as info:
            await open_session(stage, timeouts=timeouts)
    assert info.value.facts.outcome is SmtpOutcome.TIMEOUT


def test_timeouts_from_settings() -> None:
    s = Settings(
        batch_connect_timeout=7.0,
        batch_command_timeout=40.0,
        batch_session_timeout=600.0,
        smtp_connect_timeout=1.0,
        smtp_command_timeout=1.5,
        deadline=2.5,
    )
    assert SessionTimeouts.batch(s) == SessionTimeouts(7.0, 40.0, 600.0)
    assert SessionTimeouts.realtime(s) == SessionTimeouts(1.0, 1.5, 2.5)
    d = Settings()
    assert SessionTimeouts.batch(d) == SessionTimeouts(10.0, 30.0, 300.0)


async def test_batch_command_timeout_is_not_the_realtime_one() -> None:
    # every reply takes 0.6 s: over the real-time command timeout (0.2 s here), well
    # under the batch one (the default 30 s); the batch session opens and answers
    async with SmtpSim(accept(latency_ms=600)) as sim:
        s = settings(sim, smtp_command_timeout=0.2, smtp_connect_timeout=1.0)
        stage = SmtpStage(s)
        with pytest.raises(SessionRefused) as realtime:
            await open_session(stage, timeouts=SessionTimeouts.realtime(s))
        async with await open_session(stage, timeouts=SessionTimeouts.batch(s)) as session:
            got = await session.rcpt("a@corp.test")
    assert realtime.value.facts.outcome is SmtpOutcome.TIMEOUT
    assert got.outcome is SmtpOutcome.ACCEPTED


async def test_session_time_limit_ends_the_session() -> None:
    # each reply takes 0.3 s: 50 RCPTs cannot all be answered within a 4 s session
    async with SmtpSim(accept(latency_ms=300)) as sim:
        stage = SmtpStage(settings(sim))
        timeouts = SessionTimeouts(connect=10.0, command=10.0, session=4.0)
        session = await open_session(stage, timeouts=timeouts)
        with pytest.raises(SessionEnded) as info:
            await session.rcpt_many([f"u{i}@corp.test" for i in range(50)])
        await session.close()
    assert info.value.facts.outcome is SmtpOutcome.TIMEOUT
    assert info.value.answered < 50
    assert len(info.value.partial) == info.value.answered

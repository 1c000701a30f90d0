"""testing/smtp.py: the scripted SMTP servers speak what they promise (raw client)."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import time

import pytest

from mailvet.testing.smtp import (
    SmtpSim,
    SmtpSimThread,
    accept,
    banner_421,
    close_after_banner,
    close_after_mail,
    disabled,
    endless_multiline,
    garbage,
    greylist,
    huge_line,
    mailbox_full,
    mailboxes,
    microsoft365,
    policy_block,
    second_rcpt_fails,
    starttls_broken,
    starttls_refused,
    starttls_required,
    tarpit,
)
from mailvet.testing.tls import client_context


class Client:
    """Minimal raw client: send a line, read one (multi-line) reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Client:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
        return cls(reader, writer)

    async def reply(self) -> list[str]:
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), 5)
            if not raw:
                return lines
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                return lines

    async def cmd(self, line: str) -> list[str]:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def _to_rcpt(c: Client, rcpt: str) -> list[str]:
    assert (await c.reply())[0].startswith("220")
    assert (await c.cmd("EHLO t"))[-1].startswith("250 ")
    assert (await c.cmd("MAIL FROM:<me@t>"))[0].startswith("250")
    return await c.cmd(f"RCPT TO:<{rcpt}>")


async def test_accept_records_commands() -> None:
    async with SmtpSim(accept()) as sim:
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "a@b.test"))[0].startswith("250")
        assert (await c.cmd("QUIT"))[0].startswith("221")
        await c.close()
    (session,) = sim.sessions
    assert session.verbs() == ["EHLO", "MAIL", "RCPT", "QUIT"]
    assert session.count("RCPT") == 1
    assert not sim.received("DATA")
    assert sim.received("QUIT")


async def test_data_is_refused_and_recorded() -> None:
    async with SmtpSim(accept()) as sim:
        c = await Client.open(sim.port)
        await _to_rcpt(c, "a@b.test")
        assert (await c.cmd("DATA"))[0].startswith("554")
        await c.close()
    assert sim.received("DATA")


@pytest.mark.parametrize(
    ("style", "needle"),
    [
        ("gmail", "550-5.1.1 The email account that you tried to reach does not exist"),
        ("microsoft", "550 5.5.0 Requested action not taken: mailbox unavailable"),
        ("postfix", "User unknown in virtual mailbox table"),
        ("exim", "550 Unrouteable address"),
        ("qmail", "(#5.1.1)"),
        ("yahoo", "doesn't have a yahoo.com account"),
    ],
)
async def test_mailboxes_styles(style: str, needle: str) -> None:
    async with SmtpSim(mailboxes("alice", "bob@x.test", style=style)) as sim:
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "alice@x.test"))[0].startswith("250")
        assert (await c.cmd("RCPT TO:<bob@x.test>"))[0].startswith("250")
        nobody = "\n".join(await c.cmd("RCPT TO:<nobody@x.test>"))
        assert needle in nobody
        await c.close()


async def test_routing_by_domain_address_and_ip() -> None:
    sim = SmtpSim(
        accept(),
        by_domain={"full.test": mailbox_full()},
        by_address={"gone@x.test": disabled()},
        by_ip={"127.0.0.2": banner_421()},
    )
    async with sim:
        c = await Client.open(sim.port)
        await _to_rcpt(c, "a@x.test")
        assert (await c.cmd("RCPT TO:<a@full.test>"))[-1].startswith("452 4.2.2")
        assert (await c.cmd("RCPT TO:<gone@x.test>"))[-1].startswith("550 5.2.1")
        await c.close()
        c2 = await Client.open(sim.port, "127.0.0.2")
        assert (await c2.reply())[0].startswith("421")
        assert await c2.reply() == []  # hung up
        await c2.close()
    assert {s.local_ip for s in sim.sessions} == {"127.0.0.1", "127.0.0.2"}


async def test_greylist_second_try_passes() -> None:
    async with SmtpSim(greylist()) as sim:
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "a@x.test"))[0].startswith("450 4.2.0")
        assert (await c.cmd("RCPT TO:<a@x.test>"))[0].startswith("250")
        await c.close()


async def test_greylist_with_delay_keeps_refusing() -> None:
    async with SmtpSim(greylist(delay=3600)) as sim:
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "a@x.test"))[0].startswith("450")
        assert (await c.cmd("RCPT TO:<a@x.test>"))[0].startswith("450")
        await c.close()


async def test_mailbox_full_permanent_and_policy_blocks() -> None:
    sim = SmtpSim(
        mailbox_full(permanent=True),
        by_ip={"127.0.0.2": policy_block(at="mail"), "127.0.0.3": policy_block(at="banner")},
        by_domain={"spam.test": policy_block()},
    )
    async with sim:
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "a@x.test"))[0].startswith("552 5.2.2")
        assert "spamhaus" in (await c.cmd("RCPT TO:<a@spam.test>"))[0]
        await c.close()
        c = await Client.open(sim.port, "127.0.0.2")
        await c.reply()
        await c.cmd("EHLO t")
        assert (await c.cmd("MAIL FROM:<me@t>"))[0].startswith("554 5.7.1")
        await c.close()
        c = await Client.open(sim.port, "127.0.0.3")
        assert (await c.reply())[0].startswith("554")
        assert (await c.cmd("EHLO t"))[0].startswith("503")
        assert (await c.cmd("QUIT"))[0].startswith("221")
        await c.close()


async def test_ehlo_unsupported_and_no_pipelining() -> None:
    async with SmtpSim(
        accept(ehlo_supported=False), by_ip={"127.0.0.2": accept(pipelining=False)}
    ) as sim:
        c = await Client.open(sim.port)
        await c.reply()
        assert (await c.cmd("EHLO t"))[0].startswith("500")
        assert (await c.cmd("HELO t"))[0].startswith("250")
        await c.close()
        c = await Client.open(sim.port, "127.0.0.2")
        await c.reply()
        ehlo = await c.cmd("EHLO t")
        assert not any("PIPELINING" in line for line in ehlo)
        await c.close()


async def test_starttls_required() -> None:
    async with SmtpSim(starttls_required()) as sim:
        c = await Client.open(sim.port)
        await c.reply()
        assert any("STARTTLS" in line for line in await c.cmd("EHLO t"))
        assert (await c.cmd("MAIL FROM:<me@t>"))[0].startswith("530 5.7.0")
        assert (await c.cmd("STARTTLS"))[0].startswith("220")
        await c.writer.start_tls(client_context(), server_hostname="mx.sim.test")
        ehlo = await c.cmd("EHLO t")
        assert not any("STARTTLS" in line for line in ehlo)
        assert (await c.cmd("MAIL FROM:<me@t>"))[0].startswith("250")
        await c.close()
    assert sim.sessions[0].tls


async def test_close_after_banner_and_after_mail() -> None:
    async with SmtpSim(close_after_banner(), by_ip={"127.0.0.2": close_after_mail()}) as sim:
        c = await Client.open(sim.port)
        assert (await c.reply())[0].startswith("220")
        assert await c.cmd("EHLO t") == []
        await c.close()
        c = await Client.open(sim.port, "127.0.0.2")
        await c.reply()
        await c.cmd("EHLO t")
        assert await c.cmd("MAIL FROM:<me@t>") == []
        await c.close()


async def test_garbage_and_huge_line_and_endless() -> None:
    sim = SmtpSim(
        garbage(),
        by_ip={"127.0.0.2": huge_line(size=300_000), "127.0.0.3": endless_multiline()},
    )
    async with sim:
        c = await Client.open(sim.port)
        first = await asyncio.wait_for(c.reader.read(64), 5)
        assert first.startswith(b"\x00")
        await c.close()
        c = await Client.open(sim.port, "127.0.0.2")
        got = 0
        while got < 300_000:
            chunk = await asyncio.wait_for(c.reader.read(65536), 5)
            assert chunk and b"\n" not in chunk[:-2]
            got += len(chunk)
        await c.close()
        c = await Client.open(sim.port, "127.0.0.3")
        await c.reply()
        c.writer.write(b"EHLO t\r\n")
        for _ in range(2000):
            line = await asyncio.wait_for(c.reader.readline(), 5)
            assert line.startswith(b"250-")
        await c.close()


async def test_tarpit_drips() -> None:
    async with SmtpSim(tarpit(rate=1)) as sim:
        c = await Client.open(sim.port)
        first = await asyncio.wait_for(c.reader.read(100), 5)
        assert first == b"2"  # one byte at a time
        await c.close()


async def test_latency_option_still_answers() -> None:
    async with SmtpSim(accept(latency_ms=20)) as sim:
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "a@x.test"))[0].startswith("250")
        await c.close()


async def test_stop_with_clients_still_connected() -> None:
    sim = SmtpSim(tarpit(), by_ip={"127.0.0.2": endless_multiline(at="banner")})
    await sim.start()
    c1 = await Client.open(sim.port)
    c2 = await Client.open(sim.port, "127.0.0.2")
    await asyncio.sleep(0.05)
    await sim.stop()
    await c1.close()
    await c2.close()


def test_thread_runner_with_stdlib_client() -> None:
    sim = SmtpSim(mailboxes("alice"))
    with SmtpSimThread(sim) as runner:
        with smtplib.SMTP("127.0.0.1", runner.port, timeout=5) as client:
            client.ehlo("t")
            client.mail("me@t")
            assert client.rcpt("alice@x.test")[0] == 250
            assert client.rcpt("bob@x.test")[0] == 550
    assert sim.sessions[0].verbs()[-1] == "QUIT"
    assert not sim.received("DATA")


async def test_several_addresses_share_one_port() -> None:
    async with SmtpSim(accept(), hosts=("127.0.0.1", "127.0.0.5")) as sim:
        for host in ("127.0.0.1", "127.0.0.5"):
            c = await Client.open(sim.port, host)
            assert (await c.reply())[0].startswith("220")
            await c.close()


async def test_starttls_refused_answers_454_and_goes_on() -> None:
    async with SmtpSim(starttls_refused()) as sim:
        c = await Client.open(sim.port)
        await c.reply()
        assert any("STARTTLS" in line for line in await c.cmd("EHLO t"))
        assert (await c.cmd("STARTTLS"))[0].startswith("454 4.7.0")
        assert (await c.cmd("MAIL FROM:<me@t>"))[0].startswith("250")
        await c.close()
    assert not sim.sessions[0].tls


async def test_starttls_broken_sends_junk_after_ready() -> None:
    async with SmtpSim(starttls_broken()) as sim:
        c = await Client.open(sim.port)
        await c.reply()
        await c.cmd("EHLO t")
        assert (await c.cmd("STARTTLS"))[0].startswith("220")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.wait_for(
                c.writer.start_tls(client_context(), server_hostname="mx.sim.test"), 5
            )
        c.writer.transport.abort()
    assert not sim.sessions[0].tls


@pytest.mark.parametrize("how", ["stall", "close"])
async def test_second_rcpt_fails(how: str) -> None:
    async with SmtpSim(second_rcpt_fails(how, then=mailboxes("alice"))) as sim:  # type: ignore[arg-type]
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "alice@x.test"))[0].startswith("250")
        c.writer.write(b"RCPT TO:<random@x.test>\r\n")
        if how == "close":
            assert await c.reply() == []  # hung up without answering
        else:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.reader.readline(), 0.3)
        await c.close()
    assert sim.sessions[0].count("RCPT") == 2
    assert sim.sessions[0].replies[-1] == 250  # only the first RCPT was answered


async def test_ehlo_extra_keywords_come_first() -> None:
    extra = tuple(f"X-{i}" for i in range(30))
    async with SmtpSim(accept(ehlo_extra=extra)) as sim:
        c = await Client.open(sim.port)
        await c.reply()
        ehlo = await c.cmd("EHLO t")
        await c.close()
    assert [line[4:] for line in ehlo[1:31]] == list(extra)
    assert ehlo[-1] == "250 SMTPUTF8"
    assert "250-PIPELINING" in ehlo[31:]


async def test_stop_is_clean_mid_handshake_and_mid_stall(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # stopping while a session waits in a TLS handshake, in a stall, or in a tarpit
    # must not log "Exception in callback ... CancelledError"
    sim = SmtpSim(
        starttls_required(),
        by_ip={"127.0.0.2": garbage(), "127.0.0.3": tarpit(), "127.0.0.4": second_rcpt_fails()},
    )
    caplog.set_level(logging.DEBUG, logger="asyncio")
    await sim.start()
    tls = await Client.open(sim.port)
    await tls.reply()
    await tls.cmd("EHLO t")
    assert (await tls.cmd("STARTTLS"))[0].startswith("220")  # ... and no handshake
    junk = await Client.open(sim.port, "127.0.0.2")
    await asyncio.wait_for(junk.reader.read(8), 5)
    drip = await Client.open(sim.port, "127.0.0.3")
    await asyncio.wait_for(drip.reader.read(1), 5)
    stall = await Client.open(sim.port, "127.0.0.4")
    await _to_rcpt(stall, "a@x.test")
    stall.writer.write(b"RCPT TO:<b@x.test>\r\n")
    await stall.writer.drain()
    while sim.sessions[-1].count("RCPT") < 2:
        await asyncio.sleep(0.01)
    await sim.stop()
    for c in (tls, junk, drip, stall):
        c.writer.transport.abort()
    await asyncio.sleep(0)  # let any done-callbacks run
    assert all(s.closed for s in sim.sessions)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize("dbeb", [True, False])
async def test_microsoft365_with_and_without_edge_blocking(dbeb: bool) -> None:
    async with SmtpSim(microsoft365("alice", dbeb=dbeb)) as sim:
        c = await Client.open(sim.port)
        banner = await c.reply()
        assert "Microsoft ESMTP MAIL Service ready" in banner[0]
        assert (await c.cmd("EHLO t"))[-1].startswith("250 ")
        assert (await c.cmd("MAIL FROM:<me@t>"))[0].startswith("250")
        assert (await c.cmd("RCPT TO:<alice@x.test>"))[0].startswith("250")
        nobody = (await c.cmd("RCPT TO:<nobody@x.test>"))[0]
        await c.close()
    if dbeb:
        assert nobody.startswith("550 5.4.1 Recipient address rejected: Access denied.")
        assert "AS(201806281)" in nobody
    else:
        assert nobody.startswith("250")


# --- issue 8: limits real servers put on long sessions, and counters for assertions ------


async def test_error_limit_421_after_n_errors_and_hang_up() -> None:
    async with SmtpSim(mailboxes("alice", error_limit=3)) as sim:
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "x@x.test"))[0].startswith("550")  # error 1
        assert (await c.cmd("RCPT TO:<alice@x.test>"))[0].startswith("250")
        assert (await c.cmd("RCPT TO:<y@x.test>"))[0].startswith("550")  # error 2
        third = await c.cmd("RCPT TO:<z@x.test>")  # error 3: then 421 unasked
        assert third[0].startswith("550")
        assert await c.reply() == ["421 4.7.0 mx.sim.test Error: too many errors"]
        assert await c.reply() == []  # hung up
        await c.close()
    (s,) = sim.sessions
    assert s.errors == 4 and s.replies[-1] == 421  # the 421 counts too
    assert s.closed


async def test_error_limit_drops_pipelined_commands_after_it() -> None:
    async with SmtpSim(mailboxes("alice", error_limit=2)) as sim:
        c = await Client.open(sim.port)
        await c.reply()
        await c.cmd("EHLO t")
        await c.cmd("MAIL FROM:<me@t>")
        c.writer.write(b"".join(f"RCPT TO:<u{i}@x.test>\r\n".encode() for i in range(5)))
        await c.writer.drain()
        got = [await c.reply() for _ in range(4)]
        await c.close()
    assert [lines[0][:3] for lines in got[:3]] == ["550", "550", "421"]
    assert got[3] == []  # hung up: the three other RCPTs are never answered
    assert sim.sessions[0].count("RCPT") == 2


async def test_no_error_limit_by_default() -> None:
    async with SmtpSim(mailboxes("alice")) as sim:
        c = await Client.open(sim.port)
        await _to_rcpt(c, "x0@x.test")
        for i in range(1, 30):
            assert (await c.cmd(f"RCPT TO:<x{i}@x.test>"))[0].startswith("550")
        assert (await c.cmd("QUIT"))[0].startswith("221")
        await c.close()
    assert sim.sessions[0].errors == 30


async def test_max_rcpts_per_session() -> None:
    async with SmtpSim(accept(max_rcpts_per_session=2)) as sim:
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "a@x.test"))[0].startswith("250")
        assert (await c.cmd("RSET"))[0].startswith("250")  # RSET does not reset this one
        assert (await c.cmd("MAIL FROM:<me@t>"))[0].startswith("250")
        assert (await c.cmd("RCPT TO:<b@x.test>"))[0].startswith("250")
        assert await c.cmd("RCPT TO:<c@x.test>") == ["421 4.7.0 Too many recipients this session"]
        assert await c.reply() == []
        await c.close()
    assert sim.sessions[0].rcpts == 2


async def test_max_rcpts_per_transaction_until_rset() -> None:
    async with SmtpSim(accept(max_rcpts_per_transaction=2)) as sim:
        c = await Client.open(sim.port)
        assert (await _to_rcpt(c, "a@x.test"))[0].startswith("250")
        assert (await c.cmd("RCPT TO:<b@x.test>"))[0].startswith("250")
        assert await c.cmd("RCPT TO:<c@x.test>") == ["452 4.5.3 Too many recipients"]
        assert await c.cmd("RCPT TO:<d@x.test>") == ["452 4.5.3 Too many recipients"]
        assert (await c.cmd("RSET"))[0].startswith("250")
        assert (await c.cmd("MAIL FROM:<me@t>"))[0].startswith("250")
        assert (await c.cmd("RCPT TO:<c@x.test>"))[0].startswith("250")
        # a new MAIL FROM without RSET starts a new transaction too
        assert (await c.cmd("RCPT TO:<d@x.test>"))[0].startswith("250")
        assert (await c.cmd("RCPT TO:<e@x.test>"))[0].startswith("452")
        assert (await c.cmd("MAIL FROM:<me@t>"))[0].startswith("250")
        assert (await c.cmd("RCPT TO:<e@x.test>"))[0].startswith("250")
        await c.close()
    assert sim.sessions[0].rcpts == 5


async def test_greylist_says_the_delay_left() -> None:
    async with SmtpSim(greylist(delay=300)) as sim:
        c = await Client.open(sim.port)
        (first,) = await _to_rcpt(c, "a@x.test")
        (second,) = await c.cmd("RCPT TO:<a@x.test>")
        await c.close()
    head = "450 4.2.0 <a@x.test>: Recipient address rejected: Greylisted, try again in "
    assert first == head + "300 seconds"
    assert second.startswith(head) and second.endswith(" seconds")
    assert 1 <= int(second[len(head) :].split()[0]) <= 300


async def test_greylist_without_the_delay_is_postgreys_text() -> None:
    async with SmtpSim(greylist(delay=300, say_delay=False)) as sim:
        c = await Client.open(sim.port)
        (first,) = await _to_rcpt(c, "a@x.test")
        await c.close()
    assert first == (
        "450 4.2.0 <a@x.test>: Recipient address rejected: Greylisted, "
        "see http://postgrey.schweikert.ch/help/x.test.html"
    )


async def test_counters_per_listening_address() -> None:
    sim = SmtpSim(accept(), hosts=("127.0.0.1", "127.0.0.2"))
    async with sim:
        before = time.monotonic()
        clients = [await Client.open(sim.port) for _ in range(3)]
        for c in clients:
            await _to_rcpt(c, "a@x.test")
        await clients[0].cmd("RCPT TO:<b@x.test>")
        for c in clients:
            await c.cmd("QUIT")
            await c.close()
        while not all(s.closed for s in sim.sessions):
            await asyncio.sleep(0.01)
        # one at a time now: the maximum stays 3
        late = await Client.open(sim.port)
        await _to_rcpt(late, "c@x.test")
        await late.close()
        other = await Client.open(sim.port, "127.0.0.2")
        await other.reply()
        await other.close()
        after = time.monotonic()
    assert sim.max_concurrent("127.0.0.1") == 3
    assert sim.max_concurrent("127.0.0.2") == 1
    assert sim.max_concurrent("127.0.0.9") == 0
    connects = sim.connects("127.0.0.1")
    assert len(connects) == 4 and connects == sorted(connects)
    assert before <= connects[0] and connects[-1] <= after
    assert len(sim.connects("127.0.0.2")) == 1
    rcpts = sim.rcpt_times("127.0.0.1")
    assert len(rcpts) == 5 and rcpts == sorted(rcpts)
    assert before <= rcpts[0] and rcpts[-1] <= after
    assert sim.rcpt_times("127.0.0.2") == []


async def test_record_commands_off_keeps_the_counts_only() -> None:
    async with SmtpSim(mailboxes("a"), record_commands=False) as sim:
        c = await Client.open(sim.port)
        await _to_rcpt(c, "a@x.test")
        await c.cmd("RCPT TO:<b@x.test>")
        await c.cmd("QUIT")
        await c.close()
    (s,) = sim.sessions
    assert s.commands == []
    assert (s.rcpts, s.errors) == (2, 1)
    assert len(sim.rcpt_times("127.0.0.1")) == 2

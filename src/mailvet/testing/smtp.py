"""Scripted SMTP servers on loopback: the SMTP half of the simulated internet.

One :class:`SmtpSim` listens on one port on one or more loopback addresses
(127.0.0.1, 127.0.0.2, ... are all loopback on Linux). What it does is a
:class:`Behaviour`, chosen per connection by the *listening address* (so two MX
hosts of one domain can misbehave differently on the same port) and, for the reply
to RCPT, per *recipient address or domain* (so one port serves a whole simulated
internet: the engine dials every MX on ``settings.smtp_port``).

It is a raw asyncio server rather than aiosmtpd because the hostile behaviours
(tarpit, endless multi-line replies, a 10 MB line, garbage, dropping mid-session)
need byte-level control. Every command received is recorded per session, so tests
can assert "DATA was never sent", "QUIT was sent", "two RCPTs in one session".

Example::

    sim = SmtpSim(
        accept(),
        by_domain={"corp.test": mailboxes("alice", style="gmail")},
        by_ip={"127.0.0.2": banner_421()},
    )
    async with sim:
        settings = Settings(smtp_port=sim.port, allow_private_mx=True,
                            allowed_special_domains=["test"])
        ...
    assert not sim.received("DATA")

Sync code and benchmarks use :class:`SmtpSimThread` (``with SmtpSimThread(sim): ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import ssl
import threading
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Literal, Self

__all__ = [
    "DISABLED_REPLIES",
    "MAILBOX_FULL_REPLIES",
    "POLICY_BLOCK_REPLIES",
    "USER_UNKNOWN_REPLIES",
    "Behaviour",
    "Hostile",
    "RcptRule",
    "Session",
    "SmtpSim",
    "SmtpSimThread",
    "accept",
    "banner_421",
    "catch_all",
    "close_after_banner",
    "close_after_mail",
    "disabled",
    "endless_multiline",
    "garbage",
    "greylist",
    "huge_line",
    "mailbox_full",
    "mailboxes",
    "microsoft365",
    "policy_block",
    "reply_rule",
    "second_rcpt_fails",
    "starttls_broken",
    "starttls_refused",
    "starttls_required",
    "tarpit",
]

# --- real-world reply texts (``{rcpt}`` and ``{ip}`` are filled in) ----------------
# Quoted from public bounce logs and the reply tables of reacher's
# check-if-email-exists (core/src/smtp/parser.rs) and provider postmaster pages.
USER_UNKNOWN_REPLIES: dict[str, str] = {
    "gmail": (
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\n"
        "550-5.1.1 unnecessary spaces. For more information, go to\n"
        "550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp"
    ),
    "microsoft": "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).",
    "m365": (
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[BN8NAM11FT066.eop-nam11.prod.protection.outlook.com]"
    ),
    "postfix": (
        "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
    ),
    "exim": "550 Unrouteable address",
    "cpanel": "550 No Such User Here",
    "sendmail": "550 5.1.1 <{rcpt}>... User unknown",
    "qmail": "550 sorry, no mailbox here by that name. (#5.1.1)",
    "yahoo": (
        "554 delivery error: dd This user doesn't have a yahoo.com account ({rcpt}) [0]"
        " - mta1234.mail.bf1.yahoo.com"
    ),
    "mimecast": "550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550",
}
DISABLED_REPLIES: dict[str, str] = {
    "gmail": (
        "550-5.2.1 The email account that you tried to reach is disabled. Learn more at\n"
        "550 5.2.1  https://support.google.com/mail/?p=DisabledUser a1si123 - gsmtp"
    ),
    "yahoo": "554 delivery error: dd Sorry, your message to {rcpt} cannot be delivered. "
    "This mailbox is disabled (554.30).",
}
MAILBOX_FULL_REPLIES: dict[str, str] = {
    "gmail": (
        "452-4.2.2 The email account that you tried to reach is over quota. Please direct\n"
        "452-4.2.2 the recipient to\n"
        "452 4.2.2  https://support.google.com/mail/?p=OverQuotaTemp a1si123 - gsmtp"
    ),
    "permanent": "552 5.2.2 <{rcpt}>: Recipient address rejected: Mailbox full",
}
POLICY_BLOCK_REPLIES: dict[str, str] = {
    "spamhaus": (
        "554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org;"
        " https://www.spamhaus.org/query/ip/{ip}"
    ),
    "outlook": (
        "550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. Please contact your"
        " Internet service provider since part of their network is on our block list (S3150)."
    ),
    "proofpoint": "554 Blocked - see https://ipcheck.proofpoint.com/?ip={ip}",
    "banner": "554 mx.sim.test ESMTP not accepting messages from [{ip}]: blocked by policy",
}

Hostile = Literal["tarpit", "endless", "huge_line", "garbage", "close"]
Stage = Literal["banner", "EHLO", "MAIL", "RCPT"]
# A rule answering one RCPT: (recipient, session) -> raw reply ("250 2.1.5 Ok", may span
# lines separated by "\n"). Chosen by recipient address, else domain, else listening IP.
RcptRule = Callable[[str, "Session"], str]

_MAX_COMMAND = 4096  # the simulator's own line limit (RFC 5321: 512; be generous)
_ENDLESS_CAP = 64 * 1024 * 1024  # even "endless" stops somewhere: bounded loops only


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What one simulated MX does. Build with the factory functions below."""

    rcpt: RcptRule = field(default=lambda rcpt, session: "250 2.1.5 Ok")
    banner: str = "220 {host} ESMTP mailvet simulated MX"
    ehlo_supported: bool = True
    pipelining: bool = True
    smtputf8: bool = True
    # "refused": offered, but STARTTLS gets "454 4.7.0 TLS not available"; "broken":
    # offered, "220 Ready", then junk instead of a TLS handshake
    starttls: Literal["no", "offered", "required", "refused", "broken"] = "no"
    ehlo_extra: tuple[str, ...] = ()  # more EHLO keywords, listed before the usual ones
    # the second RCPT of a session (the catch-all check): answered, or never answered
    # ("stall"), or the connection is dropped on receiving it ("close")
    second_rcpt: Literal["answer", "stall", "close"] = "answer"
    mail_reply: str | None = None  # override the reply to MAIL FROM
    hostile: Hostile | None = None
    hostile_at: Stage = "banner"  # where the hostile behaviour starts
    huge_size: int = 10 * 1024 * 1024
    tarpit_rate: float = 1.0  # bytes per second
    latency_ms: float = 0.0  # sleep before every reply
    # Postfix's smtpd_hard_error_limit: after this many 4xx/5xx replies in a session,
    # "421 4.7.0 {host} Error: too many errors" and hang up
    error_limit: int | None = None
    # after this many RCPTs in a session, the next gets "421 4.7.0 Too many recipients
    # this session" and the connection is closed
    max_rcpts_per_session: int | None = None
    # past this many RCPTs in one transaction (MAIL FROM to RSET), "452 4.5.3 Too many
    # recipients" (Postfix's smtpd_recipient_limit)
    max_rcpts_per_transaction: int | None = None

    def with_options(self, **changes: object) -> Behaviour:
        """A copy with some fields changed (``accept().with_options(latency_ms=50)``)."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(slots=True)
class Session:
    """What happened on one connection, for assertions."""

    local_ip: str
    peer: str
    commands: list[str] = field(default_factory=list)
    replies: list[int] = field(default_factory=list)  # first code of every reply sent
    mail_from: str | None = None
    tls: bool = False
    closed: bool = False
    rcpts: int = 0  # RCPT commands answered or refused so far
    errors: int = 0  # 4xx/5xx replies sent
    transaction_rcpts: int = 0  # RCPTs since the last MAIL FROM

    def verbs(self) -> list[str]:
        return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in self.commands]

    def count(self, verb: str) -> int:
        return self.verbs().count(verb.upper())


# --- behaviour factories ---------------------------------------------------------------


def reply_rule(reply: str) -> RcptRule:
    """A rule that always answers RCPT with ``reply`` (``{rcpt}``/``{ip}`` filled in)."""

    def rule(rcpt: str, session: Session) -> str:
        return reply.format(rcpt=rcpt, ip=session.peer)

    return rule


def accept(**options: object) -> Behaviour:
    """250 to every RCPT."""
    return Behaviour().with_options(**options)


def catch_all(**options: object) -> Behaviour:
    """Same as :func:`accept`: every mailbox, real or random, is accepted."""
    return accept(**options)


def mailboxes(*known: str, style: str = "postfix", **options: object) -> Behaviour:
    """Accept only ``known`` (full addresses or local parts), 5xx user unknown otherwise.

    ``style`` picks the rejection text from :data:`USER_UNKNOWN_REPLIES`.
    """
    wanted = {k.lower() for k in known}
    reject = USER_UNKNOWN_REPLIES[style]

    def rule(rcpt: str, session: Session) -> str:
        low = rcpt.lower()
        if low in wanted or low.rsplit("@", 1)[0] in wanted:
            return "250 2.1.5 Ok"
        return reject.format(rcpt=rcpt, ip=session.peer)

    return Behaviour(rcpt=rule).with_options(**options)


# Exchange Online's banner: "220 <server>.mail.protection.outlook.com Microsoft ESMTP MAIL
# Service ready at <date>"
_M365_BANNER = "220 BN8NAM11FT066.mail.protection.outlook.com Microsoft ESMTP MAIL Service ready"


def microsoft365(*known: str, dbeb: bool = True, **options: object) -> Behaviour:
    """An Exchange Online (Microsoft 365) tenant's MX.

    With Directory-Based Edge Blocking (``dbeb``, the default for tenants whose domain is
    authoritative) a recipient not in the directory is refused at RCPT with
    "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)"; only ``known``
    are accepted. Without it, every RCPT is accepted and unknown recipients bounce later.
    """
    if dbeb:
        return mailboxes(*known, style="m365", banner=_M365_BANNER).with_options(**options)
    return accept(banner=_M365_BANNER).with_options(**options)


def greylist(
    delay: float = 0.0,
    then: Behaviour | None = None,
    *,
    say_delay: bool = True,
    **options: object,
) -> Behaviour:
    """450 4.2.0 (Postfix + postgrey) on the first try of a (client, sender, recipient)
    triple: "450 4.2.0 <x>: Recipient address rejected: Greylisted, try again in {n}
    seconds", ``n`` being the seconds still to wait (at least 1); with ``say_delay=False``
    postgrey's default text, which names no delay ("Greylisted, see http://...").

    Accepted (i.e. handed to ``then``, default accept) once ``delay`` seconds have
    passed since the first try; with ``delay=0`` the second try passes.
    """
    inner = then or accept()
    first_seen: dict[tuple[str, str, str], float] = {}

    def rule(rcpt: str, session: Session) -> str:
        key = (session.peer, (session.mail_from or "").lower(), rcpt.lower())
        now = time.monotonic()
        seen = first_seen.setdefault(key, now)
        if seen == now or now - seen < delay:
            head = f"450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted"
            if not say_delay:
                domain = rcpt.rsplit("@", 1)[-1]
                return f"{head}, see http://postgrey.schweikert.ch/help/{domain}.html"
            wait = max(1, math.ceil(delay - (now - seen)))
            return f"{head}, try again in {wait} seconds"
        return inner.rcpt(rcpt, session)

    return replace(inner, rcpt=rule).with_options(**options)


def mailbox_full(permanent: bool = False, **options: object) -> Behaviour:
    """452 4.2.2 (Gmail's over-quota text) or, permanent, 552 5.2.2."""
    text = MAILBOX_FULL_REPLIES["permanent" if permanent else "gmail"]
    return Behaviour(rcpt=reply_rule(text)).with_options(**options)


def disabled(style: str = "gmail", **options: object) -> Behaviour:
    """550 5.2.1 "The email account that you tried to reach is disabled"."""
    return Behaviour(rcpt=reply_rule(DISABLED_REPLIES[style])).with_options(**options)


def policy_block(
    at: Literal["rcpt", "mail", "banner"] = "rcpt", style: str = "spamhaus", **options: object
) -> Behaviour:
    """Refuse *our* host: 554 5.7.1 Spamhaus listing (or ``style``) at RCPT, MAIL or banner."""
    text = POLICY_BLOCK_REPLIES[style]
    if at == "rcpt":
        return Behaviour(rcpt=reply_rule(text)).with_options(**options)
    if at == "mail":
        return Behaviour(mail_reply=text).with_options(**options)
    return Behaviour(banner=POLICY_BLOCK_REPLIES["banner"]).with_options(**options)


def banner_421(**options: object) -> Behaviour:
    """421 at the banner, then hang up."""
    text = "421 4.3.2 {host} Service not available, closing transmission channel"
    return Behaviour(banner=text).with_options(**options)


def starttls_required(**options: object) -> Behaviour:
    """Offer STARTTLS and answer MAIL with 530 5.7.0 until the session is encrypted."""
    return Behaviour(starttls="required").with_options(**options)


def starttls_refused(**options: object) -> Behaviour:
    """Offer STARTTLS in EHLO, then answer it "454 4.7.0 TLS not available"."""
    return Behaviour(starttls="refused").with_options(**options)


def starttls_broken(**options: object) -> Behaviour:
    """Offer STARTTLS, answer "220 Ready", then send junk instead of a TLS handshake."""
    return Behaviour(starttls="broken").with_options(**options)


def second_rcpt_fails(
    how: Literal["stall", "close"] = "stall", then: Behaviour | None = None, **options: object
) -> Behaviour:
    """Answer the first RCPT of a session (per ``then``, default accept), then never
    answer the second (``stall``, like Exchange slowing replies to invalid recipients
    past a client's timeout) or hang up on it (``close``)."""
    return replace(then or accept(), second_rcpt=how).with_options(**options)


def tarpit(at: Stage = "banner", rate: float = 1.0, **options: object) -> Behaviour:
    """Drip the reply at ``at`` (and every later one) ``rate`` bytes per second."""
    return Behaviour(hostile="tarpit", hostile_at=at, tarpit_rate=rate).with_options(**options)


def endless_multiline(at: Stage = "EHLO", **options: object) -> Behaviour:
    """Answer ``at`` with "250-..." continuation lines forever (capped at 64 MB)."""
    return Behaviour(hostile="endless", hostile_at=at).with_options(**options)


def huge_line(size: int = 10 * 1024 * 1024, at: Stage = "banner", **options: object) -> Behaviour:
    """Answer ``at`` with one reply line of ``size`` bytes."""
    return Behaviour(hostile="huge_line", hostile_at=at, huge_size=size).with_options(**options)


def garbage(at: Stage = "banner", **options: object) -> Behaviour:
    """Answer ``at`` with binary junk that is not an SMTP reply."""
    return Behaviour(hostile="garbage", hostile_at=at).with_options(**options)


def close_after_banner(**options: object) -> Behaviour:
    """Send the banner, then drop the connection."""
    return Behaviour(hostile="close", hostile_at="EHLO").with_options(**options)


def close_after_mail(**options: object) -> Behaviour:
    """Drop the connection on receiving MAIL FROM, without answering it."""
    return Behaviour(hostile="close", hostile_at="MAIL").with_options(**options)


# --- the server ------------------------------------------------------------------------


class _Hangup(Exception):
    """The behaviour ends the session here."""


class SmtpSim:
    """A scripted SMTP server on loopback. Use ``async with``, or ``start``/``stop``.

    ``default`` is the behaviour for every connection; ``by_ip`` overrides it per
    listening address (each key is bound as well); ``by_domain`` / ``by_address``
    override only the reply to RCPT for those recipients. ``record_commands=False``
    keeps no command lines (``Session.commands`` stays empty; the counters, ``rcpts``
    and ``errors`` still count): for benchmarks with millions of RCPTs.
    """

    def __init__(
        self,
        default: Behaviour | None = None,
        *,
        by_ip: Mapping[str, Behaviour] | None = None,
        by_domain: Mapping[str, Behaviour] | None = None,
        by_address: Mapping[str, Behaviour] | None = None,
        hosts: Iterable[str] = ("127.0.0.1",),
        port: int = 0,
        hostname: str = "mx.sim.test",
        record_commands: bool = True,
    ) -> None:
        self.default = default or accept()
        self.record_commands = record_commands
        self.by_ip = dict(by_ip or {})
        self.by_domain = {k.lower(): v for k, v in (by_domain or {}).items()}
        self.by_address = {k.lower(): v for k, v in (by_address or {}).items()}
        self.hosts = tuple(dict.fromkeys([*hosts, *self.by_ip]))
        self.port = port
        self.hostname = hostname
        self.sessions: list[Session] = []
        # per listening address, for assertions on how politely a client behaved
        self._open: dict[str, int] = defaultdict(int)
        self._max_open: dict[str, int] = defaultdict(int)
        self._connects: dict[str, array[float]] = defaultdict(lambda: array("d"))
        self._rcpt_times: dict[str, array[float]] = defaultdict(lambda: array("d"))
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tls: ssl.SSLContext | None = None

    # -- lifecycle --

    async def start(self) -> Self:
        last: OSError | None = None
        for _ in range(20):
            try:
                await self._bind_all()
                return self
            except OSError as exc:  # the ephemeral port is taken on another address
                if exc.errno != errno.EADDRINUSE or self.port:
                    await self.stop()
                    raise
                last = exc
                await self._close_servers()
        raise RuntimeError("could not bind one port on every simulated address") from last

    async def _bind_all(self) -> None:
        port = self.port
        for host in self.hosts:
            server = await asyncio.start_server(
                self._handle, host, port, limit=_MAX_COMMAND * 2, reuse_address=True
            )
            self._servers.append(server)
            if port == 0:
                port = server.sockets[0].getsockname()[1]
        if self.port == 0:
            self.port = port

    async def _close_servers(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_servers()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- assertions --

    def commands(self) -> list[str]:
        return [c for s in self.sessions for c in s.commands]

    def received(self, verb: str) -> bool:
        return any(s.count(verb) for s in self.sessions)

    def rcpts_by_address(self) -> Counter[str]:
        """How many times each recipient (lower-case) was asked, over every session
        (needs ``record_commands``). Safe to call from another thread while it runs."""
        counts: Counter[str] = Counter()
        for session in list(self.sessions):
            for command in list(session.commands):
                if command.upper().startswith("RCPT TO:<"):
                    counts[command[9:].split(">", 1)[0].lower()] += 1
        return counts

    def max_concurrent(self, ip: str = "127.0.0.1") -> int:
        """The most sessions open at once on listening address ``ip``."""
        return self._max_open.get(ip, 0)

    def connects(self, ip: str = "127.0.0.1") -> list[float]:
        """When each connection to ``ip`` was accepted (``time.monotonic()``), in order."""
        times = self._connects.get(ip)
        return times.tolist() if times is not None else []

    def rcpt_times(self, ip: str = "127.0.0.1") -> list[float]:
        """When each RCPT command reached ``ip`` (``time.monotonic()``), in order."""
        times = self._rcpt_times.get(ip)
        return times.tolist() if times is not None else []

    # -- one connection --

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        local = writer.get_extra_info("sockname")[0]
        peer = writer.get_extra_info("peername")[0]
        session = Session(local_ip=local, peer=peer)
        self.sessions.append(session)
        self._connects[local].append(time.monotonic())
        self._open[local] += 1
        self._max_open[local] = max(self._max_open[local], self._open[local])
        behaviour = self.by_ip.get(local, self.default)
        try:
            await self._converse(reader, writer, session, behaviour)
        except (_Hangup, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # stop() (or the loop shutting down) ends the session. Swallowed on purpose:
            # asyncio's StreamReaderProtocol calls task.exception() on this task when it
            # is done, which raises on a cancelled task and logs "Exception in callback
            # ... CancelledError" (seen when stopping mid-handshake or mid-stall).
            pass
        finally:
            self._open[local] -= 1
            session.closed = True
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _send(
        self, writer: asyncio.StreamWriter, session: Session, b: Behaviour, text: str
    ) -> None:
        if b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        data = "".join(line + "\r\n" for line in text.split("\n")).encode("utf-8")
        with contextlib.suppress(ValueError):
            session.replies.append(int(text[:3]))
            if int(text[:3]) >= 400:
                session.errors += 1
        writer.write(data)
        await writer.drain()

    async def _hostile(
        self, writer: asyncio.StreamWriter, session: Session, b: Behaviour, code: str
    ) -> None:
        if b.hostile == "close":
            raise _Hangup
        if b.hostile == "garbage":
            writer.write(b"\x00\xff\xfe\x16\x03\x01 garbage \x1b[0m\r\nHTTP/1.1 400 Bad\r\n")
            await writer.drain()
            await asyncio.sleep(3600)  # the client has to give up on its own
        if b.hostile == "huge_line":
            chunk = b"x" * 65536
            writer.write(f"{code} ".encode())
            sent = 0
            while sent < b.huge_size:
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
            writer.write(b"\r\n")
            await writer.drain()
            await asyncio.sleep(3600)
        if b.hostile == "endless":
            line = f"{code}-{'y' * 70}\r\n".encode()
            sent = 0
            while sent < _ENDLESS_CAP:
                writer.write(line * 64)
                sent += len(line) * 64
                await writer.drain()
            raise _Hangup

    async def _tarpit(self, writer: asyncio.StreamWriter, b: Behaviour, text: str) -> None:
        data = "".join(line + "\r\n" for line in text.split("\n")).encode()
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(1 / b.tarpit_rate)

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        session: Session,
        b: Behaviour,
        stage: str,
        text: str,
        hostile_now: bool,
    ) -> None:
        if hostile_now and b.hostile == "tarpit":
            if b.latency_ms:
                await asyncio.sleep(b.latency_ms / 1000)
            session.replies.append(int(text[:3]))
            await self._tarpit(writer, b, text)
            return
        if hostile_now and b.hostile is not None:
            await self._hostile(writer, session, b, text[:3])
        await self._send(writer, session, b, text)

    async def _converse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: Session,
        b: Behaviour,
    ) -> None:
        stages: list[str] = ["banner", "EHLO", "MAIL", "RCPT"]
        start = stages.index(b.hostile_at) if b.hostile else len(stages)

        def hostile(stage: str) -> bool:
            return b.hostile is not None and stage in stages and stages.index(stage) >= start

        banner = b.banner.format(host=self.hostname, ip=session.peer)
        await self._reply(writer, session, b, "banner", banner, hostile("banner"))
        if banner.startswith("421"):
            raise _Hangup
        refusing = not banner.startswith("2")  # 554 banner: only QUIT is answered kindly
        while True:
            if b.error_limit is not None and session.errors >= b.error_limit:
                # Postfix checks before reading the next command: pipelined ones are lost
                await self._send(
                    writer, session, b, f"421 4.7.0 {self.hostname} Error: too many errors"
                )
                raise _Hangup
            raw = await reader.readuntil(b"\n")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if self.record_commands:
                session.commands.append(line[:1000])
            verb = line.split(" ", 1)[0].split(":", 1)[0].upper()

            async def say(text: str, stage: str = "", session: Session = session) -> None:
                await self._reply(writer, session, b, stage, text, hostile(stage))

            if verb == "QUIT":
                await say("221 2.0.0 Bye")
                raise _Hangup
            if refusing:
                await say("503 5.5.1 Error: bad sequence of commands")
            elif verb == "EHLO":
                if not b.ehlo_supported:
                    await say("500 5.5.1 Command unrecognized: EHLO", "EHLO")
                    continue
                ext = [
                    self.hostname,
                    *b.ehlo_extra,
                    "SIZE 35882577",
                    "8BITMIME",
                    "ENHANCEDSTATUSCODES",
                ]
                if b.pipelining:
                    ext.append("PIPELINING")
                if b.smtputf8:
                    ext.append("SMTPUTF8")
                if b.starttls != "no" and not session.tls:
                    ext.append("STARTTLS")
                text = "\n".join(
                    f"250{'-' if i < len(ext) - 1 else ' '}{e}" for i, e in enumerate(ext)
                )
                await say(text, "EHLO")
            elif verb == "HELO":
                await say(f"250 {self.hostname}", "EHLO")
            elif verb == "STARTTLS":
                if b.starttls == "no" or session.tls:
                    await say("502 5.5.1 Error: command not implemented")
                    continue
                if b.starttls == "refused":
                    await say("454 4.7.0 TLS not available due to local problem")
                    continue
                await say("220 2.0.0 Ready to start TLS")
                if b.starttls == "broken":  # junk where the server hello belongs
                    if not await reader.read(65536):  # the client hello
                        raise _Hangup
                    writer.write(b"\x15\x03\x00\x00\x02\x02\x28not tls at all\r\n")
                    await writer.drain()
                    while await reader.read(65536):  # until the client gives up
                        pass
                    raise _Hangup
                if self._tls is None:
                    from mailvet.testing.tls import server_context

                    self._tls = server_context()
                await writer.start_tls(self._tls, ssl_handshake_timeout=10)
                session.tls = True
                session.mail_from = None
            elif verb == "MAIL":
                if b.starttls == "required" and not session.tls:
                    await say("530 5.7.0 Must issue a STARTTLS command first", "MAIL")
                    continue
                if hostile("MAIL") and b.hostile == "close":
                    raise _Hangup
                reply = (b.mail_reply or "250 2.1.0 Ok").format(host=self.hostname, ip=session.peer)
                if reply.startswith("2"):
                    session.mail_from = _angle(line)
                    session.transaction_rcpts = 0
                await say(reply, "MAIL")
            elif verb == "RCPT":
                self._rcpt_times[session.local_ip].append(time.monotonic())
                if session.mail_from is None:
                    await say("503 5.5.1 Error: need MAIL command", "RCPT")
                    continue
                rcpt = _angle(line)
                limit = b.max_rcpts_per_session
                if limit is not None and session.rcpts >= limit:
                    await say("421 4.7.0 Too many recipients this session")
                    raise _Hangup
                limit = b.max_rcpts_per_transaction
                if limit is not None and session.transaction_rcpts >= limit:
                    await say("452 4.5.3 Too many recipients", "RCPT")
                    continue
                session.rcpts += 1
                session.transaction_rcpts += 1
                if session.rcpts == 2 and b.second_rcpt == "close":
                    raise _Hangup
                if session.rcpts == 2 and b.second_rcpt == "stall":
                    while await reader.read(65536):  # never answer; wait for a hang-up
                        pass
                    raise _Hangup
                await say(self._rule_for(rcpt, b)(rcpt, session), "RCPT")
            elif verb == "RSET":
                session.mail_from = None
                session.transaction_rcpts = 0
                await say("250 2.0.0 Ok")
            elif verb == "NOOP":
                await say("250 2.0.0 Ok")
            elif verb == "VRFY":
                await say("252 2.0.0 Cannot VRFY user")
            elif verb == "DATA":
                await say("554 5.5.1 Error: the simulated internet takes no DATA")
            else:
                await say("502 5.5.2 Error: command not recognized")

    def _rule_for(self, rcpt: str, b: Behaviour) -> RcptRule:
        low = rcpt.lower()
        if low in self.by_address:
            return self.by_address[low].rcpt
        domain = low.rsplit("@", 1)[-1]
        if domain in self.by_domain:
            return self.by_domain[domain].rcpt
        return b.rcpt


def _angle(line: str) -> str:
    start, end = line.find("<"), line.find(">")
    if start != -1 and end > start:
        return line[start + 1 : end]
    return line.split(":", 1)[-1].strip()


class SmtpSimThread:
    """Run an :class:`SmtpSim` on its own event loop in a background thread."""

    def __init__(self, sim: SmtpSim) -> None:
        self.sim = sim
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.sim.port

    def start(self) -> Self:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="smtp-sim", daemon=True)
        self._thread.start()
        ready.wait()
        asyncio.run_coroutine_threadsafe(self.sim.start(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.sim.stop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

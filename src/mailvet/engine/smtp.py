"""The SMTP stage: ask the domain's MX whether it would take mail for the address.

Banner, EHLO (HELO fallback), STARTTLS when offered or required, MAIL FROM, RCPT TO
the address, RCPT TO a random address of the same domain (catch-all detection), QUIT.
Never DATA. Outcomes are data: ``probe`` never raises (cancellation aside).

Why a hand-written client and not aiosmtplib: aiosmtplib's reply reader is bounded,
but by fixed module constants (8 KiB line, 32 KiB reply), not by
``settings.smtp_max_reply_bytes``; it forbids pipelining ("if multiple commands are
written to the transport without awaiting, response data will be lost"), which costs
two round trips per verdict; and it hides the raw exchange we want in the transcript.
What we need is small: a line reader with a per-line and a per-reply byte limit and a
per-reply deadline (so a tarpit, an endless "250-" stream, a 10 MB line or binary junk
all end quickly with bounded memory), plus STARTTLS via ``StreamWriter.start_tls``.

Round trips (server-initiated banner counted as one):
  with PIPELINING: banner, EHLO, MAIL+RCPT+RCPT+QUIT                 = 3
  without:         banner, EHLO, MAIL, RCPT, RCPT (catch-all), QUIT = 6 (5 when the
                   domain's catch-all status is cached or the address was refused)
  STARTTLS adds STARTTLS, the handshake and a second EHLO.

What the verdict may rest on: once the real RCPT is answered, that answer is final.
The catch-all RCPT and QUIT after it are best effort (a timeout there, e.g. Exchange
slowing replies to invalid recipients, only leaves ``catch_all`` unknown). In
opportunistic STARTTLS mode TLS never costs the verdict either: a refused STARTTLS
(454) goes on in plain text, a failed handshake is retried once in plain text (one that
times out is not: the time is already spent).

Batch work (list cleaning) uses ``open_session`` instead: one ``SmtpSession`` per MX
address for many recipients (MAIL FROM once, RCPT after RCPT in PIPELINING groups, RSET
where the server needs it, the catch-all RCPT once per domain), on the same connection
and reply reader as the probe, with its own timeouts (``SessionTimeouts.batch``). A
server that ends the session (421 after too many errors, a hang-up, a stall) raises
``SessionEnded`` with the answers read so far: nothing is decided for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import ssl
import string
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mailvet.engine.facts import DnsFacts, DnsOutcome, MxHost, SmtpFacts, SmtpOutcome
from mailvet.engine.netpolicy import is_public_address
from mailvet.engine.replies import Reply, classify, parse_reply_lines
from mailvet.engine.transcript import Transcript
from mailvet.settings import Settings

__all__ = [
    "Pace",
    "SessionEnded",
    "SessionRefused",
    "SessionTimeouts",
    "SmtpSession",
    "SmtpStage",
    "open_smtp_connection",
]

_MAX_LINE = 4096  # one reply line (RFC 5321 says 512; real servers exceed it a little)
_READ_CHUNK = 4096
_MAX_ADDRESSES_PER_HOST = 2
_MAX_MESSAGE = 300  # SmtpFacts.message
_CATCH_ALL_CACHE_SIZE = 50_000
_LINE = re.compile(rb"^([0-9]{3})([ -]|\r?\n|$)")
_RANDOM_ALPHABET = string.ascii_lowercase + string.digits
_LDH_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")  # fullmatch only
# batch sessions (SmtpSession)
_RCPT_PER_TRANSACTION = 100  # RSET + MAIL FROM again after this many RCPTs (RFC 5321: >= 100)
_PIPELINE_GROUP = 20  # RCPTs written at once with PIPELINING
_QUIT_WAIT = 5.0  # the goodbye is best effort: never the whole command timeout
_MAX_ADDRESS = 1000 - len("RCPT TO:<>\r\n")  # one command line is at most 1000 octets

# worse failures first lose to more informative ones when every host failed
_FAILURE_RANK = {
    SmtpOutcome.NO_CONNECT: 0,
    SmtpOutcome.TIMEOUT: 1,
    SmtpOutcome.INVALID_SMTP: 2,
    SmtpOutcome.TEMPORARY: 3,
    SmtpOutcome.BLOCKED: 4,
}


class _ProviderLike(Protocol):
    @property
    def unreliable_accept(self) -> bool: ...


class _Failed(Exception):
    """A session cannot go on; carries the outcome for this host."""

    def __init__(
        self,
        outcome: SmtpOutcome,
        message: str,
        reply: Reply | None = None,
        *,
        tls_failed: bool = False,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.reply = reply
        self.tls_failed = tls_failed  # the TLS handshake failed: worth a plain-text retry


@dataclass(slots=True)
class _Attempt:
    facts: SmtpFacts
    final: bool  # the host answered RCPT: this is the answer
    connected: bool


class _Conn:
    """One SMTP connection with a bounded reply reader."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        settings: Settings,
        transcript: Transcript | None,
        stage: SmtpStage,
        on_answer: AnswerSink | None = None,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> None:
        self.on_answer = on_answer
        self.reader = reader
        self.writer = writer
        self.host = host
        # per command; a session's own end (time.monotonic()) bounds every command too
        self.timeout = settings.smtp_command_timeout if timeout is None else timeout
        self.deadline = deadline
        self.max_reply = max(64, settings.smtp_max_reply_bytes)
        self.max_line = min(_MAX_LINE, self.max_reply)
        self.transcript = transcript
        self.stage = stage
        self.buf = bytearray()
        self.tls = False
        self.round_trips = 0
        self._awaiting = True  # connecting is what the banner answers

    def note(self, kind: str, text: str) -> None:
        if self.transcript is not None:
            self.transcript.add(kind, text, host=self.host)

    def budget(self) -> float:
        """Seconds the next command may take: the command timeout, within the deadline."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Failed(SmtpOutcome.TIMEOUT, "session time limit reached")
        return min(self.timeout, left)

    async def send(self, *lines: str) -> None:
        """Write ``lines`` in one packet (one round trip however many)."""
        for line in lines:
            self.note("send", line)
        data = b"".join(line.encode("utf-8") + b"\r\n" for line in lines)
        budget = self.budget()
        try:
            self.writer.write(data)
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise _Failed(SmtpOutcome.TEMPORARY, f"connection lost while sending: {exc}") from None
        try:
            async with asyncio.timeout(budget):
                await self.writer.drain()
        except TimeoutError:
            raise _Failed(SmtpOutcome.TIMEOUT, "timed out sending to the server") from None
        except (ConnectionError, OSError) as exc:
            raise _Failed(SmtpOutcome.TEMPORARY, f"connection lost while sending: {exc}") from None
        self._awaiting = True

    async def _fill(self) -> None:
        chunk = await self.reader.read(_READ_CHUNK)
        if not chunk:
            raise _Failed(SmtpOutcome.TEMPORARY, "connection closed by the server")
        self.buf += chunk
        self.stage.max_buffered_bytes = max(self.stage.max_buffered_bytes, len(self.buf))

    async def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end != -1:
                if end + 1 > self.max_line:
                    raise _Failed(SmtpOutcome.INVALID_SMTP, "reply line too long")
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            if len(self.buf) > self.max_line:
                raise _Failed(SmtpOutcome.INVALID_SMTP, f"reply line over {self.max_line} bytes")
            await self._fill()

    async def reply(self, what: str) -> Reply:
        """Read one (possibly multi-line) reply within the command deadline."""
        if self._awaiting:
            self.round_trips += 1
            self._awaiting = False
        budget = self.budget()
        try:
            async with asyncio.timeout(budget):
                return await self._reply(what)
        except TimeoutError:
            raise _Failed(SmtpOutcome.TIMEOUT, f"no complete reply to {what} in time") from None
        except (ConnectionError, OSError) as exc:
            raise _Failed(
                SmtpOutcome.TEMPORARY, f"connection lost awaiting {what}: {exc}"
            ) from None

    async def _reply(self, what: str) -> Reply:
        total = 0
        code: bytes | None = None
        lines: list[str] = []  # every raw line (bounded by max_reply): EHLO keywords come late
        while True:
            line = await self._line()
            total += len(line)
            if total > self.max_reply:
                raise _Failed(
                    SmtpOutcome.INVALID_SMTP, f"reply to {what} over {self.max_reply} bytes"
                )
            m = _LINE.match(line)
            shown = line.decode("utf-8", "replace").rstrip("\r\n")
            if m is None or (code is not None and m.group(1) != code):
                self.note("recv", shown)
                raise _Failed(SmtpOutcome.INVALID_SMTP, f"not an SMTP reply to {what}: {shown!r}")
            code = m.group(1)
            lines.append(shown)
            if m.group(2) != b"-":
                break
        try:  # the one parser of reply lines (tests feed it real replies too)
            reply = parse_reply_lines(lines)
        except ValueError as exc:
            raise _Failed(SmtpOutcome.INVALID_SMTP, f"not an SMTP reply to {what}: {exc}") from None
        self.note("recv", str(reply))
        return reply

    def abort(self) -> None:
        self.writer.transport.abort()


def _sni(host: str) -> str | None:
    """``host`` if it can be sent as TLS SNI (an LDH host name), else None.

    An MX name from DNS may hold any bytes (a 63-byte label of non-ASCII, escapes, an
    underscore); ``ssl`` raises UnicodeError/ValueError on those, which must not cost
    the session: SNI is only a courtesy to the server.
    """
    name = host.rstrip(".")
    if not name or len(name) > 253 or not name.isascii():
        return None
    labels = name.split(".")
    if len(labels) < 2 or not all(_LDH_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit():  # an address literal is never SNI
        return None
    return name


def _random_local() -> str:
    return "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(20))


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= _MAX_MESSAGE:
        return text
    return text[:_MAX_MESSAGE] + "..."


async def open_smtp_connection(
    settings: Settings, ip: str, timeout: float | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``ip`` on the SMTP port, through the SOCKS5 proxy when one is set,
    within ``timeout`` (default: the real-time connect timeout). The caller has already
    applied the address policy."""
    port = settings.smtp_port
    async with asyncio.timeout(settings.smtp_connect_timeout if timeout is None else timeout):
        if settings.socks_proxy:
            from python_socks.async_.asyncio import Proxy

            proxy = Proxy.from_url(settings.socks_proxy)
            sock = await proxy.connect(dest_host=ip, dest_port=port)
            try:
                return await asyncio.open_connection(sock=sock)
            except BaseException:
                sock.close()
                raise
        return await asyncio.open_connection(ip, port)


AnswerSink = Callable[[SmtpFacts], None]
# awaited before a batch session writes RCPT commands, with how many (a rate limiter)
Pace = Callable[[int], Awaitable[None]]


def _failure_facts(conn: _Conn, failed: _Failed) -> SmtpFacts:
    """What a failed session says: the outcome, and the reply quoted when there was one."""
    r = failed.reply
    return SmtpFacts(
        failed.outcome,
        mx_host=conn.host,
        code=r.code if r else None,
        enhanced=r.enhanced if r else None,
        message=_short(str(r) if r else failed.message),
        tls=conn.tls,
    )


class SessionEnded(Exception):
    """The server ended a batch session (421, disconnect, timeout, nonsense).

    ``facts`` says what ended it (the reply quoted when there was one). Nothing is
    decided for the addresses of the current call past the first ``answered``: their
    answers, in order, are ``partial``; the caller asks the rest again in a new session.
    """

    def __init__(
        self, facts: SmtpFacts, answered: int = 0, partial: Sequence[SmtpFacts] = ()
    ) -> None:
        super().__init__(facts.message or facts.outcome.value)
        self.facts = facts
        self.answered = answered
        self.partial: list[SmtpFacts] = list(partial)


class SessionRefused(Exception):
    """A batch session could not be opened: connect refused or timed out, a private
    address, banner / EHLO / STARTTLS / MAIL FROM refused. ``facts`` says which."""

    def __init__(self, facts: SmtpFacts) -> None:
        super().__init__(facts.message or facts.outcome.value)
        self.facts = facts


@dataclass(frozen=True, slots=True)
class SessionTimeouts:
    """Seconds to connect, for one reply, and for a whole session."""

    connect: float
    command: float
    session: float

    @classmethod
    def batch(cls, settings: Settings) -> SessionTimeouts:
        """List cleaning: ``batch_*`` settings (generous: nobody waits on one address)."""
        return cls(
            settings.batch_connect_timeout,
            settings.batch_command_timeout,
            settings.batch_session_timeout,
        )

    @classmethod
    def realtime(cls, settings: Settings) -> SessionTimeouts:
        """The real-time probe's budget: ``smtp_*`` timeouts within ``deadline``."""
        return cls(settings.smtp_connect_timeout, settings.smtp_command_timeout, settings.deadline)


def _marking_unreliable(sink: AnswerSink) -> AnswerSink:
    return lambda facts: sink(dataclasses.replace(facts, unreliable_accept=True))


def _rcpt_facts(
    conn: _Conn, rcpt_r: Reply, outcome: SmtpOutcome, catch_all: bool | None
) -> SmtpFacts:
    return SmtpFacts(
        outcome,
        mx_host=conn.host,
        code=rcpt_r.code,
        enhanced=rcpt_r.enhanced,
        message=_short(rcpt_r.text),
        catch_all=catch_all,
        tls=conn.tls,
    )


class SmtpStage:
    """Probe mailboxes over SMTP. One per process; safe to share across tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._catch_all: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        # catch-all probes under way in batch sessions (domain -> (answered, value)): a
        # second session asking the same domain meanwhile waits for the first one's answer
        self._catch_all_probing: dict[str, asyncio.Future[tuple[bool, bool | None]]] = {}
        self._tls_context: ssl.SSLContext | None = None
        self.max_buffered_bytes = 0  # high-water mark of any reply buffer (for tests)

    async def close(self) -> None:
        self._catch_all.clear()

    # --- catch-all cache ---

    def catch_all_cached(self, domain: str) -> bool | None:
        key = domain.lower()
        hit = self._catch_all.get(key)
        if hit is None:
            return None
        value, expires = hit
        if expires < time.monotonic():
            del self._catch_all[key]
            return None
        return value

    def _remember_catch_all(self, domain: str, value: bool) -> None:
        key = domain.lower()
        self._catch_all[key] = (value, time.monotonic() + self.settings.catch_all_cache_ttl)
        self._catch_all.move_to_end(key)
        while len(self._catch_all) > _CATCH_ALL_CACHE_SIZE:
            self._catch_all.popitem(last=False)

    # --- batch sessions ---

    async def open_session(
        self,
        host: str,
        ip: str,
        *,
        timeouts: SessionTimeouts,
        transcript: Transcript | None = None,
        smtputf8: bool = False,
        rcpt_per_transaction: int = _RCPT_PER_TRANSACTION,
        pipeline_group: int = _PIPELINE_GROUP,
    ) -> SmtpSession:
        """Open a session to ``host`` at ``ip`` for many RCPTs (batch work).

        Connect (SOCKS proxy and private-address policy as for ``probe``), banner,
        EHLO/HELO, STARTTLS as the settings say (a failed handshake is retried once in
        plain text unless TLS is required), MAIL FROM (with SMTPUTF8 when ``smtputf8``
        and the server offers it). Raises ``SessionRefused`` with the facts of the
        failure. ``timeouts.session`` bounds the session from here to ``close``.
        """
        if not (self.settings.allow_private_mx or is_public_address(ip)):
            if transcript is not None:
                transcript.add("note", f"refused non-public address {ip}", host=host)
            raise SessionRefused(
                SmtpFacts(
                    SmtpOutcome.PRIVATE_MX,
                    mx_host=host,
                    message=_short(
                        f"refused to probe non-public MX address {ip}; "
                        "set allow_private_mx to allow"
                    ),
                )
            )
        deadline = time.monotonic() + timeouts.session
        options = (max(1, rcpt_per_transaction), max(1, pipeline_group))
        session = await self._open_once(
            host, ip, timeouts, deadline, transcript, smtputf8, options, use_tls=True
        )
        if session is None:
            if transcript is not None:
                transcript.add("note", "TLS handshake failed: retrying without STARTTLS", host=host)
            session = await self._open_once(
                host, ip, timeouts, deadline, transcript, smtputf8, options, use_tls=False
            )
        assert session is not None  # only a use_tls=True attempt asks for a retry
        return session

    async def _open_once(
        self,
        host: str,
        ip: str,
        timeouts: SessionTimeouts,
        deadline: float,
        transcript: Transcript | None,
        smtputf8: bool,
        options: tuple[int, int],
        *,
        use_tls: bool,
    ) -> SmtpSession | None:
        """One try at opening; None means "retry without STARTTLS"."""
        if transcript is not None:
            transcript.add("connect", f"{ip}:{self.settings.smtp_port}", host=host)
        left = deadline - time.monotonic()
        if left <= 0:
            raise SessionRefused(
                SmtpFacts(SmtpOutcome.TIMEOUT, mx_host=host, message="session time limit reached")
            )
        try:
            reader, writer = await self._connect(ip, min(timeouts.connect, left))
        except TimeoutError:
            raise SessionRefused(
                SmtpFacts(
                    SmtpOutcome.NO_CONNECT, mx_host=host, message=f"connect to {ip} timed out"
                )
            ) from None
        except Exception as exc:  # refused, unreachable, proxy errors
            why = _short(f"cannot connect to {ip}: {exc}")
            raise SessionRefused(
                SmtpFacts(SmtpOutcome.NO_CONNECT, mx_host=host, message=why)
            ) from None
        conn = _Conn(
            reader,
            writer,
            host,
            self.settings,
            transcript,
            self,
            timeout=timeouts.command,
            deadline=deadline,
        )
        try:
            ext = await self._greet(conn, use_tls=use_tls)
            session = SmtpSession(
                self,
                conn,
                ip,
                ext,
                smtputf8=smtputf8,
                rcpt_per_transaction=options[0],
                pipeline_group=options[1],
            )
            await session._begin()
            return session
        except _Failed as failed:
            conn.abort()
            conn.note("note", failed.message)
            if failed.tls_failed and use_tls and self.settings.smtp_starttls != "required":
                return None
            raise SessionRefused(_failure_facts(conn, failed)) from None
        except Exception as exc:  # a bug here is still only a refused session
            conn.abort()
            conn.note("note", f"smtp session error: {type(exc).__name__}: {exc}")
            raise SessionRefused(
                SmtpFacts(
                    SmtpOutcome.INVALID_SMTP, mx_host=host, message=_short(f"internal error: {exc}")
                )
            ) from None
        except BaseException:  # cancelled
            conn.abort()
            raise

    # --- the probe ---

    async def probe(
        self,
        email: str,
        domain: str,
        dns: DnsFacts,
        transcript: Transcript | None = None,
        provider: _ProviderLike | None = None,
        on_answer: AnswerSink | None = None,
    ) -> SmtpFacts:
        """Probe ``email``; never raises.

        ``on_answer`` is called as soon as the real RCPT is answered, with that answer
        (catch-all not yet known), so a caller whose deadline cancels the probe during
        the best-effort tail (catch-all RCPT, QUIT) still has the verdict's evidence.
        """
        unreliable = bool(provider is not None and provider.unreliable_accept)
        sink = on_answer
        if on_answer is not None and unreliable:
            sink = _marking_unreliable(on_answer)
        try:
            facts = await self._probe(email, domain, dns, transcript, sink)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never raises: a bug here is still only "unknown"
            if transcript is not None:
                transcript.add("note", f"smtp stage error: {type(exc).__name__}: {exc}")
            facts = SmtpFacts(SmtpOutcome.INVALID_SMTP, message=_short(f"internal error: {exc}"))
        if unreliable:
            facts = dataclasses.replace(facts, unreliable_accept=True)
        return facts

    def _candidates(
        self, dns: DnsFacts, transcript: Transcript | None
    ) -> tuple[list[tuple[MxHost, list[str]]], list[tuple[str, str]]]:
        """The hosts to try, in order, with their allowed addresses; and the refused ones.

        By preference only: a stable sort keeps the DNS stage's random order among hosts
        of equal preference (RFC 5321 5.1), never an order by name.
        """
        hosts: list[tuple[MxHost, list[str]]] = []
        refused: list[tuple[str, str]] = []
        for mx in sorted(dns.mx_hosts, key=lambda m: m.preference):
            if len(hosts) >= self.settings.smtp_max_mx_hosts:
                break
            if not mx.addresses:
                if transcript is not None:
                    transcript.add("note", "no address for this MX, skipped", host=mx.host)
                continue
            allowed: list[str] = []
            for ip in mx.addresses:
                if self.settings.allow_private_mx or is_public_address(ip):
                    allowed.append(ip)
                else:
                    refused.append((mx.host, ip))
                    if transcript is not None:
                        transcript.add("note", f"refused non-public address {ip}", host=mx.host)
            if allowed:
                hosts.append((mx, allowed[:_MAX_ADDRESSES_PER_HOST]))
        return hosts, refused

    async def _probe(
        self,
        email: str,
        domain: str,
        dns: DnsFacts,
        transcript: Transcript | None,
        on_answer: AnswerSink | None = None,
    ) -> SmtpFacts:
        if any(c in email or c in domain for c in "\r\n\x00"):
            # the syntax stage never lets these through; refuse anyway, so nothing can
            # smuggle a command (say, DATA) into the session
            return SmtpFacts(SmtpOutcome.INVALID_SMTP, message="address not safe to send")
        if dns.outcome is not DnsOutcome.OK or not dns.mx_hosts:
            return SmtpFacts(SmtpOutcome.NO_CONNECT, message="no mail host to connect to")
        hosts, refused = self._candidates(dns, transcript)
        if not hosts:
            if refused:
                shown = ", ".join(f"{h} ({ip})" for h, ip in refused[:4])
                return SmtpFacts(
                    SmtpOutcome.PRIVATE_MX,
                    mx_host=refused[0][0],
                    message=_short(
                        f"refused to probe non-public MX address(es): {shown}; "
                        "set allow_private_mx to allow"
                    ),
                )
            return SmtpFacts(SmtpOutcome.NO_CONNECT, message="no MX host has an address")
        failures: list[SmtpFacts] = []
        for mx, addresses in hosts:
            for ip in addresses:
                attempt = await self._attempt(mx.host, ip, email, domain, transcript, on_answer)
                if attempt.final:
                    return attempt.facts
                failures.append(attempt.facts)
                if attempt.connected:
                    break  # the host itself failed: next host, not its next address
        best = failures[0]
        for f in failures[1:]:
            if _FAILURE_RANK.get(f.outcome, 0) > _FAILURE_RANK.get(best.outcome, 0):
                best = f
        return best

    async def _connect(
        self, ip: str, timeout: float | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await open_smtp_connection(self.settings, ip, timeout)

    async def _attempt(
        self,
        host: str,
        ip: str,
        email: str,
        domain: str,
        transcript: Transcript | None,
        on_answer: AnswerSink | None = None,
    ) -> _Attempt:
        attempt, retry_plain = await self._attempt_once(
            host, ip, email, domain, transcript, True, on_answer
        )
        if retry_plain:
            # a failed handshake (old MX: TLS 1.0, weak ciphers, broken STARTTLS) is no
            # verdict: once more to the same address, in plain text, as MTAs do
            if transcript is not None:
                transcript.add("note", "TLS handshake failed: retrying without STARTTLS", host=host)
            attempt, _ = await self._attempt_once(
                host, ip, email, domain, transcript, False, on_answer
            )
        return attempt

    async def _attempt_once(
        self,
        host: str,
        ip: str,
        email: str,
        domain: str,
        transcript: Transcript | None,
        use_tls: bool,
        on_answer: AnswerSink | None = None,
    ) -> tuple[_Attempt, bool]:
        """One session; also says whether to retry without STARTTLS."""
        if transcript is not None:
            transcript.add("connect", f"{ip}:{self.settings.smtp_port}", host=host)
        try:
            reader, writer = await self._connect(ip)
        except TimeoutError:
            msg = f"connect to {ip} timed out"
            return _Attempt(
                SmtpFacts(SmtpOutcome.NO_CONNECT, mx_host=host, message=msg), False, False
            ), False
        except Exception as exc:  # refused, unreachable, proxy errors
            why = _short(f"cannot connect to {ip}: {exc}")
            return _Attempt(
                SmtpFacts(SmtpOutcome.NO_CONNECT, mx_host=host, message=why), False, False
            ), False
        conn = _Conn(reader, writer, host, self.settings, transcript, self, on_answer)
        try:
            facts = await self._session(conn, email, domain, use_tls=use_tls)
            return _Attempt(facts, True, True), False
        except _Failed as failed:
            conn.note("note", failed.message)
            facts = _failure_facts(conn, failed)
            retry = failed.tls_failed and use_tls and self.settings.smtp_starttls != "required"
            return _Attempt(facts, False, True), retry
        finally:
            conn.abort()

    def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            # MX certificates are routinely self-signed or for another name: opportunistic
            # encryption without verification, as MTAs do (RFC 7435).
            # And permissive: a failed handshake would cost the verdict, and old MX servers
            # still speak TLS 1.0 with ciphers below OpenSSL's default security level.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with warnings.catch_warnings():  # TLSVersion.TLSv1 is deprecated (on purpose)
                warnings.simplefilter("ignore", DeprecationWarning)
                with contextlib.suppress(ValueError, ssl.SSLError):
                    ctx.minimum_version = ssl.TLSVersion.TLSv1
            with contextlib.suppress(ssl.SSLError):  # OpenSSL builds differ
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            self._tls_context = ctx
        return self._tls_context

    async def _hello(self, conn: _Conn) -> set[str]:
        await conn.send(f"EHLO {self.settings.helo_name}")
        r = await conn.reply("EHLO")
        if 200 <= r.code < 300:
            return self._extensions(r)
        if r.code >= 500:  # EHLO not supported: plain SMTP
            await conn.send(f"HELO {self.settings.helo_name}")
            r = await conn.reply("HELO")
            if 200 <= r.code < 300:
                return set()
        raise _Failed(classify(r.code, r.enhanced, r.text, command="EHLO"), str(r), r)

    async def _starttls(self, conn: _Conn, ext: set[str]) -> set[str]:
        """Encrypt the session; the extensions to use afterwards.

        Opportunistic mode (the default) never lets TLS cost the verdict: a refusal
        (454 "TLS not available") goes on in plain text on this connection, a failed
        handshake is retried in plain text on a new one (``tls_failed``).
        """
        required = self.settings.smtp_starttls == "required"
        await conn.send("STARTTLS")
        r = await conn.reply("STARTTLS")
        if r.code != 220:
            if required:
                raise _Failed(classify(r.code, r.enhanced, r.text, command="STARTTLS"), str(r), r)
            conn.note("note", "STARTTLS refused: going on without TLS")
            return ext - {"STARTTLS"}  # RFC 3207: the session is as before the command
        if conn.buf:  # bytes after "220" before our handshake: not a TLS server hello
            raise _Failed(
                SmtpOutcome.TEMPORARY,
                "TLS handshake failed: data after the STARTTLS reply",
                tls_failed=True,
            )
        try:
            async with asyncio.timeout(conn.budget()):
                await conn.writer.start_tls(self._tls(), server_hostname=_sni(conn.host))
        except TimeoutError:
            raise _Failed(SmtpOutcome.TIMEOUT, "TLS handshake timed out") from None
        except (ssl.SSLError, ConnectionError, OSError, ValueError) as exc:
            raise _Failed(
                SmtpOutcome.TEMPORARY, _short(f"TLS handshake failed: {exc}") or "", tls_failed=True
            ) from None
        conn.tls = True
        conn.buf.clear()  # nothing sent in clear text may be trusted after STARTTLS
        conn.note("note", "TLS established")
        return await self._hello(conn)

    @staticmethod
    def _extensions(r: Reply) -> set[str]:
        # every line after the greeting starts with an extension keyword (RFC 5321 4.1.1.1)
        return {line.split(" ", 1)[0].upper() for line in r.lines[1:] if line}

    async def _greet(self, conn: _Conn, *, use_tls: bool) -> set[str]:
        """Banner, EHLO (HELO), STARTTLS as the settings say: the extensions to use.

        Shared by the real-time probe and the batch session (``open_session``).
        """
        s = self.settings
        banner = await conn.reply("banner")
        if not 200 <= banner.code < 300:
            raise _Failed(
                classify(banner.code, banner.enhanced, banner.text, command="banner"),
                str(banner),
                banner,
            )
        ext = await self._hello(conn)
        if "STARTTLS" in ext and s.smtp_starttls != "never" and use_tls:
            ext = await self._starttls(conn, ext)
        elif s.smtp_starttls == "required":
            raise _Failed(SmtpOutcome.TEMPORARY, "STARTTLS required by settings, not offered")
        return ext

    async def _session(
        self, conn: _Conn, email: str, domain: str, *, use_tls: bool = True
    ) -> SmtpFacts:
        s = self.settings
        ext = await self._greet(conn, use_tls=use_tls)
        utf8 = not email.isascii()
        if utf8 and "SMTPUTF8" not in ext:
            raise _Failed(SmtpOutcome.TEMPORARY, "address needs SMTPUTF8, server lacks it")
        mail = f"MAIL FROM:<{s.mail_from}>" + (" SMTPUTF8" if utf8 else "")
        rcpt = f"RCPT TO:<{email}>"
        cached = self.catch_all_cached(domain)
        probe = f"RCPT TO:<{_random_local()}@{domain}>" if cached is None else None

        if "PIPELINING" in ext:
            await conn.send(*[c for c in (mail, rcpt, probe, "QUIT") if c is not None])
            mail_r = await conn.reply("MAIL")
            if not 200 <= mail_r.code < 300:
                with contextlib.suppress(_Failed):  # read the rest of the group politely
                    for _ in range(3 if probe is not None else 2):
                        await conn.reply("pipelined command")
                raise _Failed(
                    classify(mail_r.code, mail_r.enhanced, mail_r.text, command="MAIL"),
                    str(mail_r),
                    mail_r,
                )
            rcpt_r = await conn.reply("RCPT")
            self._answered(conn, rcpt_r, domain, cached)
            # the real answer is in: what follows (the random RCPT, QUIT) is best effort
            probe_r = await self._best_effort(conn, probe is not None)
            if probe is None or probe_r is not None:
                await self._quit(conn, sent=True)
        else:
            await conn.send(mail)
            mail_r = await conn.reply("MAIL")
            if not 200 <= mail_r.code < 300:
                await self._quit(conn)
                raise _Failed(
                    classify(mail_r.code, mail_r.enhanced, mail_r.text, command="MAIL"),
                    str(mail_r),
                    mail_r,
                )
            await conn.send(rcpt)
            rcpt_r = await conn.reply("RCPT")
            self._answered(conn, rcpt_r, domain, cached)
            probe_r = None
            probe_failed = False
            if probe is not None and 200 <= rcpt_r.code < 300:
                # the real answer is in: the random RCPT and QUIT are best effort
                probe_r = await self._best_effort(conn, True, send=probe)
                probe_failed = probe_r is None
            if not probe_failed:
                await self._quit(conn)

        outcome = classify(rcpt_r.code, rcpt_r.enhanced, rcpt_r.text, command="RCPT")
        catch_all: bool | None = None
        if outcome is SmtpOutcome.ACCEPTED:
            if cached is not None:
                catch_all = cached
            elif probe_r is not None:
                random_outcome = classify(probe_r.code, probe_r.enhanced, probe_r.text)
                if random_outcome is SmtpOutcome.ACCEPTED:
                    catch_all = True
                elif random_outcome is SmtpOutcome.USER_UNKNOWN:
                    catch_all = False
                if catch_all is not None:
                    self._remember_catch_all(domain, catch_all)
        elif outcome is SmtpOutcome.USER_UNKNOWN:
            catch_all = False  # the domain refused a recipient: not a catch-all
            self._remember_catch_all(domain, False)
        conn.note("note", f"round trips: {conn.round_trips}")
        return _rcpt_facts(conn, rcpt_r, outcome, catch_all)

    def _answered(self, conn: _Conn, rcpt_r: Reply, domain: str, cached: bool | None) -> None:
        """Hand the real RCPT's answer to the caller before the best-effort tail."""
        if conn.on_answer is None:
            return
        outcome = classify(rcpt_r.code, rcpt_r.enhanced, rcpt_r.text, command="RCPT")
        catch_all = cached if outcome is SmtpOutcome.ACCEPTED else None
        if outcome is SmtpOutcome.USER_UNKNOWN:
            catch_all = False
        conn.on_answer(_rcpt_facts(conn, rcpt_r, outcome, catch_all))

    async def _best_effort(
        self, conn: _Conn, wanted: bool, *, send: str | None = None
    ) -> Reply | None:
        """The reply to the catch-all RCPT, or None when it fails (timeout, hang-up).

        Exchange slows its answer to an invalid recipient past our command timeout;
        that must cost the catch-all flag only, never the real RCPT's answer.
        """
        if not wanted:
            return None
        try:
            if send is not None:
                await conn.send(send)
            return await conn.reply("RCPT")
        except _Failed as failed:
            conn.note("note", f"catch-all check failed, ignored: {failed.message}")
            return None

    async def _quit(self, conn: _Conn, *, sent: bool = False) -> None:
        """Say goodbye politely; the verdict is already known, so errors are ignored."""
        with contextlib.suppress(_Failed):
            if not sent:
                await conn.send("QUIT")
            await conn.reply("QUIT")


def _new_transaction_needed(r: Reply) -> bool:
    """The RCPT was not judged: the transaction holds too many recipients (452 4.5.3,
    old servers 552 5.5.3) or the server lost it (503 bad sequence). Not an answer about
    the address: it is asked again after RSET and MAIL FROM."""
    if r.code == 503:
        return True
    if r.code in (452, 552) and r.enhanced not in ("4.2.2", "5.2.2"):
        return r.enhanced in ("4.5.3", "5.5.3") or "too many recipients" in r.text.lower()
    return False


class SmtpSession:
    """One SMTP session to one MX address for many recipients (batch work).

    Opened by ``SmtpStage.open_session`` (connect, banner, EHLO, STARTTLS, MAIL FROM);
    then ``rcpt`` / ``rcpt_many`` ask about addresses, ``catch_all`` probes a domain once
    (the stage's cache remembers it), ``close`` says QUIT. Never DATA.

    Transactions: RSET and MAIL FROM again every ``rcpt_per_transaction`` recipients and
    when the server says "452 4.5.3 too many recipients" (then the session keeps to the
    number it took). With PIPELINING, up to ``pipeline_group`` RCPTs (behind RSET + MAIL
    when due) go in one write and their replies are read in order.

    The session ends (``SessionEnded``, the connection dropped) on a 421, a hang-up, a
    timeout (one reply, or the whole session), or a reply that is not SMTP; the answers
    read before it are kept in the exception, nothing is decided for the rest. Every
    later call raises ``SessionEnded`` at once. Not for concurrent use by several tasks
    (calls are serialised).
    """

    def __init__(
        self,
        stage: SmtpStage,
        conn: _Conn,
        ip: str,
        ext: set[str],
        *,
        smtputf8: bool = False,
        rcpt_per_transaction: int = _RCPT_PER_TRANSACTION,
        pipeline_group: int = _PIPELINE_GROUP,
    ) -> None:
        self.host = conn.host
        self.ip = ip
        self.tls = conn.tls
        self.pipelining = "PIPELINING" in ext
        self.smtputf8 = "SMTPUTF8" in ext  # the server takes non-ASCII addresses
        self.rcpts = 0  # RCPT commands answered in this session
        self.errors = 0  # 4xx/5xx replies in this session
        self.transactions = 0  # MAIL FROM accepted
        self.rcpt_per_transaction = max(1, rcpt_per_transaction)
        self.pipeline_group = max(1, pipeline_group)
        self._stage = stage
        self._conn = conn
        self._utf8 = smtputf8 and self.smtputf8  # MAIL FROM ... SMTPUTF8 from now on
        self._mail_sent = False
        self._txn = False  # a MAIL FROM was accepted and not reset
        self._txn_utf8 = False
        self._txn_rcpts = 0  # RCPTs answered in the current transaction
        self._ended: SmtpFacts | None = None
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def round_trips(self) -> int:
        """Writes that waited for a reply so far (the banner counts as one)."""
        return self._conn.round_trips

    @property
    def ended(self) -> SmtpFacts | None:
        """What ended the session, or None while it is usable."""
        return self._ended

    @property
    def time_left(self) -> float:
        """Seconds until the session's time limit (``SessionTimeouts.session``)."""
        deadline = self._conn.deadline
        return float("inf") if deadline is None else max(0.0, deadline - time.monotonic())

    async def __aenter__(self) -> SmtpSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- public ---

    async def rcpt(self, address: str, *, pace: Pace | None = None) -> SmtpFacts:
        """Ask about one address: its classified ``SmtpFacts`` (``catch_all`` None).

        Raises ``SessionEnded`` when the session ends before the answer: nothing is
        decided for ``address`` then. ``pace`` as for ``rcpt_many``.
        """
        return (await self.rcpt_many([address], pace=pace))[0]

    async def rcpt_many(
        self, addresses: Sequence[str], *, pace: Pace | None = None
    ) -> list[SmtpFacts]:
        """Ask about every address, in order; the answers in the same order.

        Raises ``SessionEnded`` when the session ends first: its ``partial`` holds the
        answers to ``addresses[:answered]``. ``pace`` (e.g. a RCPT-per-second limiter)
        is awaited before each write with the number of RCPT commands in it (1 without
        PIPELINING; a recipient asked again after "452 too many recipients" counts again).
        """
        async with self._lock:
            self._check_usable()
            results: list[SmtpFacts | None] = [None] * len(addresses)
            pending: deque[int] = deque()
            for i, address in enumerate(addresses):
                refusal = self._refusal(address)
                if refusal is None:
                    pending.append(i)
                else:
                    results[i] = refusal
            if any(not addresses[i].isascii() for i in pending):
                self._utf8 = True  # the server offers it, else _refusal answered them
            retried: set[int] = set()
            try:
                while pending:
                    await self._group(addresses, pending, results, retried, pace)
            except _Failed as failed:
                facts = _failure_facts(self._conn, failed)
                self._end(facts, failed.message)
                done = _answered_prefix(results)
                raise SessionEnded(facts, len(done), done) from None
            except Exception as exc:  # a bug: still only the end of this session
                facts = SmtpFacts(
                    SmtpOutcome.INVALID_SMTP,
                    mx_host=self.host,
                    message=_short(f"internal error: {exc}"),
                    tls=self.tls,
                )
                self._end(facts, f"smtp session error: {type(exc).__name__}: {exc}")
                done = _answered_prefix(results)
                raise SessionEnded(facts, len(done), done) from None
            except BaseException:  # cancelled mid-exchange: the connection is out of step
                self._end(
                    SmtpFacts(SmtpOutcome.TEMPORARY, mx_host=self.host, message="interrupted"),
                    "session interrupted",
                )
                raise
            out = [r for r in results if r is not None]
            assert len(out) == len(results)
            return out

    async def catch_all(self, domain: str) -> bool | None:
        """Whether ``domain`` takes mail for a random local part: True (catch-all),
        False (user unknown), None (anything else). Asked once per domain: the stage's
        catch-all cache answers afterwards (also after a real user-unknown answer)."""
        stage = self._stage
        cached = stage.catch_all_cached(domain)
        if cached is not None:
            return cached
        key = domain.lower()
        running = stage._catch_all_probing.get(key)
        if running is not None:  # another session is asking: its answer, if it gets one
            answered, value = await asyncio.shield(running)
            if answered:
                return value
        self._check_usable()
        mine: asyncio.Future[tuple[bool, bool | None]] = asyncio.get_running_loop().create_future()
        stage._catch_all_probing[key] = mine
        value = None
        try:
            facts = await self.rcpt(f"{_random_local()}@{domain}")
            if facts.outcome is SmtpOutcome.ACCEPTED:
                value = True
            elif facts.outcome is SmtpOutcome.USER_UNKNOWN:
                value = False
            if value is not None:
                stage._remember_catch_all(domain, value)
            mine.set_result((True, value))
            return value
        finally:
            if not mine.done():  # the session ended (or we were cancelled): no answer
                mine.set_result((False, None))
            if stage._catch_all_probing.get(key) is mine:
                del stage._catch_all_probing[key]

    async def close(self) -> None:
        """QUIT politely (best effort, briefly), then close. Idempotent. Closing while
        another task is mid-exchange hangs up instead (its call raises SessionEnded)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._ended is None and not self._lock.locked():
                await self._goodbye()
        finally:
            self._conn.abort()

    async def _goodbye(self) -> None:
        self._conn.timeout = min(self._conn.timeout, _QUIT_WAIT)
        await self._stage._quit(self._conn)

    # --- inside ---

    def _check_usable(self) -> None:
        if self._ended is not None:
            raise SessionEnded(self._ended)
        if self._closed:
            raise SessionEnded(
                SmtpFacts(SmtpOutcome.TEMPORARY, mx_host=self.host, message="session closed")
            )

    def _end(self, facts: SmtpFacts, note: str) -> None:
        self._ended = facts
        self._conn.note("note", f"session ended: {note}")
        self._conn.abort()

    def _refusal(self, address: str) -> SmtpFacts | None:
        """The answer for an address that must not be sent, else None."""
        if any(c in address for c in "\r\n\x00") or len(address) > _MAX_ADDRESS:
            # the syntax stage never lets these through; refuse anyway, so nothing can
            # smuggle a command (say, DATA) into the session
            return SmtpFacts(
                SmtpOutcome.INVALID_SMTP, mx_host=self.host, message="address not safe to send"
            )
        if not address.isascii() and not self.smtputf8:
            return SmtpFacts(
                SmtpOutcome.TEMPORARY,
                mx_host=self.host,
                message="address needs SMTPUTF8, server lacks it",
                tls=self.tls,
            )
        return None

    def _mail_command(self) -> str:
        return f"MAIL FROM:<{self._stage.settings.mail_from}>" + (" SMTPUTF8" if self._utf8 else "")

    async def _begin(self) -> None:
        """The first MAIL FROM (``open_session``): a refusal refuses the session."""
        conn = self._conn
        self._mail_sent = True
        await conn.send(self._mail_command())
        r = await conn.reply("MAIL")
        if r.code >= 400:
            self.errors += 1
        if not 200 <= r.code < 300:
            if r.code != 421:
                await self._goodbye()
            raise _Failed(classify(r.code, r.enhanced, r.text, command="MAIL"), str(r), r)
        self._started_transaction()

    def _started_transaction(self) -> None:
        self._txn = True
        self._txn_utf8 = self._utf8
        self._txn_rcpts = 0
        self.transactions += 1

    async def _group(
        self,
        addresses: Sequence[str],
        pending: deque[int],
        results: list[SmtpFacts | None],
        retried: set[int],
        pace: Pace | None = None,
    ) -> None:
        """One write (with PIPELINING) or one command at a time: [RSET] [MAIL] RCPT..."""
        conn = self._conn
        plan: list[tuple[str, str, int]] = []  # (verb, command line, address index)
        room = self.rcpt_per_transaction - self._txn_rcpts
        if not self._txn or room <= 0 or (self._utf8 and not self._txn_utf8):
            if self._mail_sent:
                plan.append(("RSET", "RSET", -1))
            plan.append(("MAIL", self._mail_command(), -1))
            room = self.rcpt_per_transaction
        size = min(self.pipeline_group if self.pipelining else 1, room, len(pending))
        for _ in range(size):
            i = pending.popleft()
            plan.append(("RCPT", f"RCPT TO:<{addresses[i]}>", i))
        if self.pipelining:
            if pace is not None:
                await pace(size)
            await conn.send(*(line for _, line, _ in plan))
        again: list[int] = []
        for n, (verb, line, i) in enumerate(plan):
            if not self.pipelining:
                if pace is not None and verb == "RCPT":
                    await pace(1)
                await conn.send(line)
            r = await conn.reply(verb)
            if r.code >= 400:
                self.errors += 1
            if r.code == 421:  # closing the channel: the session is over
                raise _Failed(classify(r.code, r.enhanced, r.text, command="session"), str(r), r)
            if verb == "RSET":
                self._txn = False
                if not 200 <= r.code < 300:
                    raise _Failed(classify(r.code, r.enhanced, r.text, command="RSET"), str(r), r)
                continue
            if verb == "MAIL":
                self._mail_sent = True
                if not 200 <= r.code < 300:
                    if self.pipelining:  # the RCPTs behind it: read their refusals
                        with contextlib.suppress(_Failed):
                            for _ in range(len(plan) - n - 1):
                                await conn.reply("pipelined command")
                    await self._goodbye()
                    raise _Failed(classify(r.code, r.enhanced, r.text, command="MAIL"), str(r), r)
                self._started_transaction()
                continue
            if _new_transaction_needed(r):
                if i in retried:  # not even one recipient in a fresh transaction
                    raise _Failed(SmtpOutcome.TEMPORARY, str(r), r)
                retried.add(i)
                again.append(i)
                continue
            results[i] = self._answer(addresses[i], r)
        if conn.buf and not conn.buf.startswith(b"421"):
            # more replies than commands: every answer of this group may belong to
            # another address. None of them counts (a 421 is only the session's end).
            for _, _, i in plan:
                if i >= 0:
                    results[i] = None
            raise _Failed(SmtpOutcome.INVALID_SMTP, "the server answered more than was asked")
        if again:
            # keep to what the server took; the next group starts a new transaction
            self.rcpt_per_transaction = max(1, min(self.rcpt_per_transaction, self._txn_rcpts))
            self._txn_rcpts = self.rcpt_per_transaction
            pending.extendleft(reversed(again))

    def _answer(self, address: str, r: Reply) -> SmtpFacts:
        outcome = classify(r.code, r.enhanced, r.text, command="RCPT")
        self.rcpts += 1
        self._txn_rcpts += 1
        if outcome is SmtpOutcome.USER_UNKNOWN:  # the domain refused one: not a catch-all
            self._stage._remember_catch_all(address.rsplit("@", 1)[-1], False)
        return _rcpt_facts(self._conn, r, outcome, None)


def _answered_prefix(results: list[SmtpFacts | None]) -> list[SmtpFacts]:
    done: list[SmtpFacts] = []
    for r in results:
        if r is None:
            break
        done.append(r)
    return done

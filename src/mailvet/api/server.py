"""How ``mailvet serve`` runs uvicorn: slow clients are bounded, connections are capped.

Why a protocol class and not a middleware: uvicorn (0.54, h11) hands a request to
the ASGI app only once its request line and headers are complete, and arms its
keep-alive timer only after a response. A connection that sends half a request
line or half its headers never reaches the app, so no middleware can see it, and
uvicorn holds it forever: a thousand of them exhaust the file limit. Its
``limit_concurrency`` does answer 503, but only when a request's headers are
complete (it is checked there), so it does not stop connections that never get
that far either.

So ``mailvet serve`` runs uvicorn with ``GuardedH11Protocol``, a small subclass of
uvicorn's h11 protocol (``Config(http=...)``), which adds three things:

- **header deadline**: armed when a connection opens and when the first bytes of
  the next request arrive on a kept-alive connection; when it fires before the
  request line and headers are complete the connection is closed (with a 408 if a
  partial request was received). h11's own state (``their_state`` is IDLE until a
  whole ``Request`` is parsed) says where the request is, so no parsing is repeated.
- **body deadline**: armed when the headers are complete and a body follows. The
  app's own reads of the body are timed by ``BodyLimitMiddleware`` (a clean 408
  through the app, metrics included); this deadline covers the body nobody reads
  (a route that answered without reading it, while the client keeps trickling
  bytes): the connection is closed once the response is out.
- **connection cap**: a connection beyond ``max_connections`` open ones is answered
  at once with a 503 (JSON envelope, ``Retry-After``) and closed, before any byte
  of its request is read, so it costs nothing but a short-lived socket.

uvicorn's ``limit_concurrency`` is still passed (one more than the cap): since our
cap keeps the connection count below it, what it then bounds is request *tasks*,
which can outlive their connection when a client hangs up mid-request.

Idle keep-alive connections are closed after ``keepalive_timeout`` by uvicorn
itself (``timeout_keep_alive``). The protocol is h11 whether or not httptools is
installed: one implementation to reason about (mailvet does not install httptools).
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import resource
from typing import Any, ClassVar, Literal

import h11
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from mailvet.api import wire
from mailvet.logs import logging_config
from mailvet.settings import Settings

__all__ = [
    "SERVER_BUSY",
    "GuardedH11Protocol",
    "ensure_fd_limit",
    "guarded_protocol",
    "run",
    "uvicorn_options",
]

log = logging.getLogger(__name__)

SERVER_BUSY = "Too many open connections; retry later."
_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_REFUSAL_LINGER = 2.0  # seconds a refused connection may take to read its 503
_REFUSAL_LOG_EVERY = 10.0
# file descriptors a connection may hold: its socket and a DNS/SMTP probe's, plus a reserve
_FDS_PER_CONNECTION = 2
_FD_RESERVE = 100


def _busy_response() -> bytes:
    response = wire.error_response(SERVER_BUSY, 503, {"retry-after": "1", "connection": "close"})
    head = [b"HTTP/1.1 503 Service Unavailable"]
    head += [name + b": " + value for name, value in response.raw_headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + response.body


_BUSY = _busy_response()


class _Refusal(asyncio.Protocol):
    """Answers 503 at once, then lets the client read it before the socket goes.

    Closing a socket with unread request bytes makes the kernel reset the connection,
    which can destroy the 503 before the client has read it; so the write side is
    shut, the request is read and dropped, and the socket closes when the client
    closes it or after a short linger, whichever comes first."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = self.loop.call_later(_REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request of a refused connection is dropped

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and a connection cap.

    The limits are class attributes because uvicorn builds the protocol itself;
    ``guarded_protocol()`` makes a subclass with them set."""

    max_connections: ClassVar[int] = 1000
    header_timeout: ClassVar[float] = 5.0
    body_timeout: ClassVar[float] = 15.0
    # refusals are logged at most once per _REFUSAL_LOG_EVERY seconds (no log flood)
    _refused: ClassVar[int] = 0
    _refusal_logged_at: ClassVar[float | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: Literal["headers", "body"] | None = None
        self._body_overdue = False

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        if len(self.connections) >= self.max_connections:
            self._log_refusal()
            refusal = _Refusal(self.loop)
            transport.set_protocol(refusal)
            refusal.connection_made(transport)
            return
        super().connection_made(transport)
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (
            self._body_overdue
            and self.conn.their_state is h11.SEND_BODY
            and not self.transport.is_closing()
        ):
            self.transport.close()

    def _log_refusal(self) -> None:
        cls = type(self)
        cls._refused += 1
        now = self.loop.time()
        last = cls._refusal_logged_at
        if last is None or now - last >= _REFUSAL_LOG_EVERY:
            log.warning(
                "max_connections (%d) reached: %d connection(s) answered 503",
                self.max_connections,
                cls._refused,
            )
            cls._refused = 0
            cls._refusal_logged_at = now

    # -- deadlines ---------------------------------------------------------------

    def _track(self) -> None:
        """Arm or drop the deadline for where the client's side of the request is."""
        if self.transport is None or self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # waiting for a request line and headers; an idle kept-alive connection
            # has uvicorn's keep-alive timer instead (cancelled when bytes arrive)
            if self.timeout_keep_alive_task is not None:
                self._disarm()
            elif self._phase != "headers":
                self._arm("headers", self.header_timeout)
        elif state is h11.SEND_BODY:
            if self._phase != "body":
                self._body_overdue = False
                self._arm("body", self.body_timeout)
        else:
            self._disarm()

    def _arm(self, phase: Literal["headers", "body"], seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = None

    def _expired(self) -> None:
        phase, self._phase, self._deadline = self._phase, None, None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if phase == "headers" and state is h11.IDLE:
            if self.conn.trailing_data[0]:  # part of a request came: say why we hang up
                self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()
        elif phase == "body" and state is h11.SEND_BODY:
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()
            else:
                # the app is still answering (its reads of the body time out in
                # BodyLimitMiddleware): hang up once the answer is out
                self._body_overdue = True


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """A ``GuardedH11Protocol`` subclass carrying these settings' limits."""
    attributes = {
        "max_connections": settings.max_connections,
        "header_timeout": settings.header_timeout,
        "body_timeout": settings.body_timeout,
    }
    return type("MailvetH11Protocol", (GuardedH11Protocol,), attributes)


def ensure_fd_limit(needed: int) -> int:
    """Raise the soft open-file limit towards ``needed`` (up to the hard limit), as Go
    programs do at start; warn when it stays below. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open-file limit (%d) is below what MAILVET_MAX_CONNECTIONS needs (%d): "
            "lower MAILVET_MAX_CONNECTIONS or raise the limit (ulimit -n)",
            soft,
            needed,
        )
    return soft


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` besides app, host, port."""
    return {
        "http": guarded_protocol(settings),
        "limit_concurrency": settings.max_connections + 1,
        "timeout_keep_alive": settings.keepalive_timeout,
        "log_config": None,  # run() applies logging_config(settings) itself, first
        "log_level": settings.log_level.lower(),
        # No access log: its request lines carry ?email=..., personal data we do not write.
        "access_log": False,
    }


def run(app: ASGIApp, settings: Settings, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (what ``mailvet serve`` does)."""
    import uvicorn

    logging.config.dictConfig(logging_config(settings))
    ensure_fd_limit(settings.max_connections * _FDS_PER_CONNECTION + _FD_RESERVE)
    uvicorn.run(app, host=host, port=port, **uvicorn_options(settings))

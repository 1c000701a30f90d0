"""Dashboard sign-in: a session cookie that names a key without holding its secret, and
CSRF tokens for every form.

The cookie ``mailvet_session`` (HttpOnly, SameSite=Strict, Secure over https) holds
``<key id>.<expiry>.<nonce>.<mac>``: the MAC is an HMAC-SHA256 under the key's stored
secret hash (server-side only: the secret itself is never stored, and the hash never
leaves the server), mixed with ``MAILVET_SESSION_SECRET`` when set (then a copy of the
database is not enough to forge a session), so every API process verifies it without a
shared session table, and revoking the key ends its sessions at once (each page reads
the key). The raw API key is read once, by the sign-in form, and never kept.

Every POST form carries the session's CSRF token (an HMAC of the session's nonce, so
it changes with each sign-in); a form without the right one is refused with 403. The
sign-in form itself has no session yet: it is protected by a double-submit token in a
short-lived ``mailvet_signin`` cookie.

Signing out deletes the cookie; a copy of the token taken before stays valid until its
expiry (``SESSION_SECONDS``) unless the key is revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from mailvet.api.deps import MAX_KEY_CHARS, Service, service
from mailvet.storage.base import ApiKey

__all__ = [
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "SIGNIN_COOKIE",
    "AdminDep",
    "AdminRequired",
    "CsrfFormDep",
    "CsrfRefused",
    "KeyDep",
    "ServiceDep",
    "Session",
    "SessionDep",
    "SignInRequired",
    "admin_session",
    "check_csrf",
    "check_signin_form",
    "clear_session",
    "csrf_form",
    "current_key",
    "current_session",
    "read_session",
    "revoked_session",
    "safe_next",
    "set_session",
    "set_signin_cookie",
    "signin_token",
    "submitted_key",
]

SESSION_COOKIE = "mailvet_session"
SIGNIN_COOKIE = "mailvet_signin"
SESSION_SECONDS = 12 * 3600
SIGNIN_SECONDS = 3600
CSRF_FIELD = "csrf"
_MAX_TOKEN_CHARS = 256


ServiceDep = Annotated[Service, Depends(service)]


class SignInRequired(Exception):
    """No valid session: the page redirects to /signin (``next`` brings the user back)."""

    def __init__(self, next_path: str = "/") -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(Exception):
    """A POST form without the session's CSRF token: answered with 403."""


class AdminRequired(Exception):
    """A page for admin keys only, asked for by another key: answered with 403."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in key and the CSRF token its forms carry."""

    key: ApiKey
    csrf: str
    expires: int


def _mac(key_hash: str, purpose: str, body: str, secret: str = "") -> str:
    # The server's MAILVET_SESSION_SECRET (when set) and the key's stored hash together:
    # a copy of the database alone does not sign a session.
    mac_key = f"{secret}|{key_hash}" if secret else key_hash
    message = f"mailvet-{purpose}|{body}".encode()
    return hmac.new(mac_key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _secret(svc: Service) -> str:
    value = svc.settings.session_secret
    return "" if value is None else value.get_secret_value()


def session_token(
    key_id: str, key_hash: str, *, now: float | None = None, secret: str = ""
) -> str:
    """A new session token for a key (whose stored secret hash is ``key_hash``), signed
    with the server's ``secret`` (MAILVET_SESSION_SECRET) too when there is one."""
    expires = int(time.time() if now is None else now) + SESSION_SECONDS
    body = f"{key_id}.{expires}.{secrets.token_urlsafe(16)}"
    return f"{body}.{_mac(key_hash, 'session', body, secret)}"


@dataclass(frozen=True, slots=True)
class _Signed:
    key: ApiKey
    key_hash: str
    nonce: str
    expires: int


async def _signed(request: Request, svc: Service) -> _Signed | None:
    """The key the request's session cookie names, its MAC and expiry checked (the key
    may be revoked); None when absent, forged, expired or of an unknown key."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > _MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 4:
        return None
    key_id, expires_text, nonce, mac = parts
    if not expires_text.isascii() or not expires_text.isdigit() or len(expires_text) > 12:
        return None
    expires = int(expires_text)
    if expires < time.time():
        return None
    store = svc.require_store()
    key_hash = await store.key_hash(key_id)
    if key_hash is None:
        return None
    body = f"{key_id}.{expires_text}.{nonce}"
    if not hmac.compare_digest(
        mac.encode("ascii", "replace"), _mac(key_hash, "session", body, _secret(svc)).encode()
    ):
        return None
    key = await store.get_key(key_id)
    if key is None:
        return None
    return _Signed(key=key, key_hash=key_hash, nonce=nonce, expires=expires)


async def read_session(request: Request, svc: Service) -> Session | None:
    """The live session the request's cookie carries, or None (absent, forged, expired,
    or its key unknown or revoked)."""
    signed = await _signed(request, svc)
    if signed is None or signed.key.revoked_at is not None:
        return None
    return Session(
        key=signed.key,
        csrf=_mac(signed.key_hash, "csrf", signed.nonce, _secret(svc)),
        expires=signed.expires,
    )


async def revoked_session(request: Request, svc: Service) -> bool:
    """Whether the request carries a genuine, unexpired session cookie of a key revoked
    since it signed in (a page can say so rather than show the bare sign-in form)."""
    signed = await _signed(request, svc)
    return signed is not None and signed.key.revoked_at is not None


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def set_session(response: Response, request: Request, svc: Service, key: ApiKey) -> None:
    """Sign ``key`` in: set the session cookie on ``response``."""
    key_hash = await svc.require_store().key_hash(key.id)
    if key_hash is None:  # pragma: no cover - the key was just authenticated
        raise RuntimeError("signed-in key has no stored hash")
    response.set_cookie(
        SESSION_COOKIE,
        session_token(key.id, key_hash, secret=_secret(svc)),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
    )


def signin_token(request: Request) -> str:
    """The sign-in form's double-submit token: the cookie's if it has one, else new."""
    token = request.cookies.get(SIGNIN_COOKIE)
    if not token or len(token) > _MAX_TOKEN_CHARS:
        token = secrets.token_urlsafe(24)
    return token


def set_signin_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=SIGNIN_SECONDS,
        path="/signin",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def _same(given: object, expected: str | None) -> bool:
    if not isinstance(given, str) or not expected or len(given) > _MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def check_signin_form(request: Request, form: FormData) -> None:
    """The sign-in form's token must equal its cookie's (CsrfRefused otherwise)."""
    if not _same(form.get(CSRF_FIELD), request.cookies.get(SIGNIN_COOKIE)):
        raise CsrfRefused


def submitted_key(form: FormData) -> str | None:
    """The API key typed into the sign-in form, trimmed; None when empty or absurd."""
    value = form.get("key")
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > MAX_KEY_CHARS:
        return None
    return value


def safe_next(value: object) -> str:
    """A path on this site to go to after signing in; "/" for anything else (no open
    redirects: ``//host``, ``/\\host`` and absolute URLs are refused)."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return "/"
    if value.startswith(("//", "/\\")) or any(c in value for c in "\r\n\t\\"):
        return "/"
    return value


async def current_session(request: Request, svc: ServiceDep) -> Session:
    """The dependency of every dashboard page: the signed-in session, or a redirect to
    /signin (``SignInRequired``)."""
    found = await read_session(request, svc)
    if found is None:
        path = request.url.path
        if request.method == "GET" and request.url.query:
            path = f"{path}?{request.url.query}"
        raise SignInRequired(path if request.method == "GET" else "/")
    return found


SessionDep = Annotated[Session, Depends(current_session)]


async def current_key(session: SessionDep) -> ApiKey:
    """The signed-in key (a redirect to /signin without one)."""
    return session.key


async def admin_session(session: SessionDep) -> Session:
    """The session of an admin key; ``AdminRequired`` (403) for any other key."""
    if not session.key.admin:
        raise AdminRequired
    return session


def check_csrf(form: FormData, session: Session) -> None:
    """``CsrfRefused`` (403) unless the form carries the session's CSRF token."""
    if not _same(form.get(CSRF_FIELD), session.csrf):
        raise CsrfRefused


async def csrf_form(request: Request, session: SessionDep) -> FormData:
    """The dependency of every POST form handler: the parsed form, once its CSRF token
    is the session's (``CsrfRefused``, 403, otherwise). A handler that parses its form
    itself (an upload with its own size limits) calls ``check_csrf`` instead."""
    form = await request.form()
    check_csrf(form, session)
    return form


AdminDep = Annotated[Session, Depends(admin_session)]
KeyDep = Annotated[ApiKey, Depends(current_key)]
CsrfFormDep = Annotated[FormData, Depends(csrf_form)]

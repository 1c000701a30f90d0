"""The dashboard's own pages: sign in / out, the overview, checking one address, keys.

Every page but /signin needs a session (``auth.current_session``: a redirect to /signin
without one); every POST form needs the session's CSRF token (``auth.csrf_form``).
The batch pages live in ``dashboard/batches.py`` with their own router.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailvet.api.deps import Service
from mailvet.api.wire import MAX_EMAIL_CHARS
from mailvet.dashboard import auth, explain
from mailvet.dashboard.auth import CsrfFormDep, ServiceDep, SessionDep
from mailvet.dashboard.templating import render

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

SIGNIN_ERRORS = {
    "missing": "Enter your API key.",
    "unknown": "This API key is not valid. Check it and try again.",
    "revoked": "This API key has been revoked. Ask your administrator for a new one.",
}


@router.get("/signin")
async def signin_page(request: Request, svc: ServiceDep) -> Response:
    session = await auth.read_session(request, svc)
    next_path = auth.safe_next(request.query_params.get("next"))
    if session is not None:
        return RedirectResponse(next_path, status_code=303)
    return _signin_form(request, next_path)


def _signin_form(
    request: Request, next_path: str, error: str | None = None, status_code: int = 200
) -> Response:
    token = auth.signin_token(request)
    context = {
        "next": next_path,
        "error": error,
        "signin_csrf": token,
        "signed_out": request.query_params.get("signed_out") == "1",
    }
    page = render(request, "signin.html", context, status_code=status_code)
    auth.set_signin_cookie(page, request, token)
    return page


@router.post("/signin")
async def signin(request: Request, svc: ServiceDep) -> Response:
    form = await request.form()
    auth.check_signin_form(request, form)
    next_path = auth.safe_next(form.get("next"))
    secret = auth.submitted_key(form)
    if secret is None:
        return _signin_form(request, next_path, SIGNIN_ERRORS["missing"], 400)
    store = svc.require_store()
    key = await store.authenticate(secret)
    if key is None:
        reason = "revoked" if await _revoked(svc, secret) else "unknown"
        return _signin_form(request, next_path, SIGNIN_ERRORS[reason], 401)
    response = RedirectResponse(next_path, status_code=303)
    await auth.set_session(response, request, svc, key)
    return response


async def _revoked(svc: Service, secret: str) -> bool:
    """Whether ``secret`` is a revoked key's (to say so rather than "not valid")."""
    from mailvet.storage.common import hash_secret, secret_prefix

    store = svc.require_store()
    prefix = secret_prefix(secret)
    for key in await store.list_keys():
        if key.revoked_at is not None and key.prefix == prefix:
            stored = await store.key_hash(key.id)
            if stored is not None and stored == hash_secret(secret):
                return True
    return False


@router.post("/signout")
async def signout(
    request: Request,
    form: CsrfFormDep,
) -> Response:
    response = RedirectResponse("/signin?signed_out=1", status_code=303)
    auth.clear_session(response, request)
    return response


@router.get("/")
async def overview(
    request: Request,
    session: SessionDep,
) -> Response:
    context: dict[str, Any] = {"key": session.key}
    return render(request, "overview.html", context, session=session)


# --- check one address ---


@router.get("/check")
async def check_page(
    request: Request,
    session: SessionDep,
) -> Response:
    return render(request, "check.html", {"email": ""}, session=session)


@router.post("/check")
async def check(
    request: Request,
    session: SessionDep,
    form: CsrfFormDep,
    svc: ServiceDep,
) -> Response:
    raw = form.get("email")
    email = raw.strip() if isinstance(raw, str) else ""
    context: dict[str, Any] = {"email": email}
    if not email or len(email) > MAX_EMAIL_CHARS or "\x00" in email:
        context["error"] = (
            "Enter an email address." if not email else "That is too long to be an address."
        )
        return render(request, "check.html", context, session=session, status_code=400)
    wait = svc.limiter.check(session.key.id)
    if wait > 0.0:
        context["error"] = (
            f"Too many checks for this key: wait {svc.limiter.retry_after(wait)} s and try again."
        )
        return render(request, "check.html", context, session=session, status_code=429)
    checked = await svc.require_engine().verify(email, deadline=svc.settings.deadline)
    data = checked.verdict.as_dict()
    svc.record_usage(session.key.id, data["result"])
    dns_lines, smtp_lines = explain.explain_transcript(checked.facts)
    context.update(
        {
            "data": data,
            "result_text": explain.RESULT_TEXT[checked.verdict.result],
            "reason_text": explain.explain_reason(data["reason"]),
            "evidence": explain.evidence(data, checked.facts),
            "dns_lines": dns_lines,
            "smtp_lines": smtp_lines,
            "offline": checked.facts.offline,
        }
    )
    return render(request, "check.html", context, session=session)

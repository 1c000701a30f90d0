"""The dashboard's own pages: sign in / out, the overview, checking one address, keys.

Every page but /signin needs a session (``auth.current_session``: a redirect to /signin
without one); every POST form needs the session's CSRF token (``auth.csrf_form``).
The batch pages live in ``dashboard/batches.py`` with their own router.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailvet.api.deps import Service
from mailvet.api.usage import today
from mailvet.api.wire import MAX_EMAIL_CHARS
from mailvet.dashboard import auth, charts, explain
from mailvet.dashboard.auth import AdminDep, CsrfFormDep, ServiceDep, Session, SessionDep
from mailvet.dashboard.charts import RESULT_ORDER
from mailvet.dashboard.templating import render
from mailvet.storage.base import ApiKey, Plan

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

SIGNIN_ERRORS = {
    "missing": "Enter your API key.",
    "unknown": "This API key is not valid. Check it and try again.",
    "revoked": "This API key has been revoked. Ask your administrator for a new one.",
    "too_many": "Too many sign-in attempts from your address. Wait a minute and try again.",
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
    client = request.client.host if request.client else ""
    wait = svc.signins.wait(client)  # failed attempts only are counted, below
    if wait:
        page = _signin_form(request, next_path, SIGNIN_ERRORS["too_many"], 429)
        page.headers["Retry-After"] = svc.signins.retry_after(wait)
        return page
    store = svc.require_store()
    key = await store.authenticate(secret)
    if key is None:
        svc.signins.check(client)
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
async def overview(request: Request, session: SessionDep, svc: ServiceDep) -> Response:
    context: dict[str, Any] = {"key": session.key}
    context.update(
        await _usage(svc, session.key.id, chart_id="usage-own", title="Your verdicts per day")
    )
    return render(request, "overview.html", context, session=session)


@router.get("/dashboard")
@router.get("/ui")
async def elsewhere() -> Response:
    """Where people look for a dashboard first: it is at /."""
    return RedirectResponse("/", status_code=308)


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
    svc.metrics.observe_verdict(checked.verdict, "dashboard")  # a probe like the API's
    svc.metrics.observe_facts(checked.facts)
    dns_lines, smtp_lines = explain.explain_transcript(checked.facts)
    context.update(
        {
            "data": data,
            "result_text": explain.RESULT_TEXT[checked.verdict.result],
            "reason_text": explain.explain_reason(data["reason"]),
            "server_said": explain.server_said(checked.facts),
            "evidence": explain.evidence(data, checked.facts),
            "dns_lines": dns_lines,
            "smtp_lines": smtp_lines,
            "offline": checked.facts.offline,
        }
    )
    return render(request, "check.html", context, session=session)


# --- usage charts ---

USAGE_DAYS = 30


async def _usage(svc: Service, key_id: str | None, *, chart_id: str, title: str) -> dict[str, Any]:
    """The template context of a usage chart: verdicts per day by result over the last
    ``USAGE_DAYS`` days (UTC), of one key or of all."""
    end = today()
    days = [end - timedelta(days=n) for n in range(USAGE_DAYS - 1, -1, -1)]
    rows = await svc.require_store().usage(since=days[0], key_id=key_id)
    values: dict[date, dict[str, int]] = {}
    for row in rows:
        per_day = values.setdefault(row.day, {})
        per_day[row.result] = per_day.get(row.result, 0) + row.count
    categories = list(RESULT_ORDER) + sorted({r.result for r in rows} - set(RESULT_ORDER))
    table = [
        {
            "day": day.isoformat(),
            "counts": [values.get(day, {}).get(c, 0) for c in categories],
            "total": sum(values.get(day, {}).values()),
        }
        for day in days
        if values.get(day)
    ]
    totals = {c: sum(v.get(c, 0) for v in values.values()) for c in categories}
    return {
        "usage_chart": charts.stacked_chart(
            days, values, title=title, chart_id=chart_id, categories=categories, legend=False
        ),
        "usage_legend": charts.html_legend(categories, totals, chart_id=chart_id),
        "usage_days": USAGE_DAYS,
        "usage_categories": categories,
        "usage_rows": table,
        "usage_total": sum(sum(v.values()) for v in values.values()),
        "usage_caption": title,
    }


# --- keys (admin keys only) ---

KEY_NAME_CHARS = 100


async def _keys_page(
    request: Request,
    svc: Service,
    session: Session,
    *,
    created: tuple[ApiKey, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    keys = await svc.require_store().list_keys()
    keys.sort(key=lambda k: (k.revoked_at is not None, k.created_at), reverse=False)
    revoked_id = request.query_params.get("revoked")
    revoked = next((k for k in keys if k.id == revoked_id), None) if revoked_id else None
    context: dict[str, Any] = {
        "keys": keys,
        "plans": [p.value for p in Plan],
        "created": created[0] if created else None,
        "created_secret": created[1] if created else None,
        "revoked": revoked,
        "error": error,
        "signed_in_id": session.key.id,
    }
    context.update(
        await _usage(svc, None, chart_id="usage-all", title="Verdicts per day, all keys")
    )
    return render(request, "keys.html", context, session=session, status_code=status_code)


@router.get("/keys")
async def keys_page(request: Request, session: AdminDep, svc: ServiceDep) -> Response:
    return await _keys_page(request, svc, session)


@router.post("/keys")
async def key_create(
    request: Request, session: AdminDep, form: CsrfFormDep, svc: ServiceDep
) -> Response:
    name = form.get("name")
    name = name.strip() if isinstance(name, str) else ""
    plan = form.get("plan")
    if not name or len(name) > KEY_NAME_CHARS or "\x00" in name:
        error = "Give the key a name (up to 100 characters), e.g. the app that will use it."
        return await _keys_page(request, svc, session, error=error, status_code=400)
    if plan not in {p.value for p in Plan}:
        return await _keys_page(request, svc, session, error="Choose a plan.", status_code=400)
    admin = form.get("admin") == "on"
    key, secret = await svc.require_store().create_key(name, Plan(str(plan)), admin=admin)
    log.info("dashboard: key %s created by key %s", key.id, session.key.id)
    return await _keys_page(request, svc, session, created=(key, secret))


@router.post("/keys/{key_id}/revoke")
async def key_revoke(
    request: Request, key_id: str, session: AdminDep, form: CsrfFormDep, svc: ServiceDep
) -> Response:
    if key_id == session.key.id:
        error = "You cannot revoke the key you are signed in with. Sign in with another admin key."
        return await _keys_page(request, svc, session, error=error, status_code=400)
    store = svc.require_store()
    key = await store.get_key(key_id)
    if key is None:
        return await _keys_page(request, svc, session, error="No such key.", status_code=404)
    if key.revoked_at is None:
        await store.revoke_key(key.id)
        svc.keys.clear()  # the API's key cache: the revoked key stops working now, here
        log.info("dashboard: key %s revoked by key %s", key.id, session.key.id)
    return RedirectResponse(f"/keys?revoked={quote(key.id)}", status_code=303)


@router.post("/keys/{key_id}/plan")
async def key_plan(
    request: Request, key_id: str, session: AdminDep, form: CsrfFormDep, svc: ServiceDep
) -> Response:
    plan = form.get("plan")
    if plan not in {p.value for p in Plan}:
        return await _key_page(request, svc, session, key_id, error="Choose a plan.", status=400)
    if not await svc.require_store().set_plan(key_id, Plan(str(plan))):
        error = "Only a live key's plan can change."
        return await _key_page(request, svc, session, key_id, error=error, status=400)
    svc.keys.clear()  # the API's key cache: the new plan applies now, here
    log.info("dashboard: key %s set to plan %s by key %s", key_id, plan, session.key.id)
    return RedirectResponse(f"/keys/{quote(key_id)}?plan=changed", status_code=303)


@router.get("/keys/{key_id}")
async def key_page(request: Request, key_id: str, session: AdminDep, svc: ServiceDep) -> Response:
    return await _key_page(request, svc, session, key_id)


async def _key_page(
    request: Request,
    svc: Service,
    session: Session,
    key_id: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    key = await svc.require_store().get_key(key_id)
    if key is None:
        return render(
            request,
            "error.html",
            {"title": "No such key", "message": "This key does not exist."},
            session=session,
            status_code=404,
        )
    context: dict[str, Any] = {
        "key": key,
        "plans": [p.value for p in Plan],
        "error": error,
        "plan_changed": request.query_params.get("plan") == "changed",
    }
    context.update(
        await _usage(svc, key.id, chart_id="usage-key", title=f"Verdicts per day, key {key.name}")
    )
    return render(request, "key.html", context, session=session, status_code=status)

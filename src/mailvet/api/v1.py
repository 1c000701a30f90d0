"""The Mails.so-compatible routes: ``/v1/validate`` and ``/v1/batch``.

Handlers read the query and body themselves (no FastAPI parameter validation) so
that every malformed request gets the contract's enveloped 400, never FastAPI's
422, and so the hot path of a cached validation stays a handful of dict look-ups.
The parameters are still described in OpenAPI, through ``openapi_extra``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mailvet.api import wire
from mailvet.api.cache import CachedResult, cache_key
from mailvet.api.deps import Service, authenticate, service
from mailvet.engine.facts import Facts
from mailvet.engine.scoring import decide
from mailvet.jobs.webhook import callback_allowed, system_resolver
from mailvet.storage.base import ApiKey, BatchRecord, Plan
from mailvet.storage.common import check_text
from mailvet.verdict import Result, new_id

__all__ = ["MAX_EMAIL_CHARS", "MAX_NAME_CHARS", "answer_within", "router"]

MAX_EMAIL_CHARS = wire.MAX_EMAIL_CHARS
MAX_NAME_CHARS = wire.MAX_NAME_CHARS
# The time budget of /v1/validate. CleverTap waits 5 s for the whole exchange, network
# and TLS included; 1 s of that is left to the network, so every answer leaves within
# ANSWER_BOUND of the request's arrival. The outer safety net fires by ANSWER_CAP at the
# latest, which keeps 0.5 s for a busy event loop and writing the answer; the default
# settings.deadline (3.0 s) plus SAFETY_MARGIN is under it.
ANSWER_BOUND = 4.0
ANSWER_CAP = 3.5
SAFETY_MARGIN = 0.3  # the outer safety net sits this far above settings.deadline
ENGINE_MARGIN = 0.15  # seconds between the engine's deadline and the safety net
# The probe's own safety net ends it this much before the request's: the request that
# started it gets its outcome, and a probe that is over is never joined.
PROBE_LEAD = 0.05
UNKNOWN_TTL = 60.0  # an unknown verdict is cached briefly: the next try may conclude
_TRUE = frozenset({"1", "true", "yes", "on"})
MAX_OFFSET = 10**9  # beyond any batch (max_batch_size is bounded well below)
LIST_LIMIT = 50  # GET /v1/batches page, by default
MAX_LIST_LIMIT = 200

router = APIRouter()

_SECURITY: list[dict[str, list[str]]] = [{"MailsApiKey": []}, {"BearerKey": []}]


def _err(status: int, description: str) -> dict[str, Any]:
    return {"model": wire.ErrorOut, "description": description}


_COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _err(401, "missing or unknown API key"),
    413: _err(413, "request body over the size limit"),
    429: _err(429, "rate limit exceeded; see Retry-After"),
}
_BATCH_ERRORS: dict[int | str, dict[str, Any]] = {
    **_COMMON_ERRORS,
    401: _err(401, "missing or unknown API key, or a free plan key"),
    404: _err(404, "no such batch for this key"),
    503: _err(503, "the database failed; retry after Retry-After seconds"),
}


def _query_param(
    name: str, description: str, schema: dict[str, Any], *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


_FLAGS = [
    _query_param(
        "flat", "1: also put result, reason and score at the top level", {"type": "string"}
    ),
    _query_param("details", "1: add `details` (SMTP transcript and timings)", {"type": "string"}),
]
_GET_PARAMS = [_query_param("email", "the address to verify", wire.EMAIL_SCHEMA, required=True)]


class BadRequest(Exception):
    """Malformed request: answered with 400 and ``message``."""

    def __init__(self, message: str = wire.BAD_FORMAT) -> None:
        super().__init__(message)
        self.message = message


# --- helpers ---


def answer_within(deadline: float) -> float:
    """Seconds within which ``/v1/validate`` answers, counted from the request's arrival
    and covering everything (key look-up, body, verification): ``deadline`` plus a small
    margin, capped at ``ANSWER_CAP`` (inside CleverTap's 5 s with 1 s for the network).
    A deadline of ``ANSWER_CAP`` or more is a deliberate choice past that limit and gets
    the plain margin."""
    if deadline >= ANSWER_CAP:
        return deadline + SAFETY_MARGIN
    return min(deadline + SAFETY_MARGIN, ANSWER_CAP)


def _limited(svc: Service, key: ApiKey) -> Response | None:
    wait = svc.limiter.check(key.id)
    if wait <= 0.0:
        return None
    return wire.error_response(
        wire.RATE_LIMITED, 429, {"retry-after": svc.limiter.retry_after(wait)}
    )


def _check_text(value: object, max_chars: int) -> str:
    """A string any store can hold (``storage.common.check_text``'s rule), bounded."""
    if not isinstance(value, str) or len(value) > max_chars:
        raise BadRequest
    try:
        return check_text(value, "text")
    except ValueError:
        raise BadRequest from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise BadRequest
        out[k] = v
    return out


def _parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN, bounded nesting."""
    try:
        text = body.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject)
    except (ValueError, RecursionError):
        raise BadRequest from None


def _reject(_: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _query_email(request: Request) -> str | None:
    email = request.query_params.get("email")
    if email is not None and "\ufffd" in email:
        # the query had broken UTF-8 (Starlette replaced it): tell the client, do not guess
        for part in request.scope["query_string"].split(b"&"):
            name, _, value = part.partition(b"=")
            if name == b"email":
                try:
                    unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest from None
    return email


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    return value is not None and value.strip().lower() in _TRUE


async def _verify(
    svc: Service, key: ApiKey, email: str, answer_by: float
) -> tuple[CachedResult, bool]:
    """The verdict for ``email`` by ``answer_by`` (event-loop time), and whether this
    request ran the probe itself. Otherwise it comes from the result cache or from the
    probe an identical request is running (single flight: N concurrent requests for one
    address make one probe)."""
    engine = svc.require_engine()
    offline = engine.check_offline(email)
    ckey = cache_key(email, offline)
    hit = svc.results.get(ckey)
    if hit is not None:
        return _fresh(hit), False
    task, own = svc.probes.join(ckey, lambda: _probe(svc, email, offline, ckey, key.id, answer_by))
    try:
        async with asyncio.timeout_at(answer_by):
            # shielded: this client going away does not cancel the probe others wait for
            entry = await asyncio.shield(task)
    except TimeoutError:
        # The safety net, for an engine that overruns its deadline, or a probe joined
        # from a request that arrived earlier and had a longer budget.
        facts = _cut_short(offline)
        return CachedResult(decide(facts).as_dict(), facts, key.id), True
    return (entry, True) if own else (_fresh(entry), False)


async def _probe(
    svc: Service, email: str, offline: Facts, ckey: str, owner: str, answer_by: float
) -> CachedResult:
    """Verify ``email`` within the budget of the request that started the probe, and
    cache the outcome unless it is an ``unknown`` our own time budget caused (the
    engine's deadline, shortened by a slow key look-up, or the safety net): the next
    request, with a whole budget, may conclude."""
    settings, engine = svc.settings, svc.require_engine()
    try:
        # the engine's own deadline ends first, with what it learned; the outer one is
        # the safety net for an engine that overruns
        left = answer_by - asyncio.get_running_loop().time() - ENGINE_MARGIN
        async with asyncio.timeout_at(answer_by - PROBE_LEAD):
            checked = await engine.verify(email, deadline=min(settings.deadline, left))
        verdict, facts = checked.verdict, checked.facts
    except TimeoutError:
        facts = _cut_short(offline)
        verdict = decide(facts)  # the same verdict the engine gives at its own deadline
    svc.metrics.observe_facts(facts)
    entry = CachedResult(verdict.as_dict(), facts, owner)
    budget_cut = verdict.result is Result.UNKNOWN and facts.deadline_hit
    if not facts.offline and not budget_cut:
        ttl = settings.result_cache_ttl
        if verdict.result is Result.UNKNOWN:
            ttl = min(ttl, UNKNOWN_TTL)
        svc.results.set(ckey, entry, ttl)
    return entry


def _cut_short(offline: Facts) -> Facts:
    """The facts of a validation the safety net ended: the offline ones, deadline hit."""
    return dataclasses.replace(offline, offline=False, deadline_hit=True)


def _fresh(entry: CachedResult) -> CachedResult:
    """A served-again result: every answer carries its own ``id``."""
    data = dict(entry.data)
    data["id"] = new_id()
    return CachedResult(data, entry.facts, entry.owner)


def _evidence_for(key: ApiKey, entry: CachedResult) -> Facts:
    """The facts ``details=1`` may show ``key``: all of them to the key whose request
    ran the probe; to any other key the verdict's facts without the evidence (no
    transcript, no SMTP reply, so no DNS/SMTP timings)."""
    if entry.owner == key.id:
        return entry.facts
    return dataclasses.replace(entry.facts, smtp=None, transcript=[])


# --- single validation ---


@router.get(
    "/v1/validate",
    response_model=None,
    responses={
        200: {"model": wire.ValidateOut, "description": "the verdict"},
        400: _err(400, "no email given, or malformed"),
        **_COMMON_ERRORS,
        503: _err(503, "the key look-up or the body took the whole time budget"),
    },
    openapi_extra={"parameters": [*_GET_PARAMS, *_FLAGS], "security": _SECURITY},
    summary="Verify one address",
    tags=["validate"],
)
async def validate_get(request: Request) -> Response:
    return await _validate(request)


@router.post(
    "/v1/validate",
    response_model=None,
    responses={
        200: {"model": wire.ValidateOut, "description": "the verdict"},
        400: _err(400, "no email given, or malformed"),
        **_COMMON_ERRORS,
        503: _err(503, "the key look-up or the body took the whole time budget"),
    },
    openapi_extra={
        "parameters": _FLAGS,
        "security": _SECURITY,
        "requestBody": wire.validate_body(),
    },
    summary="Verify one address given in a JSON body",
    description="Also tolerated (Mails.so clients do it): the address in an `email` query "
    "parameter, as for GET, in which case the body is not read.",
    tags=["validate"],
)
async def validate_post(request: Request) -> Response:
    return await _validate(request)


async def _validate(request: Request) -> Response:
    started = time.perf_counter()
    svc = service(request)
    answer_by = asyncio.get_running_loop().time() + answer_within(svc.settings.deadline)
    try:
        async with asyncio.timeout_at(answer_by):
            key, email = await _validate_request(request, svc)
    except TimeoutError:  # the key look-up (or the client's body) took the whole budget
        return wire.error_response(wire.TOO_SLOW, 503, {"retry-after": "1"})
    except BadRequest as exc:
        return wire.error_response(exc.message, 400)
    except _Refused as exc:
        return exc.response

    entry, own = await _verify(svc, key, email, answer_by)
    data = entry.data
    svc.metrics.observe_verdict(data, "api" if own else "cache")
    svc.record_usage(key.id, data["result"])  # the key's usage (dashboard chart)
    out: dict[str, Any] = {"data": data, "error": None}
    query = request.query_params
    if "flat" in query and _flag(request, "flat"):
        out["result"] = data["result"]
        out["reason"] = data["reason"]
        out["score"] = data["score"]
    if "details" in query and _flag(request, "details"):
        total_ms = (time.perf_counter() - started) * 1000.0
        facts = _evidence_for(key, entry)
        out["details"] = wire.details_object(facts, cached=not own, total_ms=total_ms)
    return wire.json_response(out)


class _Refused(Exception):
    """The request is answered with ``response`` (401, 429) before any verification."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def _validate_request(request: Request, svc: Service) -> tuple[ApiKey, str]:
    """Authenticate, rate-limit and read the address of a validation request."""
    key = await authenticate(request, svc)
    if key is None:
        raise _Refused(wire.error_response(wire.UNAUTHORIZED, 401))
    limited = _limited(svc, key)
    if limited is not None:
        raise _Refused(limited)
    email = _query_email(request)
    if email is None and request.method == "POST":
        body = await request.body()
        if body.strip():
            parsed = _parse_json(body)
            if isinstance(parsed, dict):
                email = parsed.get("email")
                if email is None:
                    raise BadRequest
            else:
                raise BadRequest
    if email is None:
        raise BadRequest
    return key, _check_text(email, MAX_EMAIL_CHARS)


# --- batches ---


async def _batch_key(request: Request, svc: Service) -> ApiKey | Response:
    key = await authenticate(request, svc)
    if key is None:
        return wire.error_response(wire.UNAUTHORIZED_BATCH, 401)
    if key.plan is not Plan.PAID:
        return wire.error_response(wire.PAID_ONLY, 401)
    limited = _limited(svc, key)
    if limited is not None:
        return limited
    return key


@dataclasses.dataclass(frozen=True, slots=True)
class _BatchBody:
    emails: list[str]
    name: str | None
    callback_url: str | None


def _batch_request(body: bytes, max_size: int) -> _BatchBody:
    parsed = _parse_json(body)
    if not isinstance(parsed, dict):
        raise BadRequest
    emails = parsed.get("emails")
    if not isinstance(emails, list) or not emails:
        raise BadRequest
    if len(emails) > max_size:
        raise BadRequest(wire.BATCH_TOO_LARGE.format(limit=max_size))
    checked = [_check_text(e, MAX_EMAIL_CHARS) for e in emails]
    name = parsed.get("name")
    if name is not None:
        name = _check_text(name, MAX_NAME_CHARS)
    callback = parsed.get("callback_url")
    if callback is not None:
        callback = _check_text(callback, wire.MAX_URL_CHARS)
    return _BatchBody(checked, name, callback)


def _valid_id(batch_id: str) -> bool:
    try:
        return str(uuid.UUID(batch_id)) == batch_id.lower()
    except ValueError:
        return False


def _int_param(
    request: Request, name: str, default: int, low: int, high: int, *, clamp: bool = False
) -> int:
    """A whole-number query parameter within [low, high] (with ``clamp``, one above
    ``high`` counts as ``high``); anything else is a 400."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 64:
        raise BadRequest
    value = int(text)
    if clamp:
        value = min(value, high)
    if not low <= value <= high:
        raise BadRequest
    return value


def _page_url(request: Request, **params: int) -> str:
    return str(request.url.include_query_params(**params))


_PAGE_PARAMS = [
    _query_param(
        "offset",
        "mailvet extension: the first position of the page (0-based); asking for offset or "
        "limit always answers a page",
        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
    ),
    _query_param(
        "limit",
        "mailvet extension: positions on the page, at most MAILVET_BATCH_PAGE_SIZE (its default)",
        {"type": "integer", "minimum": 1},
    ),
]


@router.post(
    "/v1/batch",
    response_model=None,
    responses={
        200: {"model": wire.BatchOut, "description": "the batch, queued"},
        400: _err(
            400,
            "malformed body, empty list, over the batch size limit, or a refused callback_url",
        ),
        **_BATCH_ERRORS,
    },
    openapi_extra={
        "security": _SECURITY,
        "requestBody": wire.batch_body(),
    },
    summary="Queue a list of addresses for verification",
    tags=["batch"],
)
async def batch_create(request: Request) -> Response:
    svc = service(request)
    key = await _batch_key(request, svc)
    if isinstance(key, Response):
        return key
    try:
        body = _batch_request(await request.body(), max(1, svc.settings.max_batch_size))
    except BadRequest as exc:
        return wire.error_response(exc.message, 400)
    if body.callback_url is not None:
        allowed = await callback_allowed(
            body.callback_url,
            allow_private=svc.settings.allow_private_webhooks,
            timeout=svc.settings.webhook_timeout,
            resolver=svc.resolver or system_resolver,
        )
        if not allowed:
            return wire.error_response(wire.CALLBACK_REFUSED, 400)
    record = await svc.submit_batch(key, body.name, body.emails, body.callback_url)
    return wire.json_response(wire.batch_object(record, key))


async def _owned(svc: Service, key: ApiKey, batch_id: str) -> BatchRecord | None:
    if not _valid_id(batch_id):
        return None
    return await svc.require_store().get_batch(key.id, batch_id)


@router.get(
    "/v1/batch/{batch_id}",
    response_model=None,
    responses={
        200: {"model": wire.BatchWithEmailsOut, "description": "the batch and its verdicts"},
        400: _err(400, "offset or limit not a whole number in range"),
        **_BATCH_ERRORS,
    },
    openapi_extra={"security": _SECURITY, "parameters": _PAGE_PARAMS},
    summary="A batch, its progress and the verdicts known so far (paged past a size)",
    tags=["batch"],
)
async def batch_get(request: Request, batch_id: str) -> Response:
    svc = service(request)
    key = await _batch_key(request, svc)
    if isinstance(key, Response):
        return key
    page_size = svc.settings.batch_page_size
    try:
        offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
        limit = _int_param(request, "limit", page_size, 1, page_size, clamp=True)
    except BadRequest as exc:
        return wire.error_response(exc.message, 400)
    record = await _owned(svc, key, batch_id)
    if record is None:
        return wire.error_response(wire.NOT_FOUND, 404)
    store = svc.require_store()
    head = wire.batch_object(record, key, counts=await store.counts(record.id))
    query = request.query_params
    paged = "offset" in query or "limit" in query or record.size > page_size
    if paged:
        head["offset"] = offset
        head["limit"] = limit
        end = offset + limit
        head["next"] = _page_url(request, offset=end, limit=limit) if end < record.size else None
        items = store.iter_items(record.id, offset=offset, limit=limit)
    else:
        items = store.iter_items(record.id)
    return StreamingResponse(wire.batch_stream(head, items), media_type="application/json")


_RESULTS = tuple(result.value for result in Result)


@router.get(
    "/v1/batch/{batch_id}/download",
    response_model=None,
    responses={
        200: {
            "description": "every submitted address with its verdict (empty until done); "
            "gzip-compressed when the request's Accept-Encoding allows it",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        },
        400: _err(400, "unknown format or result"),
        **_BATCH_ERRORS,
    },
    openapi_extra={
        "security": _SECURITY,
        "parameters": [
            _query_param(
                "format", "csv (default) or jsonl", {"type": "string", "enum": ["csv", "jsonl"]}
            ),
            _query_param(
                "result",
                "only the entries with this result (so only done ones)",
                {"type": "string", "enum": list(_RESULTS)},
            ),
        ],
    },
    summary="Download a batch as CSV or JSON lines (mailvet extension)",
    tags=["batch"],
)
async def batch_download(request: Request, batch_id: str) -> Response:
    svc = service(request)
    key = await _batch_key(request, svc)
    if isinstance(key, Response):
        return key
    fmt = (request.query_params.get("format") or "csv").strip().lower()
    if fmt not in ("csv", "jsonl"):
        return wire.error_response(wire.BAD_FORMAT, 400)
    result = request.query_params.get("result")
    if result is not None:
        result = result.strip().lower()
        if result not in _RESULTS:
            return wire.error_response(wire.BAD_FORMAT, 400)
    record = await _owned(svc, key, batch_id)
    if record is None:
        return wire.error_response(wire.NOT_FOUND, 404)
    items = svc.require_store().iter_items(record.id, result=result)
    filename = f"mailvet-{record.id}.{fmt}"
    headers = {
        "content-disposition": f'attachment; filename="{filename}"',
        "vary": "accept-encoding",
    }
    body = wire.csv_stream(items) if fmt == "csv" else wire.jsonl_stream(items)
    if wire.accepts_gzip(request.headers.get("accept-encoding")):
        body = wire.gzip_stream(body)
        headers["content-encoding"] = "gzip"
    media_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(body, media_type=media_type, headers=headers)


@router.get(
    "/v1/batches",
    response_model=None,
    responses={
        200: {"model": wire.BatchListOut, "description": "the key's batches, newest first"},
        400: _err(400, "offset or limit not a whole number in range"),
        **_BATCH_ERRORS,
    },
    openapi_extra={
        "security": _SECURITY,
        "parameters": [
            _query_param(
                "offset",
                "batches to skip",
                {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
            ),
            _query_param(
                "limit",
                f"batches on the page (default {LIST_LIMIT}, at most {MAX_LIST_LIMIT}: a "
                "larger limit gives that many)",
                {"type": "integer", "minimum": 1},
            ),
        ],
    },
    summary="The key's batches, newest first (mailvet extension)",
    tags=["batch"],
)
async def batch_list(request: Request) -> Response:
    svc = service(request)
    key = await _batch_key(request, svc)
    if isinstance(key, Response):
        return key
    try:
        offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
        limit = _int_param(request, "limit", LIST_LIMIT, 1, MAX_LIST_LIMIT, clamp=True)
    except BadRequest as exc:
        return wire.error_response(exc.message, 400)
    # one more than asked: whether a next page exists without counting them all
    records = await svc.require_store().list_batches(key.id, offset=offset, limit=limit + 1)
    more = len(records) > limit
    out = {
        "data": [wire.batch_summary(record, key) for record in records[:limit]],
        "error": None,
        "offset": offset,
        "limit": limit,
        "next": _page_url(request, offset=offset + limit, limit=limit) if more else None,
    }
    return wire.json_response(out)


@router.delete(
    "/v1/batch/{batch_id}",
    response_model=None,
    responses={
        200: {"model": wire.BatchOut, "description": "the batch, deleted"},
        **_BATCH_ERRORS,
    },
    openapi_extra={"security": _SECURITY},
    summary="Delete a batch's addresses and verdicts (mailvet extension)",
    tags=["batch"],
)
async def batch_delete(request: Request, batch_id: str) -> Response:
    svc = service(request)
    key = await _batch_key(request, svc)
    if isinstance(key, Response):
        return key
    store = svc.require_store()
    record = await _owned(svc, key, batch_id)
    if record is None:
        return wire.error_response(wire.NOT_FOUND, 404)
    if record.deleted_at is None:  # deleting again answers the same object
        await store.delete_batch(key.id, batch_id)
        await svc.batch_changed(batch_id)  # drop its queued work now, not at the next result
        record = await store.get_batch(key.id, batch_id)
        if record is None:  # pragma: no cover - a deleted batch is still found
            return wire.error_response(wire.NOT_FOUND, 404)
    return wire.json_response(wire.batch_object(record, key, counts=await store.counts(record.id)))

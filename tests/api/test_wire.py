"""The wire shapes: timestamps, verdict order, batch object, downloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson

from mailvet.api import wire
from mailvet.storage.base import ApiKey, BatchItem, BatchRecord, Plan
from mailvet.verdict import Reason, Result, Verdict


def test_rfc3339() -> None:
    moment = datetime(2026, 1, 31, 12, 0, 5, 123456, tzinfo=UTC)
    assert wire.rfc3339(moment) == "2026-01-31T12:00:05.123Z"
    other_zone = moment.astimezone(timezone(timedelta(hours=2)))
    assert wire.rfc3339(other_zone) == "2026-01-31T12:00:05.123Z"
    assert wire.rfc3339(moment.replace(tzinfo=None)) == "2026-01-31T12:00:05.123Z"
    assert wire.rfc3339(None) is None


def test_order_verdict_restores_field_order() -> None:
    verdict = Verdict.make(email="a@b.test", score=1, result=Result.UNKNOWN, reason=Reason.TIMEOUT)
    shuffled = dict(reversed(list(verdict.as_dict().items())))
    assert list(wire.order_verdict(shuffled)) == list(Verdict._fields)


def _record(done: int = 0) -> tuple[BatchRecord, ApiKey]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    key = ApiKey(id="k1", name="acme", plan=Plan.PAID, prefix="mv_x", created_at=now)
    record = BatchRecord(
        id="b1", user_id="k1", name=None, size=2, created_at=now, updated_at=now, done=done
    )
    return record, key


def test_batch_object_without_and_with_items() -> None:
    record, key = _record()
    out = wire.batch_object(record, key)
    assert out["user"] == "acme"
    assert out["counts"] == {"deliverable": 0, "undeliverable": 0, "risky": 0, "unknown": 0}
    assert "emails" not in out
    verdict = Verdict.make(
        email="a@b.test", score=100, result=Result.DELIVERABLE, reason=Reason.ACCEPTED_EMAIL
    )
    items = [
        BatchItem(0, "a@b.test", verdict.as_dict()),
        BatchItem(1, "c@d.test", None),
    ]
    out = wire.batch_object(record, key, items)
    assert out["done"] == 1
    assert out["counts"]["deliverable"] == 1
    assert [e["email"] for e in out["emails"]] == ["a@b.test"]


def test_downloads() -> None:
    verdict = Verdict.make(
        email="a@b.test",
        score=100,
        isv_format=True,
        result=Result.DELIVERABLE,
        reason=Reason.ACCEPTED_EMAIL,
    )
    items = [
        BatchItem(0, "a@b.test", verdict.as_dict()),
        BatchItem(1, 'q"x,y', None),
    ]
    csv_text = "".join(wire.csv_rows(items))
    lines = csv_text.split("\r\n")
    assert lines[0].split(",")[:3] == ["position", "input", "id"]
    assert ",true," in lines[1]
    assert lines[2].startswith('1,"q""x,y",')
    rows = [orjson.loads(x) for x in b"".join(wire.jsonl_lines(items)).splitlines()]
    assert rows[0]["data"]["result"] == "deliverable"
    assert rows[1] == {"position": 1, "input": 'q"x,y', "data": None}


def test_error_response() -> None:
    r = wire.error_response(wire.UNAUTHORIZED, 401)
    assert r.status_code == 401
    assert orjson.loads(r.body) == {"data": None, "error": "Unauthorized"}


def test_wire_verdict_model_mirrors_verdict() -> None:
    assert tuple(wire.VerdictOut.model_fields) == Verdict._fields
    verdict = Verdict.make(
        email="a@b.test", score=100, result=Result.DELIVERABLE, reason=Reason.ACCEPTED_EMAIL
    )
    assert wire.VerdictOut.model_validate(verdict.as_dict()).model_dump(mode="json") == (
        verdict.as_dict()
    )

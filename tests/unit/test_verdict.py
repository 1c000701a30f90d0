from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from mailvet.verdict import Reason, Result, Verdict

WIRE_FIELDS = [
    "id", "email", "username", "domain", "did_you_mean", "mx_record", "provider", "score",
    "isv_format", "isv_domain", "isv_mx", "isv_noblock", "isv_nocatchall", "isv_nogeneric",
    "is_disposable", "is_free", "result", "reason",
]


def test_field_set_is_the_wire_contract() -> None:
    assert list(Verdict.model_fields) == WIRE_FIELDS


def test_serialises_vocabulary_as_plain_strings() -> None:
    v = Verdict(email="a@b.test", score=0, result=Result.UNKNOWN, reason=Reason.TIMEOUT)
    data = v.model_dump(mode="json")
    assert data["result"] == "unknown" and data["reason"] == "timeout"
    uuid.UUID(data["id"])
    assert data["isv_mx"] is None


def test_score_is_bounded() -> None:
    with pytest.raises(ValidationError):
        Verdict(email="a@b.test", score=101, result=Result.UNKNOWN, reason=Reason.TIMEOUT)

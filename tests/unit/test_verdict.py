from __future__ import annotations

import os
import uuid

import orjson
import pytest

from mailvet import verdict as verdict_module
from mailvet.verdict import Reason, Result, Verdict, new_id

WIRE_FIELDS = [
    "id",
    "email",
    "username",
    "domain",
    "did_you_mean",
    "mx_record",
    "provider",
    "score",
    "isv_format",
    "isv_domain",
    "isv_mx",
    "isv_noblock",
    "isv_nocatchall",
    "isv_nogeneric",
    "is_disposable",
    "is_free",
    "result",
    "reason",
]


def _make(**fields: object) -> Verdict:
    values: dict[str, object] = {
        "email": "a@b.test",
        "score": 0,
        "result": Result.UNKNOWN,
        "reason": Reason.TIMEOUT,
    }
    values.update(fields)
    return Verdict.make(**values)


def test_field_set_is_the_wire_contract() -> None:
    assert list(Verdict._fields) == WIRE_FIELDS


def test_serialises_vocabulary_as_plain_strings() -> None:
    v = _make()
    data = v.as_dict()
    assert list(data) == WIRE_FIELDS
    assert data["result"] == "unknown" and data["reason"] == "timeout"
    assert type(data["result"]) is str and type(data["reason"]) is str
    uuid.UUID(data["id"])
    assert data["isv_mx"] is None
    assert orjson.loads(orjson.dumps(data)) == data


def test_make_defaults_and_coerces_vocabulary() -> None:
    v = _make(result="risky", reason="catch_all", isv_mx=True, id="fixed")
    assert v.result is Result.RISKY and v.reason is Reason.CATCH_ALL
    assert v.id == "fixed" and v.isv_mx is True and v.username is None
    assert _make().id != _make().id


@pytest.mark.parametrize(
    "fields",
    [
        {"score": 101},
        {"score": -1},
        {"score": 50.0},
        {"score": True},
        {"result": "fine"},
        {"reason": "because"},
        {"colour": "blue"},
        {"email": None},
        {"username": 3},
        {"isv_mx": "yes"},
    ],
)
def test_make_rejects_bad_values(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _make(**fields)


def test_make_requires_the_required_fields() -> None:
    with pytest.raises(ValueError, match="missing"):
        Verdict.make(email="a@b.test", score=0, result=Result.UNKNOWN)


def test_verdict_is_immutable() -> None:
    v = _make()
    with pytest.raises(AttributeError):
        v.score = 5  # type: ignore[misc]
    assert v._replace(score=5).score == 5 and v.score == 0


def test_new_id_is_a_version_4_uuid_and_unique() -> None:
    ids = [new_id() for _ in range(2_000)]  # several pool refills
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_new_id_pool_is_not_shared_with_a_forked_child() -> None:
    new_id()  # the parent's pool is not empty now
    assert verdict_module._POOL
    parent_next = verdict_module._POOL[-1]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, new_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_id and child_id != parent_next
    assert new_id() == parent_next

"""engine/protocol.py: the real engine and the shipped fake both implement ``Engine``.

mypy checks the assignments below (``make typecheck`` covers tests/); the signature
test catches a drifting implementation at test time too.
"""

from __future__ import annotations

import inspect

import pytest

from mailvet.engine import Checked, Engine, pipeline
from mailvet.settings import Settings
from mailvet.testing.engine import FakeEngine

MEMBERS = ("check_offline", "verdict_offline", "verify", "close")


def _implementations() -> list[Engine]:
    return [pipeline.Engine(Settings()), FakeEngine()]


def test_the_protocol_lists_what_callers_use() -> None:
    members = {
        name
        for name, value in vars(Engine).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }
    assert members == set(MEMBERS)


@pytest.mark.parametrize("engine", _implementations(), ids=lambda e: type(e).__module__)
@pytest.mark.parametrize("member", MEMBERS)
def test_implementations_accept_every_call_the_protocol_allows(engine: Engine, member: str) -> None:
    expected = inspect.signature(getattr(Engine, member))
    actual = inspect.signature(getattr(type(engine), member))
    for name, param in expected.parameters.items():
        assert name in actual.parameters, name
        assert actual.parameters[name].kind == param.kind, name
        assert actual.parameters[name].default == param.default, name
    extra = [p for n, p in actual.parameters.items() if n not in expected.parameters]
    assert all(p.default is not p.empty for p in extra)  # only optional additions
    assert actual.return_annotation == expected.return_annotation
    assert inspect.iscoroutinefunction(getattr(engine, member)) == (
        inspect.iscoroutinefunction(getattr(Engine, member))
    )


@pytest.mark.parametrize("engine", _implementations(), ids=lambda e: type(e).__module__)
async def test_verify_answers_with_checked(engine: Engine) -> None:
    checked = await engine.verify("not an address", offline=True)
    assert isinstance(checked, Checked)
    assert checked.verdict.result == "undeliverable"
    assert checked.facts is not None and not checked.facts.syntax.ok
    assert engine.verdict_offline("not an address").reason == "invalid_format"
    await engine.close()


def test_the_pipeline_module_still_exports_checked() -> None:
    assert pipeline.Checked is Checked

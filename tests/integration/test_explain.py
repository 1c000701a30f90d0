"""Every example of the simulated internet (one per verdict the engine gives), checked by
the real engine, explained in plain words: the reason has its sentence and every line
the servers sent gets a specific meaning, never the generic fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mailvet.dashboard.explain import REASON_TEXT, explain_reason, explain_transcript
from mailvet.engine.pipeline import Engine
from mailvet.testing.internet import SimInternet
from mailvet.testing.world import EXAMPLES, sim_world
from mailvet.verdict import Reason

GENERIC = {"The server answered.", "A DNS answer.", "A remark mailvet made during the check."}


@pytest.fixture
async def world() -> AsyncIterator[tuple[SimInternet, Engine]]:
    net = sim_world(ordinary=5)
    async with net:
        engine = Engine(net.settings(deadline=2.0))
        try:
            yield net, engine
        finally:
            await engine.close()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.email)
async def test_each_example_is_explained_line_by_line(
    world: tuple[SimInternet, Engine], example: object
) -> None:
    from mailvet.testing.world import Example

    assert isinstance(example, Example)
    _, engine = world
    checked = await engine.verify(example.email)
    assert checked.verdict.reason.value == example.reason
    assert explain_reason(example.reason) == REASON_TEXT[Reason(example.reason)]
    dns, smtp = explain_transcript(checked.facts)
    for line in dns + smtp:
        assert line.meaning not in GENERIC, (example.email, line.raw)
    server = [line for line in smtp if line.who == "server"]
    if example.reason == "rejected_email":
        assert any("does not exist" in x.meaning or "disabled" in x.meaning for x in server)
    if example.reason == "catch_all":
        assert any("any address" in x.meaning for x in server)
    if example.reason == "mailbox_full":
        assert any("is full" in x.meaning for x in server)
    if example.email == "alice@blocked.test":
        assert any("refused us, not the mailbox" in x.meaning for x in server)
    if example.reason == "invalid_smtp":
        assert any("not an SMTP reply" in x.meaning for x in server)
    if example.reason == "unverifiable":
        assert any("says yes to every address" in x.meaning for x in server)
    if example.email == "alice@nullmx.test":
        assert any("null MX" in x.meaning for x in dns)


def test_the_examples_cover_most_of_the_vocabulary() -> None:
    shown = {e.reason for e in EXAMPLES}
    # the rest need settings (deny list, block lists, private MX, offline, batches)
    assert {r.value for r in Reason} - shown == {
        "denied",
        "blocked_domain",
        "private_mx",
        "not_checked",
        "greylisted",
    }

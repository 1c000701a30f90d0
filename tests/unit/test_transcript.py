from __future__ import annotations

from mailvet.engine.transcript import Transcript


def test_entries_are_timed_and_in_order() -> None:
    t = Transcript()
    t.add("send", "EHLO x", host="mx.test")
    t.add("recv", "250 ok", host="mx.test")
    assert [e.kind for e in t.entries] == ["send", "recv"]
    assert t.entries[0].at_ms <= t.entries[1].at_ms
    assert t.entries[0].host == "mx.test"


def test_hostile_volume_is_bounded() -> None:
    t = Transcript()
    for _ in range(10_000):
        t.add("recv", "x" * 1_000_000)
    assert len(t.entries) <= 200
    assert all(len(e.text) < 1_000 for e in t.entries)

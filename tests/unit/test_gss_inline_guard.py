"""The inline guard: when a service's calls leave the event loop, on a fake clock."""

from __future__ import annotations

from gssproxy_py.gss.inline_guard import InlineGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_blocked_call_demotes_at_once_for_the_cooldown() -> None:
    clock = Clock()
    g = InlineGuard(clock)
    assert g.allowed("svc")
    assert g.record("svc", 0.25) is True
    assert not g.allowed("svc") and g.allowed("other")
    clock.now += 29.9
    assert not g.allowed("svc")
    clock.now += 0.2
    assert g.allowed("svc")


def test_slow_calls_demote_only_when_three_in_a_row() -> None:
    g = InlineGuard(Clock())
    assert g.record("svc", 0.03) is False
    assert g.record("svc", 0.05) is False
    assert g.record("svc", 0.001) is False  # a fast call clears the count
    assert g.record("svc", 0.03) is False
    assert g.record("svc", 0.03) is False
    assert g.allowed("svc")
    assert g.record("svc", 0.03) is True
    assert not g.allowed("svc")


def test_services_are_counted_apart_and_clear_forgets() -> None:
    g = InlineGuard(Clock())
    g.record("a", 0.03)
    g.record("a", 0.03)
    assert g.record("b", 0.03) is False
    assert g.record("b", 0.03) is False
    assert g.record("a", 0.03) is True
    g.clear()
    assert g.allowed("a")
    assert g.record("a", 0.03) is False

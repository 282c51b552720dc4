"""Turns: light connections first, then heavy ones round-robin per uid and
connection within bounded budgets, root first."""

from __future__ import annotations

import pytest

from gssproxy_py.server.fairness import ROOT_UID, TurnScheduler


def still() -> float:
    """A clock that stands still: tests not about the time slice must not
    have a turn ended early by a slow (loaded) machine."""
    return 0.0


class Conns:
    """Fake connections: name -> calls waiting; records what each turn started."""

    def __init__(self, waiting: dict[str, int]) -> None:
        self.waiting = dict(waiting)
        self.log: list[tuple[str, int]] = []

    def start(self, name: str, limit: int) -> tuple[int, bool]:
        n = min(limit, self.waiting[name])
        self.waiting[name] -= n
        self.log.append((name, n))
        return n, self.waiting[name] > 0

    def add_all(self, sched: TurnScheduler[str], uids: dict[str, int]) -> None:
        for name, uid in uids.items():
            sched.add(name, uid, self.waiting[name])


def test_light_connections_go_first_whatever_the_flood() -> None:
    sched: TurnScheduler[str] = TurnScheduler(8, 4, 12, clock=still)
    conns = Conns({f"flood{i}": 100 for i in range(6)} | {"serial": 1, "kernel": 1})
    conns.add_all(sched, {f"flood{i}": ROOT_UID for i in range(6)})
    conns.add_all(sched, {"serial": ROOT_UID, "kernel": ROOT_UID})
    assert sched.turn(conns.start)
    assert conns.log[:2] == [("serial", 1), ("kernel", 1)]
    # The heavy ones: 12 calls in all this turn, 4 per connection.
    assert conns.log[2:] == [("flood0", 4), ("flood1", 4)]


def test_a_uid_with_many_connections_gets_no_more_per_turn_than_one_with_one() -> None:
    sched: TurnScheduler[str] = TurnScheduler(8, 4, 64, clock=still)
    conns = Conns({f"flood{i}": 100 for i in range(6)} | {"other": 50})
    conns.add_all(sched, {f"flood{i}": 1000 for i in range(6)} | {"other": 1001})
    sched.turn(conns.start)
    flood = sum(n for name, n in conns.log if name.startswith("flood"))
    other = sum(n for name, n in conns.log if name == "other")
    assert (flood, other) == (8, 4)
    conns.log.clear()
    sched.turn(conns.start)
    # The other uid goes first now; round-robin within the flooding uid.
    assert conns.log[0] == ("other", 4)
    assert [n for n, _ in conns.log[1:]] == ["flood2", "flood3"]


def test_root_goes_first_among_heavy_uids() -> None:
    sched: TurnScheduler[str] = TurnScheduler(4, 4, 8, clock=still)
    conns = Conns({"user": 10, "gssd": 10})
    conns.add_all(sched, {"user": 1000, "gssd": ROOT_UID})
    for _ in range(2):
        conns.log.clear()
        sched.turn(conns.start)
        assert conns.log == [("gssd", 4), ("user", 4)]


def test_finished_or_gone_connections_leave() -> None:
    sched: TurnScheduler[str] = TurnScheduler(8, 2, 16, clock=still)
    conns = Conns({"a": 3, "b": 3, "c": 9})
    conns.add_all(sched, {"a": 1, "b": 2, "c": 3})
    sched.turn(conns.start)
    sched.discard("c")
    assert not sched.turn(conns.start)
    assert conns.waiting["a"] == conns.waiting["b"] == 0
    assert sched.idle


def test_budgets_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TurnScheduler(0, 1)


class Clock:
    """A clock that each started call moves on by `per_call` seconds."""

    def __init__(self, per_call: float) -> None:
        self.now = 0.0
        self.per_call = per_call

    def __call__(self) -> float:
        return self.now


def test_the_heavy_part_of_a_turn_ends_with_its_time_slice() -> None:
    clock = Clock(per_call=0.00004)
    sched: TurnScheduler[str] = TurnScheduler(32, 2, 64, time_slice=0.0001, clock=clock)
    conns = Conns({f"flood{i}": 100 for i in range(8)} | {"serial": 1})

    def start(name: str, limit: int) -> tuple[int, bool]:
        started, more = conns.start(name, limit)
        clock.now += started * clock.per_call
        return started, more

    conns.add_all(sched, {f"flood{i}": 1000 for i in range(8)})
    sched.add("serial", 1000, 1)
    assert sched.turn(start)
    # The light connection whatever the time; then heavy connections until
    # 100 us have gone (2 calls of 40 us each, twice), not the 32-call budget.
    assert conns.log == [("serial", 1), ("flood0", 2), ("flood1", 2)]


def test_a_slow_call_still_lets_one_heavy_connection_start_per_turn() -> None:
    clock = Clock(per_call=1.0)
    sched: TurnScheduler[str] = TurnScheduler(8, 2, 16, time_slice=0.0001, clock=clock)
    conns = Conns({"a": 4, "b": 4})

    def start(name: str, limit: int) -> tuple[int, bool]:
        started, more = conns.start(name, limit)
        clock.now += started * clock.per_call
        return started, more

    conns.add_all(sched, {"a": 1, "b": 2})
    turns = 0
    while sched.turn(start):
        turns += 1
        assert turns < 10
    # One connection per turn (the slice is gone after its first start), and
    # the uids take turns going first, so both finish.
    assert conns.log == [("a", 2), ("b", 2), ("a", 2), ("b", 2)]
    assert conns.waiting == {"a": 0, "b": 0}


def test_the_time_slice_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TurnScheduler(1, 1, time_slice=0)


def test_the_kernels_connection_goes_before_the_light_and_the_heavy_ones() -> None:
    sched: TurnScheduler[str] = TurnScheduler(8, 2, 16, clock=still)
    conns = Conns({"flood": 100, "serial": 1, "kernel": 20})
    conns.add_all(sched, {"flood": ROOT_UID, "serial": ROOT_UID})
    # Twenty upcalls from as many nfsd threads: heavy by count, first by origin.
    sched.add("kernel", ROOT_UID, 20, first=True)
    assert sched.turn(conns.start)
    assert conns.log == [("kernel", 8), ("serial", 1), ("flood", 2)]
    conns.log.clear()
    sched.turn(conns.start)
    assert conns.log[0] == ("kernel", 8)

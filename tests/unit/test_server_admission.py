"""The connection caps, the input budget and the rate-limited log (pure)."""

from __future__ import annotations

import resource

import pytest

from gssproxy_py.ratelimit import RateLimitedLog
from gssproxy_py.server.admission import (
    ROOT_UID,
    Admission,
    BudgetLimits,
    ConnectionCaps,
    InputBudget,
    raise_fd_limit,
)


def caps(
    total: int = 100, per_uid: int = 10, reserve: int = 20, capacity: int = 1000
) -> ConnectionCaps:
    return ConnectionCaps(
        max_connections=total,
        max_connections_per_uid=per_uid,
        fd_reserve=reserve,
        fd_capacity=capacity,
    )


def fill(adm: Admission, uid: int, n: int) -> None:
    for _ in range(n):
        assert adm.refusal(uid) is None
        adm.opened(uid)


def test_per_uid_cap_refuses_that_uid_only() -> None:
    adm = Admission(caps(per_uid=3))
    fill(adm, 1000, 3)
    assert "uid 1000 holds 3 connections" in (adm.refusal(1000) or "")
    assert adm.refusal(1001) is None
    adm.closed(1000)
    assert adm.refusal(1000) is None


def test_total_cap_spares_root() -> None:
    adm = Admission(caps(total=5, per_uid=3))
    fill(adm, 1000, 3)
    fill(adm, 1001, 2)
    assert "non-root peers" in (adm.refusal(1002) or "")
    fill(adm, ROOT_UID, 50)  # root is not capped per uid nor by max_connections
    assert adm.total == 55


def test_fd_reserve_bounds_non_root_and_half_of_it_bounds_root() -> None:
    adm = Admission(caps(total=10_000, per_uid=10_000, reserve=20, capacity=100))
    assert adm.caps.non_root_limit == 80
    fill(adm, 1000, 80)
    assert adm.refusal(1000) is not None
    fill(adm, ROOT_UID, 10)
    assert "descriptor limit" in (adm.refusal(ROOT_UID) or "")
    assert adm.held_by(ROOT_UID) == 10


def test_closed_without_open_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        Admission(caps()).closed(5)


def test_budget_per_uid_share_drops_the_connection_that_crossed_it() -> None:
    budget: InputBudget[str] = InputBudget(BudgetLimits(total=1000, per_uid=300))
    assert budget.set("a", 1000, 200) == []
    assert budget.set("b", 1000, 150) == ["b"]
    assert budget.held_by(1000) == 200
    assert budget.set("c", 1001, 150) == []


def test_budget_total_drops_the_heaviest_uid_first_heaviest_connection_first() -> None:
    budget: InputBudget[str] = InputBudget(BudgetLimits(total=1000, per_uid=600))
    budget.set("small-1", 1000, 100)
    budget.set("heavy-1", 1001, 300)
    budget.set("heavy-2", 1001, 250)
    budget.set("root", ROOT_UID, 200)
    # 850 held; 1002 adds 300: the total goes over by 150.
    assert budget.set("new", 1002, 300) == ["heavy-1"]
    assert budget.total == 850
    budget.forget("heavy-2")
    budget.forget("never-seen")
    assert budget.total == 600
    assert budget.set("small-1", 1000, 0) == []
    assert budget.held_by(1000) == 0


def test_rate_limited_log_counts_what_it_kept_silent() -> None:
    log = RateLimitedLog(10.0)
    assert log.admit(100.0) == 0
    assert [log.admit(t) for t in (101.0, 105.0, 109.9)] == [None, None, None]
    assert log.admit(110.0) == 3
    assert log.admit(111.0) is None


def test_raise_fd_limit_reaches_the_hard_limit() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if before[1] != resource.RLIM_INFINITY and before[1] > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, before[1]))
        soft, hard = raise_fd_limit()
        assert (soft, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
        assert hard == before[1]
        assert soft == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)

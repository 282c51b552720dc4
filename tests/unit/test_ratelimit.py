"""Rate-limited lines: a count kept silent is said with the next line, or by
`flush` once its interval ended with no next line (times are arguments)."""

from __future__ import annotations

from gssproxy_py.ratelimit import RateLimitedLog, RepeatLimits


def test_flush_says_the_count_of_an_ended_interval_once() -> None:
    log = RateLimitedLog(10.0)
    assert log.flush(100.0) is None  # nothing happened
    assert log.admit(100.0) == 0
    assert log.flush(105.0) is None  # the line itself is nothing to report
    assert [log.admit(t) for t in (101.0, 102.0, 103.0)] == [None] * 3
    assert log.flush(109.9) is None  # the interval has not ended
    assert log.flush(110.0) == 3
    assert log.flush(200.0) is None  # said once
    assert log.admit(201.0) == 0  # and not again with the next line


def test_a_count_the_next_line_said_is_not_flushed() -> None:
    log = RateLimitedLog(10.0)
    log.admit(100.0)
    log.admit(101.0)
    assert log.admit(110.0) == 1
    assert log.flush(125.0) is None


def test_repeat_limits_flush_the_keys_whose_interval_ended() -> None:
    limits = RepeatLimits[str](10.0)
    assert limits.admit("a", 100.0) == 0
    assert limits.admit("b", 105.0) == 0
    assert limits.admit("c", 100.0) == 0
    for _ in range(4):
        assert limits.admit("a", 101.0) is None
    assert limits.admit("b", 106.0) is None
    assert limits.flush(110.0) == [("a", 4)]  # b's interval runs to 115; c had no repeat
    assert limits.flush(114.0) == []
    assert limits.flush(115.0) == [("b", 1)]
    assert limits.flush(500.0) == []
    assert limits.admit("a", 501.0) == 0


def test_a_forgotten_key_has_nothing_to_flush() -> None:
    limits = RepeatLimits[int](10.0, max_keys=2)
    limits.admit(1, 100.0)
    limits.admit(1, 101.0)  # kept silent
    limits.admit(2, 102.0)
    limits.admit(3, 103.0)  # 1 is the least recently seen: forgotten
    assert limits.flush(200.0) == []
    limits.admit(2, 104.0)
    limits.clear()
    assert limits.flush(200.0) == []

"""Rate-limited log lines: one line per interval, and how many were kept silent.

`RateLimitedLog` is one such limit (the server's refusal lines use it);
`RepeatLimits` keeps one per key, for lines that repeat per (uid, service,
reason) such as a failed GSS call's. Both take the time as an argument, so
callers and tests decide what the clock is. Stdlib only.

A count is said with the next line, or, when no next line comes, by
`flush`: the daemon's loop calls it every second or so, and logs the count
of every interval that ended with events kept silent. Without it a burst
followed by silence would never be reported.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["RateLimitedLog", "RepeatLimits"]

K = TypeVar("K", bound=Hashable)


class RateLimitedLog:
    """Lets one line through per `interval` seconds and counts the rest."""

    __slots__ = ("_next", "_suppressed", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = float("-inf")
        self._suppressed = 0

    def admit(self, now: float) -> int | None:
        """None if this event stays silent; else how many events were kept
        silent since the last line (the caller logs this one now)."""
        if now < self._next:
            self._suppressed += 1
            return None
        suppressed, self._suppressed = self._suppressed, 0
        self._next = now + self.interval
        return suppressed

    def flush(self, now: float) -> int | None:
        """How many events were kept silent in an interval that has ended
        (the caller logs the count now), or None if none are to report.
        Counted once: the next line starts from 0."""
        if not self._suppressed or now < self._next:
            return None
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


class RepeatLimits(Generic[K]):
    """A `RateLimitedLog` per key, for at most `max_keys` keys (the least
    recently seen are forgotten first, so a flood of distinct keys cannot
    grow memory). Safe to call from several threads."""

    def __init__(self, interval: float, max_keys: int = 4096) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._limits: OrderedDict[K, RateLimitedLog] = OrderedDict()
        #: the keys with events kept silent: all that `flush` looks at, so
        #: that a periodic flush costs nothing while nothing repeats
        self._pending: set[K] = set()
        self._lock = threading.Lock()

    def admit(self, key: K, now: float) -> int | None:
        """As `RateLimitedLog.admit`, for the events of `key`."""
        with self._lock:
            limit = self._limits.get(key)
            if limit is None:
                limit = self._limits[key] = RateLimitedLog(self.interval)
                while len(self._limits) > self.max_keys:
                    self._pending.discard(self._limits.popitem(last=False)[0])
            else:
                self._limits.move_to_end(key)
            suppressed = limit.admit(now)
            if suppressed is None:
                self._pending.add(key)
            else:
                self._pending.discard(key)
            return suppressed

    def flush(self, now: float) -> list[tuple[K, int]]:
        """As `RateLimitedLog.flush`, for every key: (key, count) of each
        whose interval ended with events kept silent."""
        due = []
        with self._lock:
            for key in list(self._pending):
                suppressed = self._limits[key].flush(now)
                if suppressed is not None:
                    self._pending.discard(key)
                    due.append((key, suppressed))
        return due

    def clear(self) -> None:
        with self._lock:
            self._limits.clear()
            self._pending.clear()

"""Rate-limited log lines: one line per interval, and how many were kept silent.

`RateLimitedLog` is one such limit (the server's refusal lines use it);
`RepeatLimits` keeps one per key, for lines that repeat per (uid, service,
reason) such as a failed GSS call's. Both take the time as an argument, so
callers and tests decide what the clock is. Stdlib only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["RateLimitedLog", "RepeatLimits"]


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


class RepeatLimits:
    """A `RateLimitedLog` per key, for at most `max_keys` keys (the least
    recently seen are forgotten first, so a flood of distinct keys cannot
    grow memory). Safe to call from several threads."""

    def __init__(self, interval: float, max_keys: int = 4096) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._limits: OrderedDict[Hashable, RateLimitedLog] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, key: Hashable, now: float) -> int | None:
        """As `RateLimitedLog.admit`, for the events of `key`."""
        with self._lock:
            limit = self._limits.get(key)
            if limit is None:
                limit = self._limits[key] = RateLimitedLog(self.interval)
                while len(self._limits) > self.max_keys:
                    self._limits.popitem(last=False)
            else:
                self._limits.move_to_end(key)
            return limit.admit(now)

    def clear(self) -> None:
        with self._lock:
            self._limits.clear()

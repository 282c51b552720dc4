"""When a service's GSS calls stop being tried on the event loop.

Calls that cannot wait run inline (see `gss.engine`); this guard is the safety
net for a step that unexpectedly does wait (a keytab or replay cache on a hung
filesystem). One call that took `blocked` seconds or more must have waited on
something: the service goes to the worker threads at once. A call that merely
exceeded `limit` may only have been preempted on a busy machine, so it takes
`strikes` such calls in a row; a fast call clears the count. Demotion lasts
`cooldown` seconds. Pure state, used on the event-loop thread only; the clock
is injectable so the rule is tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

INLINE_LIMIT = 0.02
INLINE_BLOCKED = 0.2
INLINE_STRIKES = 3
INLINE_COOLDOWN = 30.0


class InlineGuard:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        limit: float = INLINE_LIMIT,
        blocked: float = INLINE_BLOCKED,
        strikes: int = INLINE_STRIKES,
        cooldown: float = INLINE_COOLDOWN,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.blocked = blocked
        self.strikes = strikes
        self.cooldown = cooldown
        self._slow: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def allowed(self, service: str) -> bool:
        """May the next call of `service` be tried inline?"""
        until = self._until.get(service)
        if until is None:
            return True
        if self.clock() < until:
            return False
        del self._until[service]
        return True

    def record(self, service: str, took: float) -> bool:
        """Account one inline call that took `took` seconds; True if it demoted the service."""
        if took < self.limit:
            self._slow.pop(service, None)
            return False
        slow = self._slow.get(service, 0) + 1
        if took < self.blocked and slow < self.strikes:
            self._slow[service] = slow
            return False
        self._slow.pop(service, None)
        self._until[service] = self.clock() + self.cooldown
        return True

    def clear(self) -> None:
        self._slow.clear()
        self._until.clear()

"""Flow control for one connection, without I/O: which calls start, and when
to read more.

The kernel multiplexes many nfsd threads over one connection, so calls run
concurrently, up to a per-connection limit. Records that arrive beyond the
limit (one socket read can carry many) wait in a backlog; reading stops
while the backlog is not empty, the limit is reached, or the transport's
write buffer is full (a peer that sends calls but does not read replies).
Memory per connection is therefore bounded by the limit, one read's worth of
records and the transport's high-water mark.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class CallWindow:
    """The in-flight count and backlog of one connection.

    The driver feeds received records in, asks `next_call` for records to
    start (each counts as in flight until `finished`), and reads from the
    socket only while `reading_allowed`.
    """

    __slots__ = ("_backlog", "_in_flight", "_limit", "_write_blocked")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit must be >= 1")
        self._limit = limit
        self._in_flight = 0
        self._backlog: deque[bytes] = deque()
        self._write_blocked = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    @property
    def idle(self) -> bool:
        """Nothing running and nothing waiting."""
        return self._in_flight == 0 and not self._backlog

    @property
    def can_start(self) -> bool:
        """A record waits and the limit allows starting it."""
        return bool(self._backlog) and self._in_flight < self._limit

    @property
    def reading_allowed(self) -> bool:
        return not self._write_blocked and not self._backlog and self._in_flight < self._limit

    def received(self, records: Iterable[bytes]) -> None:
        self._backlog.extend(records)

    def next_call(self) -> bytes | None:
        """The next record to start, counted in flight; None if none may start."""
        if self._in_flight >= self._limit or not self._backlog:
            return None
        self._in_flight += 1
        return self._backlog.popleft()

    def finished(self) -> None:
        """A started call has been answered (or abandoned)."""
        if self._in_flight <= 0:
            raise RuntimeError("finished() without a call in flight")
        self._in_flight -= 1

    def write_blocked(self, blocked: bool) -> None:
        """The transport's write buffer crossed its high (True) or low (False) mark."""
        self._write_blocked = blocked

    def drop_backlog(self) -> int:
        """Forget calls not yet started (shutdown, a broken stream); how many."""
        dropped = len(self._backlog)
        self._backlog.clear()
        return dropped

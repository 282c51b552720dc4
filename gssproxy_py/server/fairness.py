"""Whose calls start next, without I/O: bounded work per turn of the event
loop, the light connections first, then round-robin across uids and their
connections, root first.

While the daemon is quiet, a connection's calls start in its own read
callback (up to `CALLS_PER_TURN`). Once calls wait, every connection with
calls to start queues here, and one turn of the scheduler per turn of the
event loop starts them:

* first the kernel's own connections (the nfsd upcall: a root peer with no
  executable, `first`), up to `calls_per_uid` calls each, however many
  nfsd threads have calls waiting;
* then every *light* connection, one with at most `calls_per_connection`
  records waiting: a caller that sends one call at a time, rpc.gssd; a
  flood of pipelined calls never delays them by more than one bounded turn;
* then the *heavy* ones (pipelining more than that), round-robin per uid,
  root first, the other uids taking turns being first: each uid up to
  `calls_per_uid` calls spread round-robin over its connections
  (`calls_per_connection` each), all uids together `calls_per_turn`. A uid
  with many connections gets no more per turn than a uid with one;
* and the heavy part of a turn ends once it has run `time_slice` seconds
  (after at least one call), whatever budget is left: calls differ in cost
  (a NULL takes microseconds, an accept a hundred times more), and the
  light connections' wait is the length of one turn.

A queued connection's reading stays paused, so what waits is bounded by one
read per connection. The driver (`daemon.GssProxyServer`) runs `turn` from
`loop.call_soon` while work remains, so I/O is polled between turns.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)

#: Calls one connection may start per event (a read, a finished call) or
#: per turn, where no configuration says (the admin socket); the daemon's
#: budgets are `[gssproxy] turn_calls_per_connection`, `turn_calls_per_uid`
#: and `turn_calls`.
CALLS_PER_TURN = 8

#: uid 0: the kernel's upcall socket, rpc.gssd, the administrator.
ROOT_UID = 0

#: Seconds the heavy part of one turn may run, where no configuration says
#: (`[gssproxy] turn_time_us`).
TIME_SLICE = 0.0001


class TurnScheduler(Generic[C]):
    """Queued connections, served a bounded amount per turn: the kernel's
    first, then the light ones (at most `calls_per_connection` waiting: a
    caller that sends one call at a time), then the heavy ones round-robin
    per uid, root's first, within `calls_per_turn` calls and `time_slice`
    seconds (by `clock`) in all."""

    __slots__ = (
        "_by_uid",
        "_clock",
        "_first",
        "_light",
        "_order",
        "_queued",
        "calls_per_connection",
        "calls_per_turn",
        "calls_per_uid",
        "time_slice",
    )

    def __init__(
        self,
        calls_per_uid: int,
        calls_per_connection: int,
        calls_per_turn: int | None = None,
        time_slice: float = TIME_SLICE,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if calls_per_uid < 1 or calls_per_connection < 1:
            raise ValueError("budgets must be >= 1")
        if time_slice <= 0:
            raise ValueError("the time slice must be > 0")
        self.calls_per_uid = calls_per_uid
        self.calls_per_connection = calls_per_connection
        self.calls_per_turn = calls_per_turn or 2 * calls_per_uid
        self.time_slice = time_slice
        self._clock = clock
        self._first: deque[C] = deque()
        self._light: deque[C] = deque()
        self._by_uid: dict[int, deque[C]] = {}
        #: uids with heavy work, in the order they are served next turn
        self._order: deque[int] = deque()
        self._queued: set[C] = set()

    @property
    def idle(self) -> bool:
        """Nothing is queued."""
        return not self._queued

    def add(self, conn: C, uid: int, waiting: int, first: bool = False) -> None:
        """`conn` (of `uid`) has `waiting` records to start; `first` for the
        kernel's connection, served before all others."""
        if conn in self._queued:
            return
        self._queued.add(conn)
        if first:
            self._first.append(conn)
            return
        if waiting <= self.calls_per_connection:
            self._light.append(conn)
            return
        queue = self._by_uid.get(uid)
        if queue is None:
            queue = self._by_uid[uid] = deque()
            if uid == ROOT_UID:
                self._order.appendleft(uid)
            else:
                self._order.append(uid)
        queue.append(conn)

    def discard(self, conn: C) -> None:
        """`conn` is gone; it is skipped when its turn comes."""
        self._queued.discard(conn)

    def turn(self, start: Callable[[C, int], tuple[int, bool]]) -> bool:
        """Serve one turn: `start(conn, limit)` starts up to `limit` calls of
        `conn` and says how many it started and whether more wait. True if
        work remains queued (run another turn after polling I/O)."""
        # Swapped out first: a connection queued while these start waits
        # for the next turn.
        first, self._first = self._first, deque()
        self._serve_ahead(first, self._first, self.calls_per_uid, start)
        light, self._light = self._light, deque()
        self._serve_ahead(light, self._light, self.calls_per_connection, start)
        budget = self.calls_per_turn
        deadline = self._clock() + self.time_slice
        uids = list(self._order)
        if ROOT_UID in self._by_uid and uids[0] != ROOT_UID:
            uids.remove(ROOT_UID)
            uids.insert(0, ROOT_UID)
        for uid in uids:
            if budget <= 0 or (budget < self.calls_per_turn and self._clock() >= deadline):
                break
            budget -= self._serve_uid(uid, min(budget, self.calls_per_uid), start, deadline)
        # The next uid goes first next turn (root stays first).
        if len(self._order) > 1:
            self._order.rotate(-1)
        return bool(self._queued)

    def _serve_ahead(
        self,
        queue: deque[C],
        again: deque[C],
        limit: int,
        start: Callable[[C, int], tuple[int, bool]],
    ) -> None:
        """Serve every connection of `queue` (up to `limit` calls each) ahead
        of the heavy ones; those with more waiting go to `again`, in order."""
        for conn in queue:
            if conn in self._queued:
                self._queued.discard(conn)
                _, more = start(conn, limit)
                if more:
                    self._queued.add(conn)
                    again.append(conn)

    def _serve_uid(
        self,
        uid: int,
        budget: int,
        start: Callable[[C, int], tuple[int, bool]],
        deadline: float,
    ) -> int:
        """Serve `uid`'s heavy connections round-robin within `budget` and
        until `deadline` (after one call at least); the calls started."""
        queue = self._by_uid[uid]
        used = 0
        # Each connection of the uid at most once per turn.
        for _ in range(len(queue)):
            if used >= budget or (used and self._clock() >= deadline):
                break
            conn = queue.popleft()
            if conn not in self._queued:
                continue
            started, more = start(conn, min(budget - used, self.calls_per_connection))
            used += max(1, started)
            if more:
                queue.append(conn)
            else:
                self._queued.discard(conn)
        # Drop connections that left meanwhile, and the uid once it has none.
        if not any(c in self._queued for c in queue):
            del self._by_uid[uid]
            self._order.remove(uid)
        return used

"""Who may hold connections and buffered input, without I/O: the caps that keep
one local user from starving root, the kernel or another user.

* `ConnectionCaps` / `Admission`: a connection is refused when its uid holds
  `max_connections_per_uid` already, or when the connections of non-root
  peers would eat into the fd reserve. Root (the kernel's upcall socket is
  connected as root, and so is rpc.gssd) is counted but neither capped per
  uid nor by `max_connections`: only the last half of the reserve, kept for
  keytabs, replay caches and the ccaches a call opens, is closed to it.
* `InputBudget`: bytes of partial records buffered across all connections.
  One uid may hold `input_budget_per_uid` of them; beyond the global
  `input_budget`, the connections of the uid holding the most are dropped,
  heaviest first, until the total fits again.

Refusals are logged at most once per interval, with how many were refused
silently since the last line (`gssproxy_py.ratelimit.RateLimitedLog`).

The server owns one of each; `connection.RpcConnection` reports its peer's
uid and its buffered bytes.
"""

from __future__ import annotations

import logging
import os
import resource
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gssproxy_py.config.peer import Peer
from gssproxy_py.ratelimit import RateLimitedLog

K = TypeVar("K", bound=Hashable)

#: uid 0: the kernel's upcall socket, rpc.gssd, the administrator.
ROOT_UID = 0


@dataclass(frozen=True, slots=True)
class ConnectionCaps:
    """The connection caps in force (from `[gssproxy]` and the fd limit)."""

    #: connections of all non-root peers together
    max_connections: int
    #: connections of one non-root uid
    max_connections_per_uid: int
    #: descriptors the open connections of non-root peers leave free
    fd_reserve: int
    #: descriptors the process may still open for connections (the soft
    #: RLIMIT_NOFILE less what was open when the server started)
    fd_capacity: int

    @property
    def non_root_limit(self) -> int:
        """Connections of non-root peers, all together, that may be open."""
        return max(0, min(self.max_connections, self.fd_capacity - self.fd_reserve))

    @property
    def root_limit(self) -> int:
        """Connections of any peers, root included, that may be open: half of
        the reserve stays for the descriptors a call opens (keytabs, replay
        caches)."""
        return max(0, self.fd_capacity - self.fd_reserve // 2)


class Admission:
    """Counts open connections per uid and decides whether one more may open."""

    __slots__ = ("_per_uid", "_total", "caps")

    def __init__(self, caps: ConnectionCaps) -> None:
        self.caps = caps
        self._per_uid: Counter[int] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def held_by(self, uid: int) -> int:
        return self._per_uid[uid]

    def refusal(self, uid: int) -> str | None:
        """Why a new connection of `uid` is refused, or None if it may open."""
        caps = self.caps
        if self._total >= caps.root_limit:
            return f"{self._total} connections open, the descriptor limit is reached"
        if uid == ROOT_UID:
            return None
        held = self._per_uid[uid]
        if held >= caps.max_connections_per_uid:
            return f"uid {uid} holds {held} connections (max_connections_per_uid)"
        non_root = self._total - self._per_uid[ROOT_UID]
        if non_root >= caps.non_root_limit:
            return (
                f"{non_root} connections of non-root peers open "
                "(max_connections, or the fd reserve)"
            )
        return None

    def opened(self, uid: int) -> None:
        self._per_uid[uid] += 1
        self._total += 1

    def closed(self, uid: int) -> None:
        if self._per_uid[uid] <= 0:
            raise RuntimeError(f"closed() for uid {uid} without an open connection")
        self._per_uid[uid] -= 1
        if not self._per_uid[uid]:
            del self._per_uid[uid]
        self._total -= 1


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Bytes of partial records that may be buffered."""

    total: int
    per_uid: int


class InputBudget(Generic[K]):
    """Bytes of partial records buffered per connection (a key) and per uid."""

    __slots__ = ("_held", "_per_uid", "_total", "limits")

    def __init__(self, limits: BudgetLimits) -> None:
        self.limits = limits
        self._held: dict[K, tuple[int, int]] = {}  # key -> (uid, bytes)
        self._per_uid: Counter[int] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def held_by(self, uid: int) -> int:
        return self._per_uid[uid]

    def set(self, key: K, uid: int, size: int) -> list[K]:
        """`key` (of `uid`) now buffers `size` bytes; the connections to drop
        so that the budget holds: `key` itself when its uid is over its
        share, else, while the total is over, the heaviest connection of the
        heaviest uid."""
        self._set(key, uid, size)
        drop: list[K] = []
        if size and self._per_uid[uid] > self.limits.per_uid:
            self._set(key, uid, 0)
            drop.append(key)
        while self._total > self.limits.total:
            heaviest_uid = max(self._per_uid, key=self._per_uid.__getitem__)
            victim = max(
                (k for k, (u, _) in self._held.items() if u == heaviest_uid),
                key=lambda k: self._held[k][1],
            )
            self._set(victim, heaviest_uid, 0)
            drop.append(victim)
        return drop

    def forget(self, key: K) -> None:
        """`key` is gone (closed)."""
        held = self._held.get(key)
        if held is not None:
            self._set(key, held[0], 0)

    def _set(self, key: K, uid: int, size: int) -> None:
        old = self._held.pop(key, None)
        if old is not None:
            self._total -= old[1]
            self._per_uid[old[0]] -= old[1]
            if not self._per_uid[old[0]]:
                del self._per_uid[old[0]]
        if size:
            self._held[key] = (uid, size)
            self._total += size
            self._per_uid[uid] += size


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (systemd starts services
    with a soft limit of 1024); the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            # An infinite hard limit cannot be the soft one on Linux (nr_open).
            return soft, hard
        soft = hard
    return soft, hard


def open_fd_count() -> int:
    """Descriptors this process has open now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less listdir's own
    except OSError:
        return 0


def log_refusal(
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    limit: RateLimitedLog,
    now: float,
    socket_path: str,
    peer: Peer,
    why: str,
) -> None:
    """The one line per `refusal_log_interval` that says a connection was
    refused: who (pid, uid, program), where, why, and how many more were
    refused since the last such line."""
    suppressed = limit.admit(now)
    if suppressed is None:
        return
    log.warning(
        "refused a connection on %s from pid %d uid %d program %s: %s%s",
        socket_path,
        peer.pid,
        peer.uid,
        peer.program or "(unknown)",
        why,
        f" ({suppressed} more refused since the last such line)" if suppressed else "",
    )

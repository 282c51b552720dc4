"""The identity of a connected client, as the config layer sees it.

The server fills a `Peer` from `SO_PEERCRED`, `getpeercon`, the target of
`/proc/PID/exe` (a canonical path) and the inode of `/proc/PID/ns/net`; the config layer only
reads it (service matching in `match.py`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of a connection.

    `program` is None when the executable could not be resolved (kernel
    upcalls, deleted binaries, missing `CAP_SYS_PTRACE`); a service with a
    `program` never matches such a peer. `selinux_context` is the full
    `user:role:type[:range]` string or None; `netns_inode` is the inode number
    of the peer's network namespace or None when unknown.
    """

    pid: int
    uid: int
    gid: int
    program: str | None
    selinux_context: str | None = None
    netns_inode: int | None = None

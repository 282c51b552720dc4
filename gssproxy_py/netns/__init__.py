"""Network namespaces and the kernel's gss-proxy upcall switch.

* `upcall`: enabling `/proc/net/rpc/use-gss-proxy` per namespace
  (`UpcallEnabler`, `KernelUpcalls`).
* `executors`: one executor per namespace whose threads live in it
  (`NetnsExecutors.executor_for`).
* `named`: `/run/netns` names, the name → inode map for service matching,
  and which namespaces need the upcall.
* `nsfs`: inodes of processes, sockets and threads; `setns` for one thread.

Importing this package does not import pyroute2 (see `named`).
"""

from __future__ import annotations

from gssproxy_py.netns.errors import (
    NetnsError,
    NetnsNotFoundError,
    UpcallError,
    UpcallLatchedError,
)
from gssproxy_py.netns.executors import NetnsExecutors
from gssproxy_py.netns.named import NETNS_DIR, inode_map, list_named, upcall_targets
from gssproxy_py.netns.nsfs import peer_netns_inode, socket_netns_inode, thread_netns_inode
from gssproxy_py.netns.upcall import (
    AttemptResult,
    KernelUpcalls,
    Outcome,
    UpcallEnabler,
    UpcallState,
)

__all__ = [
    "NETNS_DIR",
    "AttemptResult",
    "KernelUpcalls",
    "NetnsError",
    "NetnsExecutors",
    "NetnsNotFoundError",
    "Outcome",
    "UpcallEnabler",
    "UpcallError",
    "UpcallLatchedError",
    "UpcallState",
    "inode_map",
    "list_named",
    "peer_netns_inode",
    "socket_netns_inode",
    "thread_netns_inode",
    "upcall_targets",
]

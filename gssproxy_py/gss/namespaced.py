"""Where the blocking work of a call for a namespaced service runs.

libkrb5 opens its own sockets to the KDC (and PKINIT's AS exchange is one of
them), so for a service restricted with `netns = NAME ...` or `netns = all`
the whole procedure runs on a thread inside the peer's network namespace:
`NetnsExecutors.executor_for_inode(peer.netns_inode)`. That is the
namespace of the connection (`server.peer`), so a service matched through
`netns = NAME` runs in NAME, and a `netns = all` service in whichever named
namespace the peer is in. Everything else keeps the service's own threads
(`GssEngine.run`, which runs both kinds and writes off stuck threads): calls
of services without `netns`, and calls whose peer is in the daemon's own
namespace or its namespace is unknown.

Unnamed namespaces (no entry under /run/netns) cannot be re-entered without
pinning them; `executor_for_inode` gives those the daemon's own namespace,
which is where gssproxy does all of its KDC traffic anyway.

The `NetnsExecutors` are the server's, shared with the kernel upcall
enabler, whose workers entered their namespaces before `run_as_user`
dropped CAP_SYS_ADMIN (`NetnsExecutors.prestart`). A namespace that cannot
be entered (created or re-created after the drop) breaks its executor: the
call fails with a GSS error and never runs in the wrong namespace. Built
without one (`gss_proxy_service(config)` alone), a private `NetnsExecutors`
is made on first use and shut down with the program.
"""

from __future__ import annotations

import threading

from gssproxy_py.config.model import Config, Service
from gssproxy_py.config.peer import Peer
from gssproxy_py.executors import Executor
from gssproxy_py.netns.executors import NetnsExecutors

__all__ = ["NamespacedCalls", "is_namespaced"]


def is_namespaced(service: Service) -> bool:
    """Whether the service is restricted to network namespaces."""
    return bool(service.netns) or service.netns_all


class NamespacedCalls:
    """Picks, and runs on, the executor of a namespaced service's call."""

    def __init__(self, executors: NetnsExecutors | None = None) -> None:
        self._shared = executors
        self._private: NetnsExecutors | None = None
        self._lock = threading.Lock()

    def executors(self, config: Config) -> NetnsExecutors:
        """The shared executors, or (made now) our private ones."""
        if self._shared is not None:
            return self._shared
        with self._lock:
            if self._private is None:
                workers = max(1, config.globals.worker_threads)
                self._private = NetnsExecutors(workers=workers, thread_name_prefix="gss-netns")
            return self._private

    def executor_for(self, service: Service, peer: Peer, config: Config) -> Executor | None:
        """The executor for this call; None: the engine's own threads.

        Raises `NetnsError` when the namespace executors cannot be used (shut
        down, /run/netns unreadable).
        """
        if not is_namespaced(service):
            return None
        inode = peer.netns_inode
        executors = self.executors(config)
        if inode is None or inode == executors.own_inode:
            return None
        return executors.executor_for_inode(inode)

    def close(self) -> None:
        """Shut our private executors down (the shared ones are the server's)."""
        with self._lock:
            private, self._private = self._private, None
        if private is not None:
            private.shutdown(wait=False)

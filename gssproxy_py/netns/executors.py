"""One executor per network namespace, whose threads live in that namespace.

libkrb5 opens its own sockets to the KDC, so Kerberos work for a request of a
namespaced service must run on a thread that is itself in that namespace.
`setns` moves only the calling thread, so each executor's initializer enters
its namespace once per worker thread, and the event-loop thread never moves.

Each is a `gssproxy_py.executors.Executor` named `<prefix>-<namespace>`
whose initializer is the `setns`. Usage from the server or the GSS layer::

    executors = NetnsExecutors(workers=settings.worker_threads)
    pool = executors.executor_for(service_netns_name)  # None: our own netns
    result = await pool.run(functools.partial(blocking_call, *args))
    ...
    executors.shutdown()

A worker that cannot enter its namespace breaks its executor (pending and
future submissions fail with `executors.BrokenExecutorError`, a
`concurrent.futures.BrokenExecutor`): work is never run in the wrong
namespace. A name whose namespace was deleted and re-created gets a
fresh executor on the next `executor_for`, because executors are keyed by
name and inode.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gssproxy_py.executors import Executor
from gssproxy_py.netns.errors import NetnsError, NetnsNotFoundError
from gssproxy_py.netns.named import NETNS_DIR, netns_path
from gssproxy_py.netns.nsfs import (
    enter_netns,
    netns_inode,
    setns_current_thread,
    thread_netns_inode,
)

DEFAULT_WORKERS = 1


@dataclass(frozen=True, slots=True)
class _Entry:
    inode: int
    executor: Executor


class NetnsExecutors:
    """Executors keyed by namespace name (None: the daemon's own namespace).

    Thread-safe. Executors are created on first use and kept until
    `shutdown`, `forget` or the namespace being re-created.
    """

    def __init__(
        self,
        *,
        netns_dir: str = NETNS_DIR,
        workers: int = DEFAULT_WORKERS,
        thread_name_prefix: str = "gssproxy-netns",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._dir = netns_dir
        self._workers = workers
        self._prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._named: dict[str, _Entry] = {}
        self._own: Executor | None = None
        self._closed = False
        # The namespace of the thread building us (the event loop's, i.e. the
        # daemon's own). The own-namespace executor re-enters it explicitly:
        # threads inherit the namespace of whichever thread starts them, and
        # that must not be a worker that sits in some other namespace.
        self._own_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._own_inode = os.fstat(self._own_fd).st_ino

    @property
    def own_inode(self) -> int:
        """The inode of the daemon's own network namespace."""
        return self._own_inode

    def executor_for(self, netns: str | None) -> Executor:
        """The executor whose threads run in `netns` (a /run/netns name).

        None is the daemon's own namespace. Raises `NetnsNotFoundError` if
        the name does not exist now; a name that now refers to a different
        namespace than before gets a new executor (the old one finishes its
        queued work and ends).
        """
        with self._lock:
            if self._closed:
                raise NetnsError("namespace executors are shut down")
            if netns is None:
                if self._own is None:
                    self._own = self._make(self._enter_own, "self")
                return self._own
            path = netns_path(netns, self._dir)
            inode = netns_inode(path)
            if inode is None:
                raise NetnsNotFoundError(f"network namespace {netns} does not exist ({path})")
            entry = self._named.get(netns)
            if entry is not None and entry.inode == inode:
                return entry.executor
            if entry is not None:
                entry.executor.shutdown(wait=False)
            executor = self._make(lambda: self._enter_named(path, inode), netns)
            self._named[netns] = _Entry(inode, executor)
            return executor

    def prestart(self, netns: str | None, *, timeout: float = 30.0) -> int:
        """Start every worker of `netns`'s executor now; blocking.

        `setns` needs CAP_SYS_ADMIN, which the daemon no longer has after
        `run_as_user`; threads that entered their namespace before the drop
        stay there. So call this for each namespace the configuration names
        before dropping privileges (a namespace re-created later then fails
        closed: its new executor cannot enter it). Returns the number of
        distinct worker threads, i.e. `workers`.
        """
        executor = self.executor_for(netns)
        # Each task waits for all the others, so none is idle and the pool
        # must start one thread per task.
        barrier = threading.Barrier(self._workers)

        def hold() -> int:
            barrier.wait(timeout)
            return threading.get_ident()

        futures = [executor.submit(hold) for _ in range(self._workers)]
        return len({f.result(timeout) for f in futures})

    def executor_for_inode(self, inode: int | None) -> Executor:
        """The executor for the namespace a peer is in, given its inode.

        For a request of a service restricted with `netns = NAME ...` or
        `netns = all`, pass the peer's `netns_inode`: the executor of the
        /run/netns name bound to that inode. Our own namespace, an unknown
        inode (None) and a namespace without a name under /run/netns all get
        the daemon's own executor: an unnamed namespace cannot be re-entered
        later without pinning it (which would keep it alive), and that is
        where gssproxy does all of its KDC traffic anyway.
        """
        if inode is None or inode == self._own_inode:
            return self.executor_for(None)
        name = self.name_of(inode)
        if name is None:
            return self.executor_for(None)
        try:
            return self.executor_for(name)
        except NetnsNotFoundError:
            # Removed between the lookup and now.
            return self.executor_for(None)

    def name_of(self, inode: int) -> str | None:
        """The /run/netns name bound to namespace `inode`, if any."""
        try:
            names = sorted(os.listdir(self._dir))
        except OSError:
            return None
        for name in names:
            if netns_inode(os.path.join(self._dir, name)) == inode:
                return name
        return None

    def inode_of(self, netns: str) -> int | None:
        """The inode `netns` currently names, or None if it does not exist."""
        return netns_inode(netns_path(netns, self._dir))

    def forget(self, netns: str) -> None:
        """Drop the executor of `netns` (its queued work still runs)."""
        with self._lock:
            entry = self._named.pop(netns, None)
        if entry is not None:
            entry.executor.shutdown(wait=False)

    def shutdown(self, *, wait: bool = True) -> None:
        """Shut every executor down; further `executor_for` calls fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executors = [e.executor for e in self._named.values()]
            if self._own is not None:
                executors.append(self._own)
            self._named.clear()
            self._own = None
        for ex in executors:
            ex.shutdown(wait=wait)
        os.close(self._own_fd)

    def _make(self, initializer: Callable[[], None], label: str) -> Executor:
        return Executor(f"{self._prefix}-{label}", self._workers, initializer=initializer)

    def _enter_own(self) -> None:
        setns_current_thread(self._own_fd)
        now = thread_netns_inode()
        if now != self._own_inode:
            raise NetnsError(
                f"worker thread is in netns inode {now}, not the daemon's {self._own_inode}"
            )

    @staticmethod
    def _enter_named(path: str, inode: int) -> None:
        enter_netns(path, expect_inode=inode)

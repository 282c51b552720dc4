"""Pre-forked worker processes: `worker_processes = N` with N > 1.

One event loop runs on one core; on a host with more cores the daemon can
serve the GSS-Proxy sockets from N processes, each with its own loop,
accepting on the same listening sockets (no hop through a master). The
process tree::

    first process        the pid file's, the service manager's MAINPID;
    |                    serves, and alone serves the admin socket, the
    |                    p11kit_socket listeners, use-gss-proxy and sd_notify
    `- supervisor        no event loop, no thread: forks workers, re-forks
       |                 one that dies, forwards reload and stop
       |- worker 1       serves
       `- worker N-1     serves

Order at start (`server.cli`): the first process loads the configuration,
binds every GSS-Proxy socket (or takes the ones the service manager passed),
checks that it still runs a single thread (fork copies only the calling
thread: a lock another thread held would stay locked for ever in the child)
and forks the supervisor, which forks the workers. Only then does each
process build its programs (python-gssapi, PKCS#11 modules, executors), drop
privileges (`run_as_user`) and open the credential-handle key: every process
opens the same key file, and `gss.keyfile` creates it race-free, so a handle
sealed by one process opens in all.

The supervisor is a child of the first process, not the first process
itself, because the first process starts threads (executors) once it
serves, after which forking it again would be unsafe; the supervisor never
starts any. Each child asks the kernel for SIGTERM when its parent dies
(PR_SET_PDEATHSIG), so no worker outlives the daemon. The first process
watches the supervisor (a pidfd on its loop): one that ends unasked is
reaped and logged; its workers are gone with it, and the first process,
which runs threads by then, serves alone.

Reload: the first process loads and checks the new configuration; if it is
taken, it sends SIGHUP to the supervisor, which loads it for the workers it
will fork later and forwards SIGHUP to each worker, which reloads as a
single daemon does. The GSS-Proxy sockets cannot change while workers run
(a socket bound later could not reach them), so a configuration that adds,
removes or moves one is refused everywhere (`server.daemon`).

Stop: SIGTERM (or SIGINT, SIGQUIT) to the first process stops it and sends
SIGTERM to the supervisor, which forwards it and waits for the workers to
drain, then exits; the first process waits for the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from gssproxy_py.config.model import Config
from gssproxy_py.errors import LocalError
from gssproxy_py.server.activation import InheritedSocket, assign
from gssproxy_py.server.listeners import bind_socket, socket_paths
from gssproxy_py.server.privileges import PrivilegeDropError, set_dumpable

__all__ = [
    "STABLE_AFTER",
    "WorkerGroup",
    "WorkerSupervisor",
    "bind_rpc_sockets",
    "for_workers",
    "release",
    "restart_delay",
    "start_workers",
    "threads_running",
]

_log = logging.getLogger(__name__)

#: A worker that ran this long before dying is re-forked at once; one that
#: died sooner waits `restart_delay`, so a worker that cannot start does not
#: fork in a tight loop.
STABLE_AFTER = 10.0
MAX_RESTART_DELAY = 60.0
#: What the supervisor waits for besides a worker's exit.
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
_WATCHED = frozenset({signal.SIGCHLD, signal.SIGHUP, *_STOP_SIGNALS})
#: After the workers' shutdown grace, how long before SIGKILL.
_KILL_MARGIN = 5.0
_PR_SET_PDEATHSIG = 1


class WorkerStartError(LocalError):
    """Worker processes cannot be started (the daemon does not start)."""


def threads_running() -> int:
    """Threads of this process, as the kernel counts them (C threads too)."""
    return len(os.listdir("/proc/self/task"))


def bind_rpc_sockets(
    config: Config, default_socket: str, inherited: Sequence[InheritedSocket]
) -> list[InheritedSocket]:
    """Every GSS-Proxy socket path of `config`, listening now: the socket the
    service manager passed for a path, else one bound here (its `bound`
    identity set, so the first process unlinks it at the end). Raises
    `LocalError`; what was bound before the failure is released."""
    paths = socket_paths(config, default_socket)
    passed = assign(inherited, paths, default_socket)
    sockets: list[InheritedSocket] = []
    try:
        for path in paths:
            if path in passed:
                sockets.append(passed[path])
                continue
            sock, identity = bind_socket(path)
            sockets.append(InheritedSocket(sock.fileno(), path, sock, bound=identity))
    except LocalError:
        release(sockets)
        raise
    return sockets


def for_workers(sockets: Sequence[InheritedSocket]) -> list[InheritedSocket]:
    """The same sockets as a worker sees them: files it never unlinks."""
    return [dataclasses.replace(s, bound=None) for s in sockets]


def release(sockets: Sequence[InheritedSocket]) -> None:
    """Unlink the files bound here that are still ours (a start-up that
    failed before the listeners took them over); idempotent."""
    for item in sockets:
        if item.bound is None:
            continue
        with contextlib.suppress(OSError):
            st = os.lstat(item.path)
            if (st.st_dev, st.st_ino) == item.bound:
                os.unlink(item.path)


def restart_delay(quick_deaths: int) -> float:
    """Seconds before re-forking a slot whose workers died `quick_deaths`
    times in a row within `STABLE_AFTER` of their start: 0, 1, 2, 4 ... 60."""
    if quick_deaths <= 0:
        return 0.0
    return min(MAX_RESTART_DELAY, 2.0 ** (quick_deaths - 1))


def describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def die_with_parent(parent: int) -> None:
    """SIGTERM when the parent dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _child(run: Callable[[], int]) -> NoReturn:
    """Run `run` in a forked child and exit with its status: never return
    into the forking process's code."""
    code = 1
    try:
        code = run()
    except BaseException:
        _log.exception("process %d failed", os.getpid())
    finally:
        logging.shutdown()
        os._exit(code)


@dataclass
class _Slot:
    number: int
    pid: int | None = None
    started: float = 0.0
    quick_deaths: int = 0
    due: float = 0.0


@dataclass
class WorkerSupervisor:
    """The supervisor process's loop (see the module docstring).

    `run_worker(config, slot)` serves as the worker of `slot` (1..N-1)
    and returns its exit status;
    `reload_config()` reads the configuration again (raises on a bad one).
    """

    count: int
    run_worker: Callable[[Config, int], int]
    reload_config: Callable[[], Config]
    config: Config
    shutdown_grace: float
    slots: list[_Slot] = field(default_factory=list)
    stopping: bool = False

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        self.slots = [_Slot(n) for n in range(1, self.count)]
        for slot in self.slots:
            self._fork(slot)
        while True:
            info = signal.sigtimedwait(_WATCHED, self._wait_time())
            if info is not None and info.si_signo in _STOP_SIGNALS:
                return self._stop_all()
            if info is not None and info.si_signo == signal.SIGHUP:
                self._reload()
            self._reap()
            now = time.monotonic()
            for slot in self.slots:
                if slot.pid is None and slot.due <= now:
                    self._fork(slot)

    def _wait_time(self) -> float:
        due = [s.due for s in self.slots if s.pid is None]
        return max(0.0, min(due) - time.monotonic()) if due else 60.0

    @staticmethod
    def _backed_off(slot: _Slot, now: float) -> None:
        """A start that failed counts as a quick death: the slot is due
        after `restart_delay` (1s, 2s ...: no fork loop)."""
        slot.pid = None
        slot.quick_deaths += 1
        slot.due = now + restart_delay(slot.quick_deaths)

    def _fork(self, slot: _Slot) -> None:
        supervisor = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            # EAGAIN (RLIMIT_NPROC, pids cgroup) or ENOMEM: this slot waits
            # and tries again. An exception here would end the supervisor,
            # and with it every worker already serving (PR_SET_PDEATHSIG).
            self._backed_off(slot, time.monotonic())
            _log.error(
                "worker process %d of %d not started: fork: %s; trying again in %gs",
                slot.number + 1,
                self.count,
                exc.strerror,
                slot.due - time.monotonic(),
            )
            return
        if pid == 0:
            _child(lambda: self._worker(supervisor, slot.number))
        slot.pid, slot.started = pid, time.monotonic()
        _log.info("worker process %d started (%d of %d)", pid, slot.number + 1, self.count)

    def _worker(self, supervisor: int, slot: int) -> int:
        die_with_parent(supervisor)
        # SIGHUP stays blocked until the worker's loop handles it (the
        # worker unblocks it once ready): one sent while it starts is
        # pending, not fatal, and not lost.
        for signum in _WATCHED - {signal.SIGHUP}:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED - {signal.SIGHUP})
        return self.run_worker(self.config, slot)

    def _reload(self) -> None:
        try:
            self.config = self.reload_config()
        except Exception as exc:
            # The first process took it: only a change in between can fail.
            _log.error("supervisor: configuration not reloaded for new workers: %s", exc)
        else:
            # The workers forked from now on inherit it.
            try:
                set_dumpable(self.config.globals.allow_core_dumps)
            except PrivilegeDropError as exc:
                _log.error("supervisor: %s", exc)
        for slot in self.slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGHUP)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            if self.stopping:
                continue
            now = time.monotonic()
            slot.quick_deaths = 0 if now - slot.started >= STABLE_AFTER else slot.quick_deaths + 1
            delay = restart_delay(slot.quick_deaths)
            slot.due = now + delay
            _log.error(
                "worker process %d %s; starting another%s",
                pid,
                describe_exit(status),
                f" in {delay:g}s" if delay else "",
            )

    def _stop_all(self) -> int:
        self.stopping = True
        for slot in self.slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_grace + _KILL_MARGIN
        while any(s.pid is not None for s in self.slots):
            left = deadline - time.monotonic()
            if left <= 0:
                for slot in self.slots:
                    if slot.pid is not None:
                        _log.warning("worker process %d did not stop: killing it", slot.pid)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(slot.pid, signal.SIGKILL)
                deadline = time.monotonic() + _KILL_MARGIN
                continue
            signal.sigtimedwait({signal.SIGCHLD}, min(left, 0.5))
            self._reap()
        return 0


@dataclass
class WorkerGroup:
    """The first process's handle on the supervisor."""

    supervisor: int
    shutdown_grace: float
    _reaped: bool = False
    _stopping: bool = False

    def _signal(self, signum: int) -> None:
        if not self._reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.supervisor, signum)

    async def reload(self, _config: Config) -> None:
        """The first process took a new configuration: the workers reload."""
        self._signal(signal.SIGHUP)

    def stop(self) -> None:
        """Tell the workers to drain and stop (they do so in parallel with us)."""
        self._stopping = True
        self._signal(signal.SIGTERM)

    def watch(self) -> None:
        """On the first process's loop: reap and log a supervisor that ends
        before we stop it. Its workers end with it (PR_SET_PDEATHSIG), and
        this process, which runs threads by now, cannot fork them again."""
        try:
            fd = os.pidfd_open(self.supervisor)
        except OSError as exc:
            _log.warning("worker supervisor %d cannot be watched: %s", self.supervisor, exc)
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, self._ended, loop, fd)

    def _ended(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if self._reaped:
            return
        try:
            pid, status = os.waitpid(self.supervisor, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        self._reaped = True
        if self._stopping:
            if status:
                _log.warning("worker supervisor %d %s", pid, describe_exit(status))
            return
        _log.error(
            "worker supervisor %d %s, and its worker processes with it: this process "
            "serves alone until the daemon is restarted",
            pid,
            describe_exit(status),
        )

    def wait(self) -> None:
        """Stop the workers and wait until the supervisor has exited; SIGKILL
        after the grace (the workers then get SIGTERM from the kernel)."""
        self.stop()
        deadline = time.monotonic() + self.shutdown_grace + 2 * _KILL_MARGIN
        while not self._reaped:
            try:
                pid, status = os.waitpid(self.supervisor, os.WNOHANG)
            except ChildProcessError:
                self._reaped = True
                return
            if pid:
                self._reaped = True
                if status:
                    _log.warning("worker supervisor %d %s", pid, describe_exit(status))
                return
            if time.monotonic() > deadline:
                _log.warning("worker supervisor %d did not stop: killing it", self.supervisor)
                self._signal(signal.SIGKILL)
                deadline = time.monotonic() + _KILL_MARGIN
            time.sleep(0.05)


def start_workers(
    supervisor: WorkerSupervisor, in_child: Callable[[], None] = lambda: None
) -> WorkerGroup:
    """Fork the supervisor (which forks the workers); the first process's
    handle on it. `in_child` runs first in the supervisor (e.g. closing
    what belongs to the first process alone). Raises `WorkerStartError` if
    a thread already runs or the fork fails."""
    threads = threads_running()
    if threads != 1:
        raise WorkerStartError(
            f"worker_processes = {supervisor.count}: cannot fork, {threads} threads already run"
        )
    first = os.getpid()
    try:
        pid = os.fork()
    except OSError as exc:
        # The daemon does not start (`cannot start: ...`), as with threads.
        raise WorkerStartError(
            f"worker_processes = {supervisor.count}: cannot fork the supervisor: {exc.strerror}"
        ) from None
    if pid == 0:

        def supervise() -> int:
            die_with_parent(first)
            in_child()
            return supervisor.run()

        _child(supervise)
    _log.info("worker supervisor %d started", pid)
    return WorkerGroup(pid, supervisor.shutdown_grace)

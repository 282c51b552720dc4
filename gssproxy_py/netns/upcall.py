"""Enabling the kernel's gss-proxy upcall: `/proc/net/rpc/use-gss-proxy`.

The kernel file (per network namespace, created when auth_rpcgss loads) reads
`-1` (undecided), `0` (legacy: rpc.svcgssd) or `1` (gss-proxy). Writing `1`
makes the kernel connect to `/var/run/gssproxy.sock` and send a NULL call, in
the writer's context, before `write` returns; so the socket must already be
listening. The first RPCSEC_GSS context setup nfsd handles while the file
still reads `-1` latches `0` until reboot or until the namespace is
re-created; a later write then fails with EBUSY.

What gssproxy does, and so what we do, for `kernel_nfsd` services: after the
sockets listen and before readiness is announced, read the state and log it,
write `1`, read it back; if the file is missing (auth_rpcgss not loaded yet)
or the write fails, retry every 10 s; do it again on reload (writing `1` when
it already reads 1 replaces the kernel's client, so it reconnects to the
socket we have now). A latched `0` is an error with the remedy, not retried.

Layers, so each is testable without a kernel:

* `parse_state` and `attempt_enable` are the decision: pure apart from the
  `UpcallIO` they are given (`ProcFileIO` is the real one).
* `UpcallEnabler` schedules attempts for one namespace on the event loop; the
  blocking open/write runs on an executor thread that is in that namespace,
  and the sleep between retries is injectable.
* `KernelUpcalls` keeps one enabler per namespace the configuration asks for
  (see `named.upcall_targets`) across reloads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Protocol

from gssproxy_py.config.model import DEFAULT_USE_GSS_PROXY_FILE, Config
from gssproxy_py.netns.errors import NetnsError, UpcallError, UpcallLatchedError
from gssproxy_py.netns.executors import NetnsExecutors
from gssproxy_py.netns.named import NETNS_DIR, describe, list_named, upcall_targets
from gssproxy_py.netns.nsfs import thread_netns_inode, thread_proc_path

# gssproxy's retry period (commit fb8737b, 0.9.2).
DEFAULT_INTERVAL = 10.0
# Hard-coded in the kernel (GSSPROXY_SOCK_PATHNAME); /var/run links to /run.
KERNEL_SOCKET = "/var/run/gssproxy.sock"
LATCHED_REMEDY = (
    "nfsd chose rpc.svcgssd before gssproxy-py started: reboot, or restart the network"
    " namespace, and make sure gssproxy-py starts before nfsd"
)
# The kernel accepts at most 19 bytes; the state is at most "-1\n".
_READ_MAX = 64

_log = logging.getLogger(__name__)

SleepFn = Callable[[float], Awaitable[None]]


class UpcallState(IntEnum):
    """What `use-gss-proxy` reads."""

    UNDECIDED = -1
    LEGACY = 0
    GSSPROXY = 1

    def describe(self) -> str:
        return {
            UpcallState.UNDECIDED: "-1 (undecided)",
            UpcallState.LEGACY: "0 (legacy: rpc.svcgssd)",
            UpcallState.GSSPROXY: "1 (gss-proxy)",
        }[self]


def parse_state(raw: bytes) -> UpcallState:
    """The state in the text the kernel returns (`"-1\\n"`, `"0\\n"`, `"1\\n"`)."""
    text = raw.decode("ascii", "replace").strip()
    try:
        return UpcallState(int(text))
    except ValueError:
        raise UpcallError(f"unexpected use-gss-proxy contents {text[:20]!r}") from None


class Outcome(StrEnum):
    """How one attempt ended."""

    ENABLED = "enabled"  # wrote 1 and it reads 1
    ABSENT = "absent"  # no file (auth_rpcgss not loaded) or no namespace yet: retried
    FAILED = "failed"  # could not read or write (e.g. nothing listening): retried
    LATCHED = "latched"  # legacy mode until reboot or a new namespace: not retried


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt at enabling the upcall in one namespace.

    `path` is as configured, `opened` what was opened from the worker thread
    (`/proc/net/...` becomes `/proc/thread-self/net/...`). `thread_inode` is
    the network namespace the I/O ran in. `before`/`after` are the states
    read around the write (None: not read). `detail` is the log sentence.
    """

    outcome: Outcome
    path: str
    opened: str
    netns: str | None
    thread_inode: int | None
    before: UpcallState | None
    after: UpcallState | None
    detail: str
    errno: int | None = None

    @property
    def retry(self) -> bool:
        """Whether another attempt later may succeed."""
        return self.outcome in (Outcome.ABSENT, Outcome.FAILED)


class UpcallIO(Protocol):
    """The two blocking operations on the switch file; `ProcFileIO` is real."""

    def read(self, path: str) -> bytes: ...

    def write(self, path: str, data: bytes) -> None: ...


class ProcFileIO:
    """Plain open/read/write, as `echo 1 > use-gss-proxy` does.

    Never creates the file: its absence means auth_rpcgss is not loaded yet
    and must stay visible. O_TRUNC is what the shell uses (procfs ignores it)
    and keeps a regular stand-in file in the kernel's format.
    """

    def read(self, path: str) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.read(fd, _READ_MAX)
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            # The kernel parses the whole buffer at offset 0 in one write:
            # a short write would be a different number.
            if os.write(fd, data) != len(data):
                raise OSError(errno.EIO, "short write")
        finally:
            os.close(fd)


def _where(netns: str | None) -> str:
    return describe(netns)


def latched_message(path: str, netns: str | None) -> str:
    """The error for a latched `0`: what happened and what to do."""
    return f"{path} in {_where(netns)} reads 0: {LATCHED_REMEDY}"


def attempt_enable(
    path: str = DEFAULT_USE_GSS_PROXY_FILE,
    *,
    netns: str | None = None,
    io: UpcallIO | None = None,
) -> AttemptResult:
    """Read the state, write `1` unless latched, read it back. Blocking.

    Must run on a thread that is in the target namespace (`netns` only names
    it for the result). Never raises for the outcomes in `Outcome`.
    """
    fileio: UpcallIO = io if io is not None else ProcFileIO()
    opened = thread_proc_path(path)
    try:
        inode: int | None = thread_netns_inode()
    except OSError:
        inode = None
    where = _where(netns)

    def result(
        outcome: Outcome,
        detail: str,
        before: UpcallState | None = None,
        after: UpcallState | None = None,
        err: int | None = None,
    ) -> AttemptResult:
        return AttemptResult(outcome, path, opened, netns, inode, before, after, detail, err)

    try:
        before = parse_state(fileio.read(opened))
    except (FileNotFoundError, NotADirectoryError):
        return result(
            Outcome.ABSENT,
            f"{path} does not exist in {where} (auth_rpcgss not loaded yet?)",
            err=errno.ENOENT,
        )
    except OSError as exc:
        return result(
            Outcome.FAILED, f"cannot read {path} in {where}: {exc.strerror}", err=exc.errno
        )
    except UpcallError as exc:
        return result(Outcome.FAILED, f"{path} in {where}: {exc}")

    if before is UpcallState.LEGACY:
        return result(Outcome.LATCHED, latched_message(path, netns), before)

    try:
        fileio.write(opened, b"1")
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            # Latched between our read and our write.
            return result(Outcome.LATCHED, latched_message(path, netns), before, err=exc.errno)
        if exc.errno == errno.ENOENT and not os.path.exists(opened):
            return result(Outcome.ABSENT, f"{path} disappeared in {where}", before, err=exc.errno)
        return result(
            Outcome.FAILED,
            f"writing 1 to {path} in {where} failed ({errno.errorcode.get(exc.errno or 0, '?')}:"
            f" {exc.strerror}): the kernel could not connect to {KERNEL_SOCKET};"
            " a kernel_nfsd service must listen on /run/gssproxy.sock",
            before,
            err=exc.errno,
        )

    try:
        after: UpcallState | None = parse_state(fileio.read(opened))
    except (OSError, UpcallError):
        after = None
    if after is not UpcallState.GSSPROXY:
        shown = "nothing readable" if after is None else after.describe()
        return result(
            Outcome.FAILED, f"wrote 1 to {path} in {where} but it reads {shown}", before, after
        )
    return result(
        Outcome.ENABLED,
        f"{path} in {where} read {before.describe()}; wrote 1: nfsd sends RPCSEC_GSS"
        f" context setup to {KERNEL_SOCKET}",
        before,
        after,
    )


class UpcallEnabler:
    """Enables the upcall in one namespace and keeps retrying until it is.

    Server usage (after the sockets listen, before announcing readiness)::

        enabler = UpcallEnabler(config.globals.use_gss_proxy_file, netns=None)
        try:
            await enabler.ensure_enabled()   # one attempt now; retries in the background
        except UpcallLatchedError as exc:
            log.error("%s", exc)             # nothing to retry
        ...
        await enabler.ensure_enabled()       # on reload: again, at once
        enabler.stop()                       # on shutdown

    or `await enabler.run()` (until enabled) / `enabler.start()` (the same as
    a task). `netns` is a /run/netns name (None: the daemon's own); the
    blocking I/O runs on `executors.executor_for(netns)`, or for the own
    namespace without `executors` on the loop's default executor.
    `sleep(interval)` separates retries (injectable for tests);
    `on_result` sees every attempt.
    """

    def __init__(
        self,
        path: str = DEFAULT_USE_GSS_PROXY_FILE,
        *,
        netns: str | None = None,
        executors: NetnsExecutors | None = None,
        interval: float = DEFAULT_INTERVAL,
        log: logging.Logger | None = None,
        io: UpcallIO | None = None,
        sleep: SleepFn = asyncio.sleep,
        on_result: Callable[[AttemptResult], None] | None = None,
        netns_dir: str = NETNS_DIR,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.path = path
        self.netns = netns
        self.interval = interval
        self._log = log if log is not None else _log
        self._io = io
        self._sleep = sleep
        self._on_result = on_result
        self._executors = executors
        self._own_executors: NetnsExecutors | None = None
        self._netns_dir = netns_dir
        self._task: asyncio.Task[AttemptResult] | None = None
        self._last: AttemptResult | None = None
        self._last_logged: tuple[Outcome, str] | None = None

    @property
    def last(self) -> AttemptResult | None:
        """The most recent attempt's result."""
        return self._last

    @property
    def enabled(self) -> bool:
        return self._last is not None and self._last.outcome is Outcome.ENABLED

    @property
    def retrying(self) -> bool:
        """Whether a background retry is scheduled or running."""
        return self._task is not None and not self._task.done()

    async def attempt(self) -> AttemptResult:
        """One attempt now, on a thread in the namespace; logs; never raises."""
        try:
            executor = self._executor()
        except NetnsError as exc:
            res = AttemptResult(
                Outcome.ABSENT,
                self.path,
                self.path,
                self.netns,
                None,
                None,
                None,
                f"{self.path}: {exc}",
            )
        else:
            call = functools.partial(attempt_enable, self.path, netns=self.netns, io=self._io)
            loop = asyncio.get_running_loop()
            try:
                res = await loop.run_in_executor(executor, call)
            except concurrent.futures.BrokenExecutor as exc:
                # The worker could not enter the namespace (logged by the
                # executor); a re-created namespace gets a new executor.
                res = AttemptResult(
                    Outcome.FAILED,
                    self.path,
                    self.path,
                    self.netns,
                    None,
                    None,
                    None,
                    f"{self.path}: cannot enter {_where(self.netns)}: {exc}",
                )
        self._record(res)
        return res

    async def ensure_enabled(self) -> AttemptResult:
        """Attempt now; if it may work later, retry every `interval` in the background.

        Raises `UpcallLatchedError` (with the remedy) when the kernel latched
        legacy mode. Calling it again (reload) cancels a pending retry and
        attempts at once.
        """
        self._cancel()
        res = await self.attempt()
        if res.outcome is Outcome.LATCHED:
            raise UpcallLatchedError(res.detail)
        if res.retry:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(first_delay=True), name=f"use-gss-proxy retry ({_where(self.netns)})"
            )
        return res

    async def run(self) -> AttemptResult:
        """Attempt until enabled; `UpcallLatchedError` if latched."""
        res = await self._loop(first_delay=False)
        if res.outcome is Outcome.LATCHED:
            raise UpcallLatchedError(res.detail)
        return res

    def start(self) -> asyncio.Task[AttemptResult]:
        """`run()` as a task, whose result is the last attempt (ENABLED or LATCHED)."""
        self._cancel()
        self._task = asyncio.get_running_loop().create_task(
            self._loop(first_delay=False), name=f"use-gss-proxy ({_where(self.netns)})"
        )
        return self._task

    async def settled(self) -> AttemptResult | None:
        """Wait for the background retry, if any, and return the last result."""
        task = self._task
        if task is None:
            return self._last
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # stop() or a new ensure_enabled() cancelled the retry; we
            # were not cancelled ourselves.
            if task.cancelled():
                return self._last
            raise

    def stop(self) -> None:
        """Cancel retries and release the enabler's own executors, if any."""
        self._cancel()
        if self._own_executors is not None:
            self._own_executors.shutdown(wait=False)
            self._own_executors = None

    async def _loop(self, *, first_delay: bool) -> AttemptResult:
        if first_delay:
            await self._sleep(self.interval)
        while True:
            res = await self.attempt()
            if not res.retry:
                return res
            await self._sleep(self.interval)

    def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()

    def _executor(self) -> concurrent.futures.Executor | None:
        if self._executors is not None:
            return self._executors.executor_for(self.netns)
        if self.netns is None:
            return None  # the loop's default executor: threads in our own netns
        if self._own_executors is None:
            self._own_executors = NetnsExecutors(netns_dir=self._netns_dir)
        return self._own_executors.executor_for(self.netns)

    def _record(self, res: AttemptResult) -> None:
        self._last = res
        if self._on_result is not None:
            self._on_result(res)
        # The same failure every 10 s is logged once at its level, then at
        # debug, so a machine without nfsd does not fill the log.
        key = (res.outcome, res.detail)
        repeat = key == self._last_logged
        self._last_logged = key
        if res.outcome is Outcome.ENABLED:
            self._log.info("use-gss-proxy: %s", res.detail)
            self._last_logged = None
        elif res.outcome is Outcome.LATCHED:
            self._log.error("use-gss-proxy: %s", res.detail)
        else:
            if res.before is not None:
                self._log.debug("use-gss-proxy: %s reads %s", res.path, res.before.describe())
            level = (
                logging.DEBUG
                if repeat
                else (logging.WARNING if res.outcome is Outcome.ABSENT else logging.ERROR)
            )
            self._log.log(
                level, "use-gss-proxy: %s; retrying every %g s", res.detail, self.interval
            )


class KernelUpcalls:
    """The enablers a configuration asks for, one per namespace, across reloads.

    Server usage::

        upcalls = KernelUpcalls(executors=netns_executors)
        results = await upcalls.apply(config)   # after listen, before READY; again on reload
        ...
        upcalls.stop()

    `apply` makes one attempt per target now (logging each; a latched
    namespace is logged as an error and reported in the results, not
    raised) and leaves retries running in the background. Namespaces no
    longer wanted stop being retried; the kernel keeps whatever it has.
    """

    def __init__(
        self,
        *,
        executors: NetnsExecutors | None = None,
        netns_dir: str = NETNS_DIR,
        interval: float = DEFAULT_INTERVAL,
        log: logging.Logger | None = None,
        io: UpcallIO | None = None,
        sleep: SleepFn = asyncio.sleep,
        on_result: Callable[[AttemptResult], None] | None = None,
        list_namespaces: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self._executors = executors
        self._netns_dir = netns_dir
        self._interval = interval
        self._log = log if log is not None else _log
        self._io = io
        self._sleep = sleep
        self._on_result = on_result
        self._list = list_namespaces or (lambda: list_named(netns_dir))
        self._enablers: dict[str | None, UpcallEnabler] = {}

    @property
    def enablers(self) -> Mapping[str | None, UpcallEnabler]:
        return dict(self._enablers)

    async def apply(self, config: Config) -> tuple[AttemptResult, ...]:
        """Enable the upcall wherever `config`'s kernel_nfsd services need it."""
        services = config.services
        named: Sequence[str] = ()
        if any(s.kernel_nfsd and s.netns_all for s in services):
            named = self._list()
        targets = upcall_targets(services, named)
        path = config.globals.use_gss_proxy_file
        wanted = {t.netns for t in targets}
        for ns in list(self._enablers):
            if ns not in wanted or self._enablers[ns].path != path:
                self._enablers.pop(ns).stop()
        results: list[AttemptResult] = []
        for target in targets:
            enabler = self._enablers.get(target.netns)
            if enabler is None:
                enabler = UpcallEnabler(
                    path,
                    netns=target.netns,
                    executors=self._executors,
                    interval=self._interval,
                    log=self._log,
                    io=self._io,
                    sleep=self._sleep,
                    on_result=self._on_result,
                    netns_dir=self._netns_dir,
                )
                self._enablers[target.netns] = enabler
            try:
                results.append(await enabler.ensure_enabled())
            except UpcallLatchedError:
                # Already logged with the remedy by the enabler.
                last = enabler.last
                assert last is not None
                results.append(last)
        return tuple(results)

    async def settled(self) -> tuple[AttemptResult, ...]:
        """Wait for every background retry; the last result of each enabler."""
        out = []
        for enabler in list(self._enablers.values()):
            res = await enabler.settled()
            if res is not None:
                out.append(res)
        return tuple(out)

    def stop(self) -> None:
        """Stop every enabler (no more retries)."""
        for enabler in self._enablers.values():
            enabler.stop()
        self._enablers.clear()

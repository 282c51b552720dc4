"""The running daemon: listeners, connections, the configuration in force,
per-call service matching and deadlines, reload, idle exit and shutdown.

`GssProxyServer` is the host every `RpcConnection` calls back into. It owns
the one mutable piece of state, the `Config` in force: a call is matched
against the configuration current when it is dispatched, so a reload applies
to the next call on connections that are already open.

A caller no service matches is still dispatched, with `service=None` and the
reason from `explain_no_match`; the program answers in its own protocol (the
GSS layer returns a GSS error carrying the reason). gssproxy closes the
connection instead, which tells the client nothing.

`serve` runs a server with signal handling, as the command line does:
SIGHUP reloads, SIGTERM/SIGINT/SIGQUIT stop. It is also usable in-process
(tests, embedding) without signals.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gssproxy_py import compiled
from gssproxy_py.admin.paths import admin_socket_path
from gssproxy_py.admin.stats import CallCounters
from gssproxy_py.config.load import load_config
from gssproxy_py.config.model import Config, Service
from gssproxy_py.config.peer import Peer
from gssproxy_py.errors import ConfigError, LocalError
from gssproxy_py.gss import failure_log, keyfile, keytabs
from gssproxy_py.p11kit.model import Backend
from gssproxy_py.pkcs11.program import TokenSignBackend
from gssproxy_py.ratelimit import RateLimitedLog
from gssproxy_py.rpc.dispatch import ProgramService
from gssproxy_py.server.activation import InheritedSocket, adopt_listener, assign
from gssproxy_py.server.admin import AdminEndpoint, encode_process_status
from gssproxy_py.server.admission import (
    Admission,
    BudgetLimits,
    ConnectionCaps,
    InputBudget,
    log_refusal,
    open_fd_count,
    raise_fd_limit,
)
from gssproxy_py.server.calls import CallStarter
from gssproxy_py.server.connection import ConnectionLimits, RpcConnection
from gssproxy_py.server.fairness import TurnScheduler
from gssproxy_py.server.listeners import (
    Listener,
    open_listener,
    p11kit_socket_paths,
    socket_paths,
    unreachable_sockets,
)
from gssproxy_py.server.logs import (
    READY_MESSAGE,
    RELOADED_MESSAGE,
    WORKER_READY_MESSAGE,
    effective_debug_level,
    set_debug_level,
    set_status_syslog,
)
from gssproxy_py.server.namespaces import NamespaceSupport
from gssproxy_py.server.notify import notify
from gssproxy_py.server.p11kit import P11KitConnection, P11KitViews, load_p11kit_views
from gssproxy_py.server.p11kit_workers import P11KitWorkers
from gssproxy_py.server.peer import peer_credentials, selinux_enabled
from gssproxy_py.server.privileges import (
    PrivilegeDropError,
    apply_allow_core_dumps,
    drop_privileges,
    give_state_dir,
    reclaim_state_dir,
    set_dumpable,
)
from gssproxy_py.server.programs import load_programs
from gssproxy_py.server.status_channel import StatusGatherer, answer_status_requests
from gssproxy_py.server.workers import WorkerGroup
from gssproxy_py.server.writers import ACCEPTS_PER_TURN, ACCEPTS_PER_TURN_SHARED

_log = logging.getLogger(__name__)

#: How long a stopping daemon waits for calls in flight.
DEFAULT_SHUTDOWN_GRACE = 5.0
#: How often connections are checked for slow records and idleness, at most.
MAX_TIMEOUT_TICK = 5.0
#: How often the counts of log lines kept silent are looked at: a count is
#: logged within this long after its interval ended with no line to carry it.
REPEAT_REPORT_TICK = 1.0


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What the command line decides; the rest comes from the configuration."""

    config_file: str | None
    config_dir: str | None
    default_socket: str
    #: the level `-d`/`--debug-level` set; None lets the configuration's
    #: `debug`/`debug_level` set the root logger's level, now and on reload
    cli_debug_level: int | None = None
    #: exit after this many seconds without any connection (None: never);
    #: the command line sets it only for a socket-activated userproxy daemon
    idle_timeout: float | None = None
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    #: `--syslog-status`: on whatever the configuration says
    syslog_status: bool = False
    #: `-u`: the configuration is synthesised (`config.userproxy`); there is
    #: nothing to reload, and SIGHUP is ignored as in gssproxy
    userproxy: bool = False
    #: processes serving the GSS-Proxy sockets (`server.workers`); above 1
    #: the sockets are fixed at start and a reload may not change them
    worker_processes: int = 1
    #: False in a worker process: the admin socket, the p11kit_socket
    #: listeners and use-gss-proxy are the first process's alone
    first_process: bool = True


class GssProxyServer:
    """Listeners and connections around one `Config`, replaced on reload."""

    def __init__(
        self,
        config: Config,
        programs: Mapping[int, ProgramService],
        options: ServerOptions,
        inherited: Sequence[InheritedSocket] = (),
        *,
        p11kit_tokens: P11KitViews | None = None,
        p11kit_workers: P11KitWorkers | None = None,
    ) -> None:
        self._config = config
        self._p11kit = p11kit_tokens
        self._p11kit_workers = p11kit_workers
        #: passed sockets (socket activation) not yet serving a path
        self._inherited = list(inherited)
        self._programs = dict(programs)
        self._options = options
        self._selinux = selinux_enabled()
        self._listeners: dict[str, Listener] = {}
        self._kinds: dict[str, bool] = {}  # path -> serves p11-kit
        self._connections: set[RpcConnection | P11KitConnection] = set()
        self._numbers = itertools.count(1)
        self._reload_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # What `gssproxy-py-ctl status` reports (server.admin).
        self.counters = CallCounters()
        self._calls = CallStarter(
            config,
            default_socket=options.default_socket,
            selinux_enabled=self._selinux,
            counters=self.counters,
        )
        #: what connections call for each routed call (`calls.CallStarter`)
        self.start_call = self._calls.start_call
        # Tenant isolation: caps per uid and in total, the input budget, and
        # the periodic check of slow records and idle connections.
        self._fd_limit, _ = raise_fd_limit()
        self._fd_base = open_fd_count()
        self._admission = Admission(self._caps(config))
        self._budget: InputBudget[RpcConnection] = InputBudget(self._budget_limits(config))
        self._refusal_log = RateLimitedLog(config.globals.refusal_log_interval)
        self._budget_log = RateLimitedLog(config.globals.refusal_log_interval)
        self._timeout_timer: asyncio.TimerHandle | None = None
        self._repeat_timer: asyncio.TimerHandle | None = None
        self._turns: TurnScheduler[RpcConnection] = _turns(config)
        self._turn_scheduled = False
        #: awaited with the new configuration after each successful reload
        self.reload_hooks: list[Callable[[Config], Awaitable[object]]] = []
        #: called once the shutdown starts (the worker processes drain too)
        self.stop_hooks: list[Callable[[], None]] = []
        self.started = time.monotonic()
        #: 1 for the configuration read at start, +1 per successful reload
        self.generation = 1
        #: why the last reload failed, for the admin program's answer
        self.last_reload_error: str | None = None

    # -- read by connections (ConnectionHost) -----------------------------------

    @property
    def services(self) -> Mapping[int, ProgramService]:
        return self._programs

    @property
    def selinux_enabled(self) -> bool:
        return self._selinux

    @property
    def socket_paths(self) -> list[str]:
        return list(self._listeners)

    @property
    def config(self) -> Config:
        return self._config

    @property
    def default_socket(self) -> str:
        return self._options.default_socket

    def p11kit_backend(self, service: Service, who: str) -> Backend | None:
        """The p11-kit view of `service` for one connection (None: the token
        layer is unavailable, or the service uses no token)."""
        if self._p11kit is None or service.pkcs11_module is None:
            return None
        return self._p11kit.view(service, who)

    @property
    def p11kit_workers(self) -> P11KitWorkers | None:
        return self._p11kit_workers

    def connection_limits(self) -> ConnectionLimits:
        g = self._config.globals
        return ConnectionLimits(g.max_record_size, g.max_calls_per_connection)

    def _caps(self, config: Config) -> ConnectionCaps:
        g = config.globals
        return ConnectionCaps(
            max_connections=g.max_connections,
            max_connections_per_uid=g.max_connections_per_uid,
            fd_reserve=g.fd_reserve,
            fd_capacity=self._fd_limit - self._fd_base,
        )

    @staticmethod
    def _budget_limits(config: Config) -> BudgetLimits:
        g = config.globals
        # One whole record of the largest size must always fit.
        floor = g.max_record_size + 4
        return BudgetLimits(
            total=max(g.input_budget, floor), per_uid=max(g.input_budget_per_uid, floor)
        )

    def calls_waiting(self, conn: RpcConnection) -> None:
        uid = conn.peer_uid
        if uid is None:
            return
        # Nothing waits: start at once, no extra hop for a quiet daemon.
        quiet = not self._turn_scheduled and self._turns.idle
        if quiet and not conn.start_calls(self._turns.calls_per_connection)[1]:
            return
        self._turns.add(conn, uid, conn.calls_queued, first=conn.from_kernel)
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._run_turn)

    def _run_turn(self) -> None:
        """One turn of `server.fairness`; another after I/O while work waits."""
        self._turn_scheduled = False
        if self._turns.turn(_start_calls):
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._run_turn)

    def admit(self, conn: RpcConnection | P11KitConnection, peer: Peer) -> bool:
        refusal = self._admission.refusal(peer.uid)
        if refusal is None:
            self._admission.opened(peer.uid)
            return True
        now = asyncio.get_running_loop().time()
        log_refusal(_log, self._refusal_log, now, conn.socket_path, peer, refusal)
        return False

    def input_buffered(self, conn: RpcConnection, size: int) -> None:
        uid = conn.peer_uid
        if uid is None:
            return
        for victim in self._budget.set(conn, uid, size):
            suppressed = self._budget_log.admit(asyncio.get_running_loop().time())
            why = (
                f"uid {victim.peer_uid} over its share of the input budget"
                if victim is conn
                else f"the input budget is spent; uid {victim.peer_uid} buffers the most"
            )
            if suppressed is not None:
                _log.warning(
                    "[conn %d] dropping a partial record: %s%s",
                    victim.number,
                    why,
                    f" ({suppressed} more dropped since the last such line)" if suppressed else "",
                )
            victim.drop_partial_record(why)

    def _check_timeouts(self) -> None:
        g = self._config.globals
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self._connections):
            conn.check_timeouts(now, g.record_timeout, g.idle_connection_timeout)
        self._timeout_timer = loop.call_later(self._timeout_tick(), self._check_timeouts)

    def _report_repeats(self, *, final: bool = False) -> None:
        """Log the counts of lines kept silent whose interval ended with no
        next line to say them (all of them when `final`): a burst followed
        by silence is reported, not forgotten."""
        now = math.inf if final else asyncio.get_running_loop().time()
        failure_log.flush_repeats(math.inf if final else None)
        for limit, what in (
            (self._refusal_log, "connections refused"),
            (self._budget_log, "partial records dropped"),
        ):
            suppressed = limit.flush(now)
            if suppressed:
                _log.warning(
                    "and %d more %s since the last such line (in the last %g s)",
                    suppressed,
                    what,
                    limit.interval,
                )
        if not final:
            self._repeat_timer = asyncio.get_running_loop().call_later(
                REPEAT_REPORT_TICK, self._report_repeats
            )

    def _timeout_tick(self) -> float:
        g = self._config.globals
        shortest = min(t for t in (g.record_timeout, g.idle_connection_timeout) if t > 0)
        # A quarter of the shortest timeout: a deadline is kept within 25 %.
        return min(MAX_TIMEOUT_TICK, shortest / 4)

    def connection_opened(self, conn: RpcConnection | P11KitConnection) -> None:
        self._connections.add(conn)
        self._all_closed.clear()
        self._cancel_idle_timer()

    def connection_closed(self, conn: RpcConnection | P11KitConnection) -> None:
        if conn.peer_uid is not None:
            self._admission.closed(conn.peer_uid)
        if isinstance(conn, RpcConnection):
            self._budget.forget(conn)
        if isinstance(conn, RpcConnection):
            self._turns.discard(conn)
        self._connections.discard(conn)
        if not self._connections:
            self._all_closed.set()
            self._arm_idle_timer()

    def rematch_p11kit_on_loop(self, config: Config) -> None:
        """After a reload: the p11-kit connections served on the loop (no
        service) whose peer `config` gives a service are closed
        (`P11KitConnection.rematched`)."""
        for conn in list(self._connections):
            if isinstance(conn, P11KitConnection):
                conn.rematched(config)

    # -- read by the admin program (server.admin) ------------------------------

    @property
    def options(self) -> ServerOptions:
        return self._options

    def next_connection_number(self) -> int:
        """The next `[conn N]` number; admin connections draw from it too."""
        return next(self._numbers)

    def connection_counts(self) -> tuple[dict[int, int], int]:
        """Open connections per peer uid, and the calls in flight on them."""
        by_uid: dict[int, int] = {}
        in_flight = 0
        for conn in self._connections:
            uid = conn.peer_uid
            if uid is not None:
                by_uid[uid] = by_uid.get(uid, 0) + 1
            in_flight += conn.calls_in_flight
        return by_uid, in_flight

    # -- listeners ---------------------------------------------------------------

    def needs_writer_credentials(self, sock: socket.socket) -> bool:
        """Whether an accepted connection is read with the writer's
        credentials on each message (`server.writers`): when its uid could
        match a service that names a `program`, which the exec race could
        otherwise fool (issue 14, item 7)."""
        uid = peer_credentials(sock)[1]
        return any(
            s.program is not None and (s.allow_any_uid or s.euid == uid)
            for s in self._config.services
        )

    def _protocol_factory(self, path: str) -> Callable[[], RpcConnection]:
        return lambda: RpcConnection(self, path, next(self._numbers))

    def _p11kit_factory(self, path: str) -> Callable[[], P11KitConnection]:
        return lambda: P11KitConnection(self, path, next(self._numbers))

    async def _listen(self, config: Config) -> bool:
        """Make the listeners match `config`: keep unchanged paths, open new
        ones, then close and unlink the ones no longer wanted. If any new one
        fails, the ones just opened are closed and nothing else changes."""
        rpc_paths = socket_paths(config, self._options.default_socket)
        p11kit_paths = p11kit_socket_paths(config) if self._options.first_process else []
        opened: dict[str, Listener] = {}
        try:
            both = set(rpc_paths) & set(p11kit_paths)
            if both:
                raise LocalError(f"{sorted(both)[0]}: both a socket and a p11kit_socket")
            await self._open_p11kit(p11kit_paths, opened)
            await self._open_rpc(rpc_paths, opened)
        except LocalError as exc:
            _log.error("%s", exc)
            for listener in opened.values():
                listener.stop()
                listener.remove_file()
            return False
        self._stop_listening_but_on(rpc_paths + p11kit_paths)
        for path in opened:
            self._kinds[path] = path in p11kit_paths
            _log.info("listening on %s%s", path, " (p11-kit)" if self._kinds[path] else "")
        self._listeners.update(opened)
        for warning in unreachable_sockets(config, self._options.default_socket):
            _log.warning("%s", warning)
        return True

    async def _open_p11kit(self, paths: list[str], opened: dict[str, Listener]) -> None:
        """Open the p11kit_socket listeners not open yet, into `opened`."""
        for path in paths:
            if not self._kinds.get(path, True):
                raise LocalError(f"{path}: cannot turn a socket into a p11kit_socket")
            if path not in self._listeners:
                opened[path] = await open_listener(path, self._p11kit_factory(path))

    async def _open_rpc(self, paths: list[str], opened: dict[str, Listener]) -> None:
        """Open the RPC listeners not open yet, into `opened`: on the socket
        the service manager passed for a path if there is one (the first
        time only), else bound here."""
        for path in paths:
            if self._kinds.get(path, False):
                raise LocalError(f"{path}: cannot turn a p11kit_socket into a socket")
        passed = assign(self._inherited, paths, self._options.default_socket)
        self._inherited = []
        for path in paths:
            if path in passed:
                item = passed[path]
                opened[path] = await adopt_listener(
                    path,
                    item,
                    self._protocol_factory(path),
                    self.needs_writer_credentials,
                    ACCEPTS_PER_TURN_SHARED
                    if self._options.worker_processes > 1
                    else ACCEPTS_PER_TURN,
                )
                if item.bound is None and self._options.first_process:
                    _log.info("socket activation: %s is passed descriptor %d", path, item.fd)
            elif path not in self._listeners:
                opened[path] = await open_listener(
                    path,
                    self._protocol_factory(path),
                    needs_writer=self.needs_writer_credentials,
                )

    def _stop_listening_but_on(self, wanted: list[str]) -> None:
        """Close and unlink every listener whose path is not `wanted`."""
        for path in [p for p in self._listeners if p not in wanted]:
            self._kinds.pop(path, None)
            listener = self._listeners.pop(path)
            listener.stop()
            listener.remove_file()
            _log.info("stopped listening on %s", path)

    async def start(self) -> None:
        """Listen on every configured socket. Raises `LocalError` if one fails."""
        if not await self._listen(self._config):
            raise LocalError("cannot listen on every configured socket")
        # What is open now (listeners, logs, the loop) is not for connections.
        self._fd_base = open_fd_count()
        self._admission.caps = self._caps(self._config)
        caps = self._admission.caps
        _log.info(
            "descriptor limit %d: up to %d connections of non-root peers, %d of one uid",
            self._fd_limit,
            caps.non_root_limit,
            min(caps.max_connections_per_uid, caps.non_root_limit),
        )
        self._timeout_timer = asyncio.get_running_loop().call_later(
            self._timeout_tick(), self._check_timeouts
        )
        self._report_repeats()
        self._arm_idle_timer()

    # -- reload --------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the configuration and apply it; on any error keep the old
        one (and its sockets) and log why. True if the new one is in force."""
        async with self._reload_lock:
            if self._stop.is_set():
                return False
            if self._options.userproxy:
                _log.info("userproxy mode: no configuration to reload")
                self.last_reload_error = "userproxy mode has no configuration to reload"
                return False
            notify("RELOADING=1")
            try:
                return await self._reload()
            finally:
                notify("READY=1")

    async def _reload(self) -> bool:
        opts = self._options
        _log.info("reloading the configuration")
        loop = asyncio.get_running_loop()
        # Reading files and resolving user names may block (NSS): not on the loop.
        read = functools.partial(
            load_config, opts.config_file, opts.config_dir, default_socket=opts.default_socket
        )
        try:
            config = await loop.run_in_executor(None, read)
        except ConfigError as exc:
            _log.error("configuration not reloaded, keeping the old one: %s", exc)
            self.last_reload_error = str(exc)
            return False
        except Exception as exc:
            _log.exception("configuration not reloaded, keeping the old one")
            self.last_reload_error = f"unexpected error: {exc!r}"
            return False
        for warning in config.warnings:
            _log.warning("%s", warning)
        for warning in keytabs.check_services(config):
            _log.warning("%s", warning)
        problem = self._fixed_sockets_problem(config)
        if problem is not None:
            _log.error("configuration not reloaded, keeping the old one: %s", problem)
            self.last_reload_error = problem
            return False
        if not await self._listen(config):
            _log.error("configuration not reloaded, keeping the old one: a socket failed")
            self.last_reload_error = "a socket failed (see the daemon log)"
            return False
        self._config = config
        self._calls.config = config
        self.generation += 1
        self.last_reload_error = None
        self._admission.caps = self._caps(config)
        self._budget.limits = self._budget_limits(config)
        g = config.globals
        self._turns.calls_per_connection = g.turn_calls_per_connection
        self._turns.calls_per_uid = g.turn_calls_per_uid
        self._turns.calls_per_turn = g.turn_calls
        self._turns.time_slice = g.turn_time_us / 1e6
        for rate_limited in (self._refusal_log, self._budget_log):
            rate_limited.interval = config.globals.refusal_log_interval
        if opts.cli_debug_level is None:
            set_debug_level(effective_debug_level(None, config.globals.debug_level))
        set_status_syslog(opts.syslog_status or config.globals.syslog_status)
        try:
            apply_allow_core_dumps(config.globals.allow_core_dumps, _log)
        except PrivilegeDropError as exc:
            _log.error("%s", exc)
        for program in self._programs.values():
            if program.reload is not None:
                try:
                    program.reload(config)
                except Exception:
                    _log.exception("program %d failed to reload", program.program.number)
        await self._run_reload_hooks(config)
        _log.info("%s", RELOADED_MESSAGE)
        return True

    async def _run_reload_hooks(self, config: Config) -> None:
        """Each hook on its own: one that fails (a bug, logged) must not
        keep the next from running (the p11-kit workers' rematch ends those
        whose service the reload revoked)."""
        for hook in self.reload_hooks:
            try:
                await hook(config)
            except Exception:
                _log.exception("reload: %s failed", getattr(hook, "__qualname__", hook))

    def _fixed_sockets_problem(self, config: Config) -> str | None:
        """Why `config` cannot be taken while worker processes run (None: it
        can): a socket bound now could not reach the processes forked at
        start. A change of `worker_processes` itself waits for a restart."""
        opts = self._options
        if config.globals.worker_processes != opts.worker_processes:
            _log.warning(
                "worker_processes = %d takes effect at the next start (%d now)",
                config.globals.worker_processes,
                opts.worker_processes,
            )
        if opts.worker_processes == 1:
            return None
        old = set(socket_paths(self._config, opts.default_socket))
        new = set(socket_paths(config, opts.default_socket))
        if old == new:
            return None
        changes = [f"+{p}" for p in sorted(new - old)] + [f"-{p}" for p in sorted(old - new)]
        return (
            f"with worker_processes = {opts.worker_processes} the GSS-Proxy sockets are "
            f"fixed at start ({', '.join(changes)}); restart the daemon to change them"
        )

    def request_reload(self) -> None:
        """Reload in the background (the SIGHUP handler)."""
        self._spawn(self.reload())

    # -- idle exit -------------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        timeout = self._options.idle_timeout
        if timeout is None or self._connections or self._stop.is_set():
            return
        self._cancel_idle_timer()
        self._idle_timer = asyncio.get_running_loop().call_later(timeout, self._idle_expired)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        # The line gssproxy logs, which its userproxy test suite looks for.
        _log.info("Terminating, after idling for %g seconds", self._options.idle_timeout or 0)
        self.request_stop()

    # -- stopping ------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        """Return once `request_stop` was called and the shutdown finished."""
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, let calls in flight finish (for a bounded time),
        remove the socket files, close every connection."""
        self._stop.set()
        for hook in self.stop_hooks:
            hook()
        self._cancel_idle_timer()
        if self._timeout_timer is not None:
            self._timeout_timer.cancel()
        if self._repeat_timer is not None:
            self._repeat_timer.cancel()
            self._report_repeats(final=True)
        notify("STOPPING=1")
        await self._let_reload_finish()
        for listener in self._listeners.values():
            listener.stop()
        await self._let_calls_finish()
        for listener in self._listeners.values():
            listener.remove_file()
        self._listeners.clear()
        await self._close_connections()
        self._close_programs()

    async def _let_reload_finish(self) -> None:
        """A reload in progress finishes first (none starts once stopping), so
        no listener is being opened while the others are closed. A reload
        stuck in a user lookup must not hold the shutdown up for ever."""
        try:
            await asyncio.wait_for(
                self._reload_lock.acquire(), timeout=self._options.shutdown_grace
            )
        except TimeoutError:
            _log.warning("shutting down while a reload is still running")
        else:
            self._reload_lock.release()

    async def _let_calls_finish(self) -> None:
        """Drop the calls received and not started; give the running ones
        `shutdown_grace` seconds."""
        dropped = sum(conn.stop_accepting_calls() for conn in self._connections)
        if dropped:
            _log.info("shutting down: %d received calls not started", dropped)
        waits = [
            asyncio.ensure_future(c.wait_calls()) for c in self._connections if c.calls_in_flight
        ]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=self._options.shutdown_grace)
        if late:
            _log.warning(
                "shutting down with calls still running after %gs", self._options.shutdown_grace
            )
            for waiting in late:
                waiting.cancel()

    async def _close_connections(self) -> None:
        for conn in list(self._connections):
            conn.close()
        if self._connections:
            # Let the replies already written reach the peers.
            with_grace = asyncio.wait_for(self._all_closed.wait(), timeout=1.0)
            try:
                await with_grace
            except TimeoutError:
                _log.warning("%d connections did not close in time", len(self._connections))

    def _close_programs(self) -> None:
        for program in self._programs.values():
            if program.close is not None:
                try:
                    program.close()
                except Exception:
                    _log.exception("program %d failed to close", program.program.number)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def handle_key_problem(state_dir: str) -> str | None:
    """None if the credential-handle key in `state_dir` opens (it is created
    when missing); otherwise what is wrong and how to fix it."""
    path = os.path.join(state_dir, keyfile.HANDLE_KEYS_FILE)
    try:
        keyfile.load_or_create(path)
    except keyfile.KeyFileError as exc:
        euid = os.geteuid()
        return (
            f"{exc}; fix: {path} must be a regular file of uid {euid} (the daemon's user) "
            f"with mode 0600, in a directory uid {euid} can reach and write (chown/chmod), or "
            "remove it to start with a new key (credential handles issued under the old "
            "one stop working)"
        )
    return None


class _NoAdmin:
    """A worker's stand-in for the admin endpoint it does not serve."""

    async def close(self) -> None:
        return None


_NO_ADMIN = _NoAdmin()


def _turns(config: Config) -> TurnScheduler[RpcConnection]:
    g = config.globals
    return TurnScheduler(
        g.turn_calls_per_uid, g.turn_calls_per_connection, g.turn_calls, g.turn_time_us / 1e6
    )


def _start_calls(conn: RpcConnection, limit: int) -> tuple[int, bool]:
    return conn.start_calls(limit)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


async def _listen_with_admin(
    server: GssProxyServer,
    config: Config,
    options: ServerOptions,
    namespaces: NamespaceSupport,
    token_backend: TokenSignBackend | None,
    worker_status: StatusGatherer | None,
) -> AdminEndpoint | _NoAdmin | None:
    """Listen on every call socket, then on the admin socket (the first
    process only); None (logged, the server shut down) if one of them fails."""
    if not options.first_process:
        try:
            await server.start()
        except LocalError as exc:
            _log.error("cannot start: %s", exc)
            await server.shutdown()
            return None
        return _NO_ADMIN
    admin = AdminEndpoint(
        server,
        admin_socket_path(config.globals.admin_socket, options.default_socket),
        allowed_uids=frozenset({0, os.geteuid()} if options.userproxy else {0}),
        namespaces=namespaces,
        tokens=token_backend.sessions if token_backend is not None else None,
        worker_status=worker_status,
    )
    try:
        await server.start()
        await admin.open()  # once the call sockets listen
    except LocalError as exc:
        _log.error("cannot start: %s", exc)
        await server.shutdown()
        return None
    return admin


async def _start_namespaces(
    server: GssProxyServer,
    config: Config,
    namespaces: NamespaceSupport,
    workers: WorkerGroup | None,
) -> None:
    """Listening, not yet dropped privileges or ready (see server.namespaces):
    the namespaces' executor threads, and in the first process the kernel
    upcall; the reload (and stop) hooks that follow them and the workers."""
    if workers is not None:
        server.reload_hooks.append(workers.reload)
        server.stop_hooks.append(workers.stop)
        workers.watch()
    if server.options.first_process:
        await namespaces.start(config)
        server.reload_hooks.append(namespaces.apply)
    else:
        namespaces.prestart(config)  # the upcall is the first process's


def _become_configured_user(config: Config) -> bool:
    """With run_as_user: give it the state directory and drop privileges
    (after the sockets exist and before any call is served, as gssproxy);
    False (logged) if that fails. Without it, as root: take the state
    directory back if an earlier run_as_user had it."""
    user = config.globals.run_as_user
    if not user:
        if os.geteuid() == 0:
            _reclaim_state_dir(config.globals.state_dir)
        return True
    try:
        give_state_dir(config.globals.state_dir, user)
        uid, _ = drop_privileges(user)
        # The change of uid made it the kernel's suid_dumpable (0 by default).
        set_dumpable(config.globals.allow_core_dumps)
    except (PrivilegeDropError, KeyError, OSError) as exc:
        _log.error("cannot run as %s: %s", user, exc)
        return False
    _log.info("running as %s (uid %d), keeping only CAP_SYS_PTRACE", user, uid)
    return True


def _reclaim_state_dir(state_dir: str) -> None:
    try:
        previous = reclaim_state_dir(state_dir)
    except OSError as exc:
        previous = None
        _log.warning("cannot take %s back: %s", state_dir, exc)
    if previous is not None:
        _log.warning(
            "run_as_user is off: %s belonged to uid %d (run_as_user was on); it is root's again",
            state_dir,
            previous,
        )


def _p11kit_serving(
    token_backend: TokenSignBackend,
    p11kit_tokens: P11KitViews | None,
    config: Config,
    options: ServerOptions,
) -> tuple[P11KitViews, P11KitWorkers | None]:
    """The p11-kit token service rides on the TOKEN_SIGN backend, served in
    worker processes, one per connection (server.p11kit_workers); only the
    first process has the p11kit_socket listeners."""
    if p11kit_tokens is None:
        p11kit_tokens = load_p11kit_views(token_backend)
    if not options.first_process:
        return p11kit_tokens, None
    return p11kit_tokens, P11KitWorkers(token_backend, config.globals.refusal_log_interval)


def _start_p11kit_workers(
    workers: P11KitWorkers | None, server: GssProxyServer, config: Config
) -> None:
    """As the daemon's final user, before any call: the zygote that forks a
    worker per p11kit_socket connection (server.p11kit_workers), and the
    re-match of the workers at each reload."""
    if workers is None:
        return
    if p11kit_socket_paths(config):
        workers.start()

    async def rematch(new: Config) -> None:
        server.rematch_p11kit_on_loop(new)
        await workers.rematch(new, server.default_socket, server.selinux_enabled)

    server.reload_hooks.append(rematch)


def _answer_status(
    server: GssProxyServer, channel: tuple[int, socket.socket] | None
) -> Callable[[], None]:
    """In a worker process: answer the first process's STATUS requests on
    `channel` (slot, socket); what stops it (nothing to stop without one)."""
    if channel is None:
        return lambda: None
    slot, sock = channel
    return answer_status_requests(sock, functools.partial(encode_process_status, server, slot))


async def serve(
    config: Config,
    options: ServerOptions,
    *,
    programs: Mapping[int, ProgramService] | None = None,
    handle_signals: bool = True,
    on_ready: Callable[[], None] | None = None,
    inherited: Sequence[InheritedSocket] = (),
    p11kit_tokens: P11KitViews | None = None,
    workers: WorkerGroup | None = None,
    worker_status: StatusGatherer | None = None,
    status_channel: tuple[int, socket.socket] | None = None,
) -> int:
    """Run the daemon until it is told to stop; the exit status.

    `programs` defaults to `load_programs(config)` with the daemon's
    namespace executors (`server.namespaces`). Once the sockets listen, and
    before run_as_user drops privileges and `Initialization complete` is
    logged, the namespaces' executor threads are started and
    `use-gss-proxy` is written for kernel_nfsd services; again on every
    successful reload. With `handle_signals`, SIGHUP reloads and
    SIGTERM/SIGINT/SIGQUIT stop (main thread only). `inherited` are the
    sockets the service manager passed (`server.activation`), each used for
    the path it is bound to instead of binding one. `on_ready` runs once
    every socket listens, after `Initialization complete` is logged.
    `workers` (the first process of `worker_processes` > 1) reload after
    each successful reload and stop when it stops (`server.workers`); in a
    worker (`options.first_process` false) there is no admin socket and no
    use-gss-proxy write. `worker_status` (the first process) asks the
    workers for their counters at each admin STATUS; `status_channel`
    (slot, socket) is where a worker answers (`server.status_channel`).
    """
    loop = asyncio.get_running_loop()
    # Namespace executors (shared with the GSS layer) and use-gss-proxy.
    namespaces = NamespaceSupport(config)
    token_backend: TokenSignBackend | None = None
    p11kit_workers: P11KitWorkers | None = None
    if programs is None:
        try:
            loaded = load_programs(config, netns_executors=namespaces.executors)
        except Exception:
            _log.exception("cannot start: the programs could not be built")
            namespaces.close()
            return 1
        programs, token_backend = loaded.programs, loaded.token_backend
        p11kit_tokens, p11kit_workers = _p11kit_serving(
            token_backend, p11kit_tokens, config, options
        )
    server = GssProxyServer(
        config,
        programs,
        options,
        inherited,
        p11kit_tokens=p11kit_tokens,
        p11kit_workers=p11kit_workers,
    )
    admin = await _listen_with_admin(
        server, config, options, namespaces, token_backend, worker_status
    )
    if admin is None:
        namespaces.close()
        return 1
    await _start_namespaces(server, config, namespaces, workers)
    if not _become_configured_user(config):
        await server.shutdown()
        await admin.close()
        namespaces.close()
        return 1
    problem = handle_key_problem(config.globals.state_dir)
    if problem is not None:
        # Fail now, not with every call that needs a credential handle.
        _log.error("cannot start: %s", problem)
        await server.shutdown()
        namespaces.close()
        return 1
    _start_p11kit_workers(p11kit_workers, server, config)
    # As the daemon's final user: what it cannot read now, no call will.
    for warning in keytabs.check_services(config):
        _log.warning("%s", warning)
    if handle_signals:
        loop.add_signal_handler(signal.SIGHUP, server.request_reload)
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, server.request_stop)
    # Which build runs: a stale mypyc build (the .py files run instead) is worth a warning.
    stale_build, build_line = compiled.describe()
    _log.log(logging.WARNING if stale_build else logging.DEBUG, "python modules: %s", build_line)
    stop_answering = _answer_status(server, status_channel)
    # A worker's line is another: tools wait for the first process's.
    _log.info("%s", READY_MESSAGE if options.first_process else WORKER_READY_MESSAGE)
    notify("READY=1")
    if on_ready is not None:
        on_ready()
    try:
        await server.wait_stopped()
    finally:
        stop_answering()
        if p11kit_workers is not None:
            await p11kit_workers.close()
        await admin.close()
        if handle_signals:
            for signum in (signal.SIGHUP, *_STOP_SIGNALS):
                loop.remove_signal_handler(signum)
        namespaces.close()
    _log.info("stopped")
    return 0

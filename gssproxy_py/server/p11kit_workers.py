"""The daemon's side of the p11-kit worker processes: one per connection.

The daemon accepts each `p11kit_socket` connection on its loop, reads the
peer and applies the admission caps (`server.p11kit`), matches the service,
and hands the connection to the zygote (`server.p11kit_zygote`), which
forks a worker that serves it alone, module calls and all, on its own
core. `P11KitWorkers` keeps the table of live workers (pid, peer,
service), which:

* caps them: beyond `p11kit_max_workers` in all, or
  `p11kit_max_workers_per_uid` for one uid other than root, a connection
  is refused, with one rate-limited line naming uid, pid and program;
* re-matches each worker's peer at a reload and ends (SIGTERM) the workers
  whose service, or that service's keys, mechanisms, module or PIN,
  changed: a uid the new configuration no longer serves loses its access,
  and the reload is done (logged as loaded) once those workers have exited;
* logs once a worker that died other than by our hand (its connection
  alone is closed) and closes the daemon's record of the connection;
* ends every worker at stop (the end of the pair ends the zygote, which
  ends them).

The zygote is a fresh interpreter started with `subprocess` (fork and
exec), so it carries none of the daemon's threads or modules whenever it is
started; the daemon starts it at start-up, after dropping privileges, and
again if it died. The PIN goes with a hand-off in a pipe of its own, which
the zygote passes on unread to the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gssproxy_py.config.match import match_or_explain
from gssproxy_py.config.model import Config, Service
from gssproxy_py.config.peer import Peer
from gssproxy_py.pkcs11.errors import SignFailure
from gssproxy_py.pkcs11.pin import Pin
from gssproxy_py.pkcs11.program import TokenSignBackend
from gssproxy_py.ratelimit import RateLimitedLog
from gssproxy_py.server.admission import log_refusal
from gssproxy_py.server.connection import PrefixLog
from gssproxy_py.server.fairness import ROOT_UID
from gssproxy_py.server.p11kit_zygote import MAX_MESSAGE, Handoff

__all__ = ["HandedOff", "P11KitWorkers", "WorkerRow"]

_log = logging.getLogger("gssproxy_py.server.p11kit")

ZYGOTE_MODULE: Final = "gssproxy_py.server.p11kit_zygote"
#: Seconds the daemon waits for the zygote to end at stop.
_STOP_WAIT: Final = 10.0
#: Seconds a reload waits for the workers it ended to exit (a SIGTERM ends
#: them at once: only a stalled machine takes long).
_END_WAIT: Final = 10.0


class HandedOff(Protocol):
    """The daemon's record of a connection a worker serves."""

    number: int
    socket_path: str

    def worker_ended(self) -> None:
        """The worker is gone: the connection is closed."""
        ...


@dataclass(slots=True)
class _Worker:
    token: int
    conn: HandedOff
    peer: Peer
    service: Service | None
    pin: Pin | None
    pid: int | None = None
    ending: bool = False  # the daemon asked it to end (reload, stop)
    #: set once it has exited (or never started, or its zygote is gone)
    gone: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One live worker, for `gssproxy-py-ctl status` and tests."""

    pid: int | None  # None until the zygote says it forked
    connection: int
    peer: Peer
    service: str | None


def _view(service: Service | None) -> tuple[object, ...] | None:
    """What a worker was given of its service: a change ends it."""
    if service is None:
        return None
    return (
        service.name,
        service.pkcs11_module,
        service.pkcs11_uris,
        service.pkcs11_pin,
        service.p11kit_mechanisms,
        service.pkcs11_session_keys,
    )


def _same_pin(a: Pin | None, b: Pin | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.same_as(b))


def _pin_pipe(pin: Pin) -> int:
    """The read end of a pipe holding `pin` and nothing more (the write end
    closed): what the worker reads its PIN from."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        data = pin.reveal().encode()
        # A PIN is far below the pipe's buffer (64 KiB), so this never blocks.
        if os.write(w, data) != len(data):
            raise OSError("the PIN did not fit in a pipe")
    except OSError:
        os.close(r)
        raise
    finally:
        os.close(w)
    return r


def _when_ended(zygote: subprocess.Popen[bytes], then: Callable[[int], None]) -> None:
    """`then(status)` once `zygote` has exited, reaped (no zombie left): at
    once if it has, else when its pidfd says so. The end of the pair can
    come before the exit."""
    status = zygote.poll()
    if status is not None:
        then(status)
        return
    try:
        fd = os.pidfd_open(zygote.pid)
    except OSError:
        return  # reaped with the next zygote's start (subprocess's own clean-up)
    loop = asyncio.get_running_loop()

    def ended() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        then(zygote.wait())  # it has exited: this only reaps it

    loop.add_reader(fd, ended)


def _log_zygote_end(status: int) -> None:
    _log.error("the p11-kit worker zygote ended (status %s); starting a new one", status)


def _who(peer: Peer) -> str:
    return f"uid {peer.uid} pid {peer.pid} program {peer.program or '(unknown)'}"


class P11KitWorkers:
    """The live p11-kit workers and the zygote that forks them."""

    def __init__(self, token_backend: TokenSignBackend | None, refusal_log_interval: float) -> None:
        self._backend = token_backend
        self._control: socket.socket | None = None
        self._zygote: subprocess.Popen[bytes] | None = None
        self._tokens = itertools.count(1)
        self._pending: dict[int, _Worker] = {}  # by hand-off token
        self._live: dict[int, _Worker] = {}  # by pid
        self._refusals = RateLimitedLog(refusal_log_interval)
        self._closing = False

    # -- the zygote -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the zygote runs (it does once a p11kit_socket listens)."""
        return self._zygote is not None

    def start(self) -> None:
        """Start the zygote if it is not running."""
        if self._zygote is not None or self._closing:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._zygote = subprocess.Popen(
                # -P: `-m` would put the working directory first on sys.path,
                # so a daemon started with -i from a directory others can
                # write would import their json.py (as root) in the zygote.
                [sys.executable, "-P", "-m", ZYGOTE_MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        _log.info("p11-kit worker zygote started: pid %d", self._zygote.pid)

    def _drop_control(self) -> None:
        control = self._control
        if control is None:
            return
        self._control = None
        asyncio.get_running_loop().remove_reader(control.fileno())
        control.close()

    def _zygote_lost(self) -> None:
        """The zygote ended without being asked: its workers' connections
        are gone too (or will be), and the next hand-off starts a new one."""
        self._drop_control()
        zygote, self._zygote = self._zygote, None
        if zygote is not None and not self._closing:
            _when_ended(zygote, _log_zygote_end)
        for w in [*self._pending.values(), *self._live.values()]:
            w.conn.worker_ended()
            w.gone.set()
        self._pending.clear()
        self._live.clear()

    # -- hand-offs ----------------------------------------------------------------

    def hand_off(
        self, conn: HandedOff, peer: Peer, service: Service | None, fd: int, config: Config
    ) -> bool:
        """Give connection `fd` to a new worker; False (logged) if refused."""
        g = config.globals
        self._refusals.interval = g.refusal_log_interval
        refusal = None
        workers = [*self._pending.values(), *self._live.values()]
        if len(workers) >= g.p11kit_max_workers:
            refusal = f"{g.p11kit_max_workers} p11-kit workers are running (p11kit_max_workers)"
        elif peer.uid != ROOT_UID and (
            sum(1 for w in workers if w.peer.uid == peer.uid) >= g.p11kit_max_workers_per_uid
        ):
            refusal = (
                f"uid {peer.uid} holds {g.p11kit_max_workers_per_uid} p11-kit workers "
                "(p11kit_max_workers_per_uid)"
            )
        elif self._closing:
            refusal = "the daemon is stopping"
        if refusal is None:
            try:
                self.start()
                refusal = self._send(conn, peer, service, fd, config)
            except OSError as exc:
                refusal = f"cannot start a p11-kit worker: {exc}"
        if refusal is None:
            return True
        log = PrefixLog(_log, f"[p11kit {conn.number}]")
        now = asyncio.get_running_loop().time()
        log_refusal(log, self._refusals, now, conn.socket_path, peer, refusal)
        return False

    def _send(
        self, conn: HandedOff, peer: Peer, service: Service | None, fd: int, config: Config
    ) -> str | None:
        control = self._control
        assert control is not None
        token = next(self._tokens)
        handoff, pin = self._handoff(token, conn, peer, service, config)
        message = handoff.encode()
        if len(message) > MAX_MESSAGE:
            # The zygote would read it cut short, fail to parse it and end,
            # and every worker with it.
            return f"the hand-off is {len(message)} bytes, over the zygote's {MAX_MESSAGE}"
        try:
            fds = [fd]
            if pin is not None:
                fds.append(_pin_pipe(pin))
            try:
                socket.send_fds(control, [message], fds)
            finally:
                for extra in fds[1:]:
                    os.close(extra)
        except OSError as exc:
            return f"the p11-kit worker zygote took no connection: {exc}"
        self._pending[token] = _Worker(token, conn, peer, service, pin)
        return None

    def _handoff(
        self, token: int, conn: HandedOff, peer: Peer, service: Service | None, config: Config
    ) -> tuple[Handoff, Pin | None]:
        base: dict[str, Any] = {
            "token": token,
            "number": conn.number,
            "socket_path": conn.socket_path,
            "who": _who(peer),
            "log_level": logging.getLogger().getEffectiveLevel(),
            "record_timeout": config.globals.record_timeout,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": tuple(os.getgroups()),
        }
        if service is None:
            return Handoff(**base), None
        base |= {
            "service": service.name,
            "pkcs11_module": service.pkcs11_module,
            "pkcs11_uris": service.pkcs11_uris,
            "p11kit_mechanisms": service.p11kit_mechanisms,
            "pkcs11_session_keys": service.pkcs11_session_keys,
        }
        if self._backend is None or service.pkcs11_module is None:
            return Handoff(**base, failure=f"service {service.name} has no pkcs11_module"), None
        try:
            access, _ = self._backend.service_worker(service)
        except SignFailure as f:
            return Handoff(**base, failure=str(f)), None
        pin = access.pin
        return (
            Handoff(
                **base,
                has_pin=pin is not None,
                pin_source=pin.source if pin is not None else "",
                pin_problem=access.pin_problem,
            ),
            pin,
        )

    def end(self, conn: HandedOff) -> None:
        """Ask the worker serving `conn` to end (SIGTERM)."""
        for w in [*self._pending.values(), *self._live.values()]:
            if w.conn is conn:
                self._end(w)

    def _end(self, w: _Worker) -> None:
        w.ending = True
        if w.pid is None or self._control is None:
            return  # ended once the zygote says it forked
        with contextlib.suppress(OSError):  # the zygote is gone, and its workers with it
            self._control.send(json.dumps({"end": w.pid}).encode())

    # -- what the zygote says -------------------------------------------------------

    def _readable(self) -> None:
        control = self._control
        while control is not None:
            try:
                data = control.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._zygote_lost()
                return
            message = json.loads(data)
            if "spawned" in message:
                self._spawned(int(message["spawned"]), int(message["pid"]))
            elif "exited" in message:
                self._exited(int(message["exited"]), int(message["status"]))
            elif "failed" in message:
                self._failed(int(message["failed"]), str(message.get("error", "")))

    def _spawned(self, token: int, pid: int) -> None:
        w = self._pending.pop(token, None)
        if w is None:
            return
        w.pid = pid
        self._live[pid] = w
        _log.info(
            "[p11kit %d] worker pid %d serves %s, service %s",
            w.conn.number,
            pid,
            _who(w.peer),
            w.service.name if w.service is not None else "(none)",
        )
        if w.ending:
            self._end(w)

    def _failed(self, token: int, error: str) -> None:
        w = self._pending.pop(token, None)
        if w is None:
            return
        _log.error(
            "[p11kit %d] no worker for %s: %s; its connection is closed",
            w.conn.number,
            _who(w.peer),
            error,
        )
        w.conn.worker_ended()
        w.gone.set()

    def _exited(self, pid: int, status: int) -> None:
        w = self._live.pop(pid, None)
        if w is None:
            return
        signalled = os.WIFSIGNALED(status)
        how = (
            f"killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
            if signalled
            else f"exit status {os.WEXITSTATUS(status)}"
        )
        if (signalled or os.WEXITSTATUS(status) != 0) and not w.ending:
            _log.error(
                "[p11kit %d] worker pid %d (%s) ended: %s; only its connection is closed",
                w.conn.number,
                pid,
                _who(w.peer),
                how,
            )
        else:
            _log.info("[p11kit %d] worker pid %d ended: %s", w.conn.number, pid, how)
        w.conn.worker_ended()
        w.gone.set()

    # -- reload, status, stop -----------------------------------------------------------

    async def rematch(self, config: Config, default_socket: str, selinux_enabled: bool) -> None:
        """After a reload: end the workers whose peer's service, or what
        that service gives it, changed, and wait until they have exited
        (at most `_END_WAIT`): once the reload is reported, no worker
        serves a peer with what it no longer has (the zygote sends the
        SIGTERM; until the worker has it, it would answer its next call)."""
        ending = []
        for w in [*self._pending.values(), *self._live.values()]:
            service, _ = match_or_explain(
                config,
                w.peer,
                w.conn.socket_path,
                default_socket=default_socket,
                selinux_enabled=selinux_enabled,
                p11kit=True,
            )
            pin = None
            if service is not None and self._backend is not None and service.pkcs11_module:
                try:
                    pin = self._backend.service_worker(service)[0].pin
                except SignFailure:
                    pin = None
            if _view(service) == _view(w.service) and _same_pin(pin, w.pin):
                continue
            _log.info(
                "[p11kit %d] reload: %s now matches service %s (was %s), or its keys changed: "
                "ending worker pid %s",
                w.conn.number,
                _who(w.peer),
                service.name if service is not None else "(none)",
                w.service.name if w.service is not None else "(none)",
                w.pid if w.pid is not None else "(starting)",
            )
            self._end(w)
            ending.append(w)
        try:
            async with asyncio.timeout(_END_WAIT):
                for w in ending:
                    await w.gone.wait()
        except TimeoutError:
            _log.warning(
                "reload: p11-kit worker pid %s not ended after %ss",
                ", ".join(str(w.pid) for w in ending if not w.gone.is_set()),
                _END_WAIT,
            )

    def rows(self) -> list[WorkerRow]:
        return [
            WorkerRow(w.pid, w.conn.number, w.peer, w.service.name if w.service else None)
            for w in [*self._pending.values(), *self._live.values()]
        ]

    async def close(self) -> None:
        """End every worker and the zygote (the daemon is stopping)."""
        self._closing = True
        self._drop_control()  # the zygote sees the end and ends its workers
        zygote = self._zygote
        if zygote is not None:
            wait = functools.partial(zygote.wait, _STOP_WAIT)
            try:
                await asyncio.get_running_loop().run_in_executor(None, wait)
            except subprocess.TimeoutExpired:
                _log.warning("the p11-kit worker zygote did not end: killing it")
                zygote.kill()
                zygote.wait()
        self._zygote_lost()

"""Worker processes: program 400112's calls answered on several cores.

One interpreter runs Python on one core at a time, and most of a GSS call's
cost is Python (decoding, policy, conversions) or MIT calls that hand the
interpreter lock back and forth. With `--workers N` the daemon forks N
worker processes at start-up and answers GSS-Proxy calls in them, in
parallel -- also the calls that arrive on ONE connection, as the kernel
sends all nfsd upcalls (gssproxy serialises those).

Who does what:

* the daemon process (the master) keeps everything it had: listeners,
  connections, peer identity (SO_PEERCRED, /proc), framing, flow control,
  reload, idle exit, shutdown, run_as_user, and every program that is not
  offloaded (token signing stays here, with its PINs and PKCS#11 sessions);
* for an offloaded program it reads the call header, hands the whole record
  to an idle worker and writes the worker's reply back to the connection;
* a worker runs the full RPC routing, service matching and the handler
  (`calls.answer_call`, as in-process), one call at a time, with blocking
  GSSAPI work inline (`rpc.dispatch.allow_blocking`): nothing else shares
  its event loop, and the hop to a thread and back would cost more than
  most calls. The master gives each worker its next call ahead (`DEPTH`)
  and keeps the rest in arrival order (gssproxy's wait list is LIFO).

Workers are forked before any event loop or thread exists, after the
program modules are imported (their pages stay shared). What they share is
shared through files, which MIT and our key file already make safe across
processes: the handle key file in `state_dir` and the replay cache
(KRB5RCACHEDIR). Credential caches (`gss.credcache`) are per worker.

Messages on each worker's socketpair: a 16-byte header (kind, call id,
connection number, payload length) and the payload. Master to worker: PEER
(the connection's identity, once per worker and connection), CLOSE, CONFIG
(after a reload, ahead of every later call) and CALL (the record); worker to
master: REPLY (the reply record) and DROP (the call header was unreadable:
close the connection, as in-process).

Deadlines are the master's: a call without a reply after `call_timeout`
is answered SYSTEM_ERR (the worker stays busy until its call returns, as a
thread would). A worker that dies has its calls answered SYSTEM_ERR; the
others carry on, and with none left the master answers calls itself. On
shutdown the master closes the pipes once its calls are done; a worker exits
at end of file, and ignores the signals that the master handles (a service
manager may signal the whole group).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import importlib
import logging
import os
import pickle
import signal
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import uvloop

from gssproxy_py.config.model import Config
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM
from gssproxy_py.rpc.dispatch import ProgramService, allow_blocking
from gssproxy_py.rpc.messages import UndecodableCallError, reply_system_err, route
from gssproxy_py.server.calls import answer_call
from gssproxy_py.server.connection import ConnectionInfo, PrefixLog, WorkerDroppedError
from gssproxy_py.server.logs import effective_debug_level, set_debug_level, set_status_syslog
from gssproxy_py.server.peer import selinux_enabled
from gssproxy_py.server.programs import PROGRAMS, load_program

_log = logging.getLogger(__name__)

#: Programs whose calls go to the workers.
OFFLOADED: frozenset[int] = frozenset({GSSPROXY_PROGRAM.number})

_HEADER = struct.Struct(">BxxxIII")
HEADER_SIZE = _HEADER.size

K_CALL = 1
K_PEER = 2
K_CLOSE = 3
K_CONFIG = 4
K_REPLY = 5
K_DROP = 6

#: Calls a worker holds at once: the one it runs and the next, already in its
#: pipe, so it never waits for the master between two calls. (A slow call
#: delays at most the one call queued behind it; the rest wait in the master.)
DEPTH = 2

#: How long the master waits for workers to exit once their pipes are closed.
EXIT_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What a worker needs besides the configuration."""

    default_socket: str
    cli_debug_level: int | None
    syslog_status: bool


def _messages(buf: bytearray) -> list[tuple[int, int, int, bytes]]:
    """Take every complete message off the front of buf."""
    out = []
    pos = 0
    end = len(buf)
    while end - pos >= HEADER_SIZE:
        kind, call_id, conn, length = _HEADER.unpack_from(buf, pos)
        if end - pos - HEADER_SIZE < length:
            break
        start = pos + HEADER_SIZE
        out.append((kind, call_id, conn, bytes(buf[start : start + length])))
        pos = start + length
    if pos:
        del buf[:pos]
    return out


def _message(kind: int, call_id: int, conn: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, call_id, conn, len(payload)) + payload


# -- master side ---------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Job:
    future: asyncio.Future[bytes]
    conn: ConnectionInfo
    xid: int
    record: bytes
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Worker(asyncio.Protocol):
    """The master's end of one worker's socketpair."""

    pool: WorkerPool
    index: int
    pid: int
    sock: socket.socket
    transport: asyncio.Transport | None = None
    jobs: dict[int, _Job] = field(default_factory=dict)
    known: set[int] = field(default_factory=set)  # connection numbers it has the peer of
    buffer: bytearray = field(default_factory=bytearray)
    alive: bool = True
    started: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for kind, call_id, _, payload in _messages(self.buffer):
            self.pool._answered(self, kind, call_id, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._lost(self, exc)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class WorkerPool:
    """The master's view of the worker processes (see the module docstring)."""

    def __init__(self, children: list[tuple[int, socket.socket]]) -> None:
        self._workers = [
            _Worker(pool=self, index=i, pid=pid, sock=sock)
            for i, (pid, sock) in enumerate(children)
        ]
        self._queue: collections.deque[_Job] = collections.deque()
        self._ids = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    # -- start-up (before any loop) -------------------------------------------------

    @classmethod
    def fork(cls, count: int, config: Config, options: WorkerOptions) -> WorkerPool:
        """Fork `count` workers. Call before any event loop or thread exists."""
        for source in PROGRAMS:
            if source.table.number in OFFLOADED:
                # Imported once here, so the children share the module pages.
                with contextlib.suppress(Exception):
                    importlib.import_module(source.module)
        children: list[tuple[int, socket.socket]] = []
        for index in range(count):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                ours.close()
                for _, other in children:
                    other.close()
                _child_main(index, theirs, config, options)
            theirs.close()
            children.append((pid, ours))
        _log.info("%d worker processes: %s", count, ", ".join(str(p) for p, _ in children))
        return cls(children)

    async def start(self) -> None:
        """Attach the workers' pipes to the running loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        for w in self._workers:
            w.sock.setblocking(False)
            await loop.connect_accepted_socket(lambda w=w: w, w.sock)  # type: ignore[misc]
            w.started = True

    # -- state ----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return any(w.alive for w in self._workers)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.alive]

    # -- calls ----------------------------------------------------------------------

    def submit(
        self, conn: ConnectionInfo, xid: int, record: bytes, timeout: float
    ) -> asyncio.Future[bytes]:
        """Answer `record` in a worker; the future gets the reply record
        (SYSTEM_ERR on a deadline or a lost worker) or `WorkerDroppedError`."""
        assert self._loop is not None
        job = _Job(self._loop.create_future(), conn, xid, record)
        job.timer = self._loop.call_later(timeout, self._expired, job, timeout)
        worker = self._least_busy()
        if worker is not None:
            self._run(worker, job)
        else:
            self._queue.append(job)
        return job.future

    def _least_busy(self) -> _Worker | None:
        """The live worker with the fewest calls, if it can take one more."""
        best: _Worker | None = None
        for w in self._workers:
            if w.alive and w.started and (best is None or len(w.jobs) < len(best.jobs)):
                best = w
        return best if best is not None and len(best.jobs) < DEPTH else None

    def _run(self, worker: _Worker, job: _Job) -> None:
        self._ids = (self._ids + 1) & 0xFFFFFFFF
        conn = job.conn
        if conn.number not in worker.known:
            worker.known.add(conn.number)
            peer = pickle.dumps((conn.peer, conn.socket_path))
            worker.send(_message(K_PEER, 0, conn.number, peer))
        worker.jobs[self._ids] = job
        worker.send(_message(K_CALL, self._ids, conn.number, job.record))

    def _next(self, worker: _Worker) -> None:
        """worker has room: give it the oldest waiting call still wanted."""
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                self._run(worker, job)
                return

    def _answered(self, worker: _Worker, kind: int, call_id: int, payload: bytes) -> None:
        job = worker.jobs.pop(call_id, None)
        if job is not None:
            if job.timer is not None:
                job.timer.cancel()
            if not job.future.done():
                if kind == K_REPLY:
                    job.future.set_result(payload)
                else:
                    job.future.set_exception(WorkerDroppedError())
        if worker.alive and len(worker.jobs) < DEPTH:
            self._next(worker)

    def _expired(self, job: _Job, timeout: float) -> None:
        if job.future.done():
            return
        PrefixLog(_log, f"[conn {job.conn.number} xid {job.xid:#010x}]").error(
            "no result within %gs; replying SYSTEM_ERR", timeout
        )
        job.future.set_result(reply_system_err(job.xid))

    def _lost(self, worker: _Worker, exc: Exception | None) -> None:
        if not worker.alive:
            return
        worker.alive = False
        # Never wait here: on close() this runs before the pipe is really
        # closed, and the worker only exits once it sees the end of file.
        status = _reap(worker.pid, block=False)
        if status is None:
            status = "pipe closed"
            if not self._closing and self._loop is not None:
                self._loop.call_later(1.0, functools.partial(_reap, worker.pid, block=False))
        if worker.jobs or not self._closing:
            _log.error(
                "worker process %d ended (%s) with %d calls in progress; they get SYSTEM_ERR",
                worker.pid,
                status,
                len(worker.jobs),
            )
        for job in worker.jobs.values():
            if job.timer is not None:
                job.timer.cancel()
            if not job.future.done():
                job.future.set_result(reply_system_err(job.xid))
        worker.jobs.clear()
        while self._queue and (other := self._least_busy()) is not None:
            self._next(other)
        if not self.alive:
            if not self._closing:
                _log.error("no worker process left: answering calls in the daemon process")
            while self._queue:
                job = self._queue.popleft()
                if not job.future.done():
                    job.future.set_result(reply_system_err(job.xid))

    # -- connections and configuration ----------------------------------------------

    def connection_closed(self, number: int) -> None:
        for w in self._workers:
            if number in w.known:
                w.known.discard(number)
                if w.alive:
                    w.send(_message(K_CLOSE, 0, number))

    def reload(self, config: Config) -> None:
        """Every call sent from now on is answered under `config`."""
        data = _message(K_CONFIG, 0, 0, pickle.dumps(config))
        for w in self._workers:
            if w.alive:
                w.send(data)

    async def close(self, grace: float = EXIT_GRACE) -> None:
        """Close the pipes and wait for the workers to exit (killed after `grace`)."""
        self._closing = True
        for w in self._workers:
            if w.transport is not None:
                w.transport.close()
            else:
                w.sock.close()
        deadline = time.monotonic() + grace
        left = [w.pid for w in self._workers]
        while left:
            left = [pid for pid in left if _reap(pid, block=False) is None]
            if not left:
                break
            if time.monotonic() > deadline:
                for pid in left:
                    _log.warning("worker process %d did not exit; killing it", pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    _reap(pid)
                break
            await asyncio.sleep(0.01)


def _reap(pid: int, *, block: bool = True) -> str | None:
    """Collect a child's exit status, in words; None if it is still running."""
    try:
        got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return "already collected"
    if got == 0:
        return None
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


# -- worker side -----------------------------------------------------------------------


class _Master(asyncio.Protocol):
    """A worker's end of its socketpair: calls in, replies out."""

    def __init__(
        self, config: Config, services: Mapping[int, ProgramService], options: WorkerOptions
    ) -> None:
        self.config = config
        self.services = services
        self.options = options
        self.selinux = selinux_enabled()
        self.conns: dict[int, ConnectionInfo] = {}
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for kind, call_id, conn, payload in _messages(self.buffer):
            if kind == K_CALL:
                task = asyncio.get_running_loop().create_task(self.answer(call_id, conn, payload))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif kind == K_PEER:
                peer, path = pickle.loads(payload)  # noqa: S301 - our own master, private pipe
                self.conns[conn] = ConnectionInfo(conn, peer, path)
            elif kind == K_CLOSE:
                self.conns.pop(conn, None)
            elif kind == K_CONFIG:
                self.reload(pickle.loads(payload))  # noqa: S301 - our own master, private pipe

    def reload(self, config: Config) -> None:
        self.config = config
        set_debug_level(
            effective_debug_level(self.options.cli_debug_level, config.globals.debug_level)
        )
        set_status_syslog(self.options.syslog_status or config.globals.syslog_status)
        for program in self.services.values():
            if program.reload is not None:
                try:
                    program.reload(config)
                except Exception:
                    _log.exception("program %d failed to reload", program.program.number)

    async def answer(self, call_id: int, conn: int, record: bytes) -> None:
        kind = K_REPLY
        try:
            info = self.conns[conn]
            outcome = route(record, self.services)
            if isinstance(outcome, bytes):
                reply = outcome
            else:
                reply = await answer_call(
                    self.config,
                    info,
                    outcome,
                    default_socket=self.options.default_socket,
                    selinux_enabled=self.selinux,
                )
        except UndecodableCallError:
            kind, reply = K_DROP, b""
        except Exception:
            xid = int.from_bytes(record[:4], "big")
            _log.exception("[conn %d xid %#010x] internal error", conn, xid)
            reply = reply_system_err(xid)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_message(kind, call_id, conn, reply))


async def _serve_master(
    sock: socket.socket, config: Config, services: Mapping[int, ProgramService], opts: WorkerOptions
) -> int:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    master = _Master(config, services, opts)
    await loop.connect_accepted_socket(lambda: master, sock)
    await master.done
    if master.tasks:
        await asyncio.wait(set(master.tasks))
    for program in services.values():
        if program.close is not None:
            with contextlib.suppress(Exception):
                program.close()
    return 0


def _child_main(
    index: int, sock: socket.socket, config: Config, options: WorkerOptions
) -> NoReturn:  # pragma: no cover - runs in the child (tests drive it as a process)
    code = 1
    try:
        # The master decides about stopping and reloading; a service manager
        # may signal the whole process group, and a terminal's ^C reaches us too.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_IGN)
        allow_blocking(True)
        user = config.globals.run_as_user
        if user:
            from gssproxy_py.server.privileges import drop_privileges

            drop_privileges(user, keep=())
        services: dict[int, Any] = {}
        for source in PROGRAMS:
            if source.table.number in OFFLOADED:
                services[source.table.number] = load_program(source, config)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(_serve_master(sock, config, services, options))
    except BaseException:
        _log.exception("worker process %d failed", index)
    finally:
        logging.shutdown()
        os._exit(code)

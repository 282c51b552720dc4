"""The p11-kit worker processes: the zygote that forks them, and the
blocking loop each runs for its one connection.

The daemon starts the zygote (`python -m gssproxy_py.server.p11kit_zygote
FD`) as a fresh interpreter: it has no thread and no PKCS#11 module of the
daemon's (PKCS#11 forbids using a module initialised before a fork), and
it never talks to a client. Over its private SOCK_SEQPACKET pair (FD) the
daemon sends, per connection, a `Handoff` (JSON: the peer, the matched
service, the log level) with the connection's descriptor and, if the
service has a PIN, the read end of a pipe holding it (SCM_RIGHTS); the
zygote forks one worker for it and answers `{"spawned": token, "pid":
pid}` (or `{"failed": token, "error": why}` if it could not fork), and
`{"exited": pid, "status": s}` when a worker ends. `{"end": pid}` asks it
to SIGTERM a worker; the end of the pair (the daemon stopping or gone)
ends every worker and the zygote. The PIN travels only in that pipe, read
by the worker alone (never by the zygote, so no worker holds another
service's PIN): never in argv, the environment or a file. The zygote and
its workers are not dumpable (no core file, no ptrace by the daemon's
uid).

A worker takes the daemon's uid, gids and log level, initialises the
module itself (`ModuleWorker`, its calls made inline: the process has one
thread), logs in and reads the token, then drops every capability
(`privileges.drop_all_capabilities`: with no `run_as_user` it is root, and
the peer is not trusted), and only then serves the connection with a
plain loop: read, cut frames (`p11kit.wire`; a read that is exactly one
frame, the usual case, is taken whole), answer each with `p11kit.fast`
(the hot calls of a signature) or `p11kit.calls.dispatch` (the handlers
never wait here, so a coroutine ends at its first step), write the
replies of one read at once. A partial frame older than the record
timeout, a malformed frame or an internal error closes the connection;
the worker then exits. Its log lines go to the daemon's stderr in the
daemon's format (`server.logs`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Final, TypeVar

from gssproxy_py.config.model import Service
from gssproxy_py.p11kit.calls import call_id, dispatch
from gssproxy_py.p11kit.fast import NO_TOKEN, FastCalls, complete
from gssproxy_py.p11kit.model import InlineBackend
from gssproxy_py.p11kit.session import Cryptoki
from gssproxy_py.p11kit.wire import (
    PROTOCOL_VERSION,
    Frame,
    FrameReader,
    ProtocolError,
    encode_frame,
    lone_frame,
)
from gssproxy_py.pkcs11.adapter import load_library
from gssproxy_py.pkcs11.errors import SignFailure, TokenFailure
from gssproxy_py.pkcs11.p11kit_backend import P11KitTokens, ServiceTokens
from gssproxy_py.pkcs11.pin import Pin
from gssproxy_py.pkcs11.program import parse_service_uris
from gssproxy_py.pkcs11.token import ModuleWorker, ServiceAccess
from gssproxy_py.proto.token_sign import TsStatus
from gssproxy_py.server.connection import PrefixLog
from gssproxy_py.server.logs import configure_logging
from gssproxy_py.server.privileges import (
    drop_all_capabilities,
    set_dumpable,
    threads_with_capabilities,
)
from gssproxy_py.server.workers import die_with_parent

__all__ = ["MAX_MESSAGE", "Handoff", "main", "serve_connection"]

T = TypeVar("T")

_log = logging.getLogger("gssproxy_py.server.p11kit")

#: The largest control message either side sends.
MAX_MESSAGE: Final = 64 * 1024
#: Seconds the zygote gives its workers to end after SIGTERM at the end.
_END_GRACE: Final = 5.0
_READ_SIZE: Final = 64 * 1024
#: The hot loop's reads: a request of a signature is under 100 bytes, and a
#: buffer this small comes from malloc's small bins (64 KiB reads cost a
#: malloc_consolidate per request); a longer frame is not one read here,
#: so it goes on to the general loop, whose reads are `_READ_SIZE`.
_HOT_READ_SIZE: Final = 960


@dataclass(frozen=True, slots=True)
class Handoff:
    """What a worker needs to serve one connection (sent as JSON)."""

    token: int  # the daemon's name for this hand-off, echoed in "spawned"
    number: int  # the connection's `[p11kit N]`
    socket_path: str
    who: str  # "uid U pid P program X", for the log lines
    log_level: int  # the daemon's `logging` threshold now
    record_timeout: float
    uid: int
    gid: int
    groups: tuple[int, ...]
    service: str | None = None  # None: no service, no slot
    pkcs11_module: str | None = None
    pkcs11_uris: tuple[str, ...] = ()
    p11kit_mechanisms: tuple[str, ...] | None = None
    pkcs11_session_keys: bool = True
    # The PIN itself is not here: it comes in a pipe (the hand-off's second
    # descriptor) that only the worker reads.
    has_pin: bool = False
    pin_source: str = ""
    pin_problem: str | None = None
    failure: str | None = None  # why the service has no token access

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Handoff:
        raw = json.loads(data)
        for name in ("groups", "pkcs11_uris", "p11kit_mechanisms"):
            if raw.get(name) is not None:
                raw[name] = tuple(raw[name])
        return cls(**raw)


# -- the worker ---------------------------------------------------------------------


class InlineModuleWorker(ModuleWorker):
    """A `ModuleWorker` whose calls run on the calling thread: a worker
    process has only one, so the module's calls still never overlap."""

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return fn(*args)


class _OneService:
    """The token access of the one service a worker serves (what
    `P11KitTokens` asks of the TOKEN_SIGN backend in the daemon)."""

    def __init__(self, access: ServiceAccess | None, failure: str | None) -> None:
        self._access = access
        self._failure = failure or "no token access"
        self.worker = (
            InlineModuleWorker(access.module, load_library) if access is not None else None
        )

    def service_worker(self, service: Service) -> tuple[ServiceAccess, ModuleWorker]:
        if self._access is None or self.worker is None:
            raise TokenFailure(TsStatus.TS_TOKEN_UNAVAILABLE, self._failure)
        return self._access, self.worker


def _service_access(h: Handoff, pin_text: str | None) -> tuple[Service | None, _OneService]:
    if h.service is None:
        return None, _OneService(None, None)
    service = Service(
        name=h.service,
        euid=h.uid,
        mechs=(),
        pkcs11_module=h.pkcs11_module,
        pkcs11_uris=h.pkcs11_uris,
        p11kit_mechanisms=h.p11kit_mechanisms,
    )
    if h.failure is not None or h.pkcs11_module is None:
        return service, _OneService(None, h.failure)
    module = os.path.realpath(h.pkcs11_module)
    try:
        uris = parse_service_uris(service, module)
    except SignFailure as f:
        return service, _OneService(None, str(f))
    pin = Pin(pin_text, h.pin_source) if pin_text is not None else None
    access = ServiceAccess(
        h.service, module, uris, pin, h.pin_problem, h.pkcs11_module, h.pkcs11_session_keys
    )
    return service, _OneService(access, None)


def _generic(cryptoki: Cryptoki, code: int, body: bytes, log: PrefixLog) -> bytes | str:
    """The reply frame to one request by the generic dispatch, or why to
    close the connection (a str)."""
    # Request bodies are never logged: a consumer's C_Login has its PIN.
    try:
        return encode_frame(code, complete(dispatch(cryptoki, body)))
    except ProtocolError as exc:
        return f"closing: call {call_id(body)}: {exc}"
    except Exception:
        log.exception("call %d: internal error", call_id(body))
        return "closing after an internal error"


def _reply(
    fast: FastCalls, cryptoki: Cryptoki, code: int, body: bytes, log: PrefixLog
) -> bytes | str:
    """The reply frame to one request, or why to close the connection (a str)."""
    try:
        # The hot calls of a signature in their usual shape; the generic
        # dispatch answers everything else (the same bytes either way).
        reply = fast.frame(code, body)
    except Exception:
        log.exception("call %d: internal error", call_id(body))
        return "closing after an internal error"
    return reply if reply is not None else _generic(cryptoki, code, body, log)


def _answers(
    fast: FastCalls, cryptoki: Cryptoki, frames: list[Frame], log: PrefixLog
) -> tuple[list[bytes], str]:
    """The reply frames for `frames`, and why to close after them ("": go on)."""
    out: list[bytes] = []
    for frame in frames:
        reply = _reply(fast, cryptoki, frame.code, frame.body, log)
        if isinstance(reply, str):
            return out, reply
        out.append(reply)
    return out, ""


class _Timeout:
    """The socket's timeout, set only when it changes (each change is a
    system call, and requests come by the thousand)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._now: float | None = None
        sock.settimeout(None)

    def set(self, timeout: float | None) -> None:
        if timeout != self._now:
            self.sock.settimeout(timeout)
            self._now = timeout


def _receive(sock: socket.socket, log: PrefixLog, record_timeout: float) -> bytes:
    """The next bytes from the peer; b"" (logged) once the connection ends."""
    try:
        data = sock.recv(_READ_SIZE)
    except TimeoutError:
        log.warning("closing: a partial frame for %gs", record_timeout)
        return b""
    except OSError as exc:
        log.info("closed: %s", exc)
        return b""
    if not data:
        log.info("closed")
    return data


def _write(sock: socket.socket, data: bytes, log: PrefixLog) -> bool:
    """Write `data` whole; False (logged) if the connection is gone."""
    try:
        sock.sendall(data)
    except OSError as exc:
        log.info("closed: %s", exc)
        return False
    return True


def _hot_loop(
    sock: socket.socket, fast: FastCalls, cryptoki: Cryptoki, log: PrefixLog
) -> bytes | None:
    """Answer requests that each come in one read, exactly one frame (a
    consumer that waits for each reply, the usual case), with the fewest
    Python calls: one `recv`, `lone_frame`, `FastCalls.frame` (or the
    generic dispatch), one `sendall`. Returns the first read that
    is not one such frame, for the general loop; None once the
    connection has ended or must close (logged)."""
    recv = sock.recv
    sendall = sock.sendall
    hot = fast.frame
    while True:
        try:
            data = recv(_HOT_READ_SIZE)
        except OSError as exc:  # no timeout: nothing is buffered here
            log.info("closed: %s", exc)
            return None
        lone = lone_frame(data)
        if lone is None:
            if not data:
                log.info("closed")
                return None
            return data
        code, body = lone
        try:
            reply = hot(code, body)
        except Exception:
            log.exception("call %d: internal error", call_id(body))
            log.warning("closing after an internal error")
            return None
        if reply is None:
            answer = _generic(cryptoki, code, body, log)
            if isinstance(answer, str):
                log.warning("%s", answer)
                return None
            reply = answer
        try:
            sendall(reply)
        except OSError as exc:
            log.info("closed: %s", exc)
            return None


def _general(
    reader: FrameReader,
    fast: FastCalls,
    cryptoki: Cryptoki,
    data: bytes,
    timeout: _Timeout,
    log: PrefixLog,
) -> bool:
    """Cut `data` into frames with what was buffered, answer them, write
    the replies at once; False (logged) when the connection must close."""
    had_version = reader.version is not None
    try:
        frames = reader.feed(data)
    except ProtocolError as exc:
        log.warning("closing: %s", exc)
        return False
    out, problem = _answers(fast, cryptoki, frames, log)
    if not had_version and reader.version is not None:
        # min(client, ours): a newer client then speaks our version.
        out.insert(0, bytes((min(reader.version, PROTOCOL_VERSION),)))
    if out:
        timeout.set(None)  # the record timeout is for reading a frame
        if not _write(timeout.sock, out[0] if len(out) == 1 else b"".join(out), log):
            return False
    if problem:
        log.warning("%s", problem)
        return False
    return True


def serve_connection(
    sock: socket.socket,
    cryptoki: Cryptoki,
    log: PrefixLog,
    record_timeout: float,
    inline: InlineBackend = NO_TOKEN,
) -> None:
    """Answer the frames of one connection until it ends or goes wrong
    (`inline`: the backend's signatures and decryptions, done at once)."""
    reader = FrameReader()
    fast = FastCalls(cryptoki, inline)
    timeout = _Timeout(sock)
    while True:
        data: bytes | None
        if reader.version is not None and not reader.pending:
            # Between frames: idle connections stay (a consumer keeps its
            # module for days), and the usual reads take the hot loop.
            timeout.set(None)
            data = _hot_loop(sock, fast, cryptoki, log)
        else:
            # A frame that has started must be complete within the timeout.
            timeout.set(record_timeout if reader.pending else None)
            data = _receive(sock, log, record_timeout) or None
        if data is None or not _general(reader, fast, cryptoki, data, timeout, log):
            return


def _take_credentials(h: Handoff) -> None:
    """The daemon's uid and gids (the zygote may have been started before
    the daemon dropped its privileges)."""
    if os.getuid() == h.uid and os.getgid() == h.gid:
        return
    os.setgroups(list(h.groups))
    os.setgid(h.gid)
    os.setuid(h.uid)


def read_pin(fd: int) -> str:
    """The PIN from the hand-off's pipe (the daemon wrote it and closed its
    end), which is closed here."""
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _unprivileged(backend: ServiceTokens | None, log: PrefixLog) -> None:
    """Load the module, log in and read the token (what the first call
    would do, kept for it: `SNAPSHOT_TTL`), then drop every capability
    before the first byte of the peer's is read: nothing after needs one
    (a re-login after the token came back uses the module already loaded,
    as the same uid). Raises `PrivilegeDropError`: the worker then ends
    and its connection with it."""
    if backend is not None:
        complete(backend.tokens())
    drop_all_capabilities()
    others = threads_with_capabilities()
    if others:
        # Capabilities are per thread: ones the module started keep theirs.
        log.warning("threads %s of the module still hold capabilities", others)


def run_worker(sock: socket.socket, h: Handoff, pin_text: str | None = None) -> int:
    """The body of a worker process: serve `sock` as `h` says, with the
    service's PIN `pin_text`."""
    _take_credentials(h)
    configure_logging(0)
    logging.getLogger().setLevel(h.log_level)
    log = PrefixLog(_log, f"[p11kit {h.number}]")
    service, access = _service_access(h, pin_text)
    backend = (
        P11KitTokens(access, inline=True).view(service, h.who) if service is not None else None
    )
    try:
        _unprivileged(backend, log)
        # What the set-up made (modules, the token's snapshot) lives as long
        # as the worker: the collector need not walk it again for every
        # collection of the objects the requests leave behind.
        gc.freeze()
        inline = backend if backend is not None else NO_TOKEN
        serve_connection(sock, Cryptoki(backend), log, h.record_timeout, inline)
    finally:
        sock.close()
        if access.worker is not None:
            try:
                access.worker.shutdown()
            except Exception:
                log.exception("closing the module failed")
    return 0


# -- the zygote ---------------------------------------------------------------------


def _send(control: socket.socket, message: dict[str, int | str]) -> None:
    with contextlib.suppress(OSError):  # the daemon is gone: the loop sees the end
        control.send(json.dumps(message).encode())


def _reap(control: socket.socket, workers: set[int]) -> None:
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            workers.clear()
            return
        if pid == 0:
            return
        workers.discard(pid)
        _send(control, {"exited": pid, "status": status})


def _fork_worker(
    control: socket.socket, wakeup: Sequence[int], fds: Sequence[int], data: bytes
) -> int:
    """Fork the worker for one hand-off (`fds`: the connection, and the
    PIN's pipe when `has_pin`); the zygote's copies are closed once the
    worker has its own. The zygote never reads the pipe: no PIN is ever in
    its memory, nor therefore in the workers it forks later for others."""
    h = Handoff.decode(data)
    if len(fds) != 1 + h.has_pin:
        raise ValueError(f"a hand-off with {len(fds)} descriptors (has_pin {h.has_pin})")
    conn = fds[0]
    zygote = os.getpid()
    pid = os.fork()
    if pid == 0:
        status = 70
        try:
            # A worker never outlives its zygote: the daemon counts, re-matches
            # at reload and ends workers through it, so one left behind by a
            # killed zygote would keep a service the daemon has revoked.
            die_with_parent(zygote)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in wakeup:
                os.close(fd)
            control.close()
            pin_text = read_pin(fds[1]) if h.has_pin else None
            status = run_worker(socket.socket(fileno=conn), h, pin_text)
        except BaseException:
            logging.getLogger(__name__).exception("p11-kit worker failed")
        finally:
            logging.shutdown()
            os._exit(status)
    for fd in fds:
        os.close(fd)
    return pid


def _signal_all(workers: set[int], signum: int) -> None:
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _end_all(workers: set[int]) -> None:
    """SIGTERM every worker, SIGKILL those still there after the grace."""
    _signal_all(workers, signal.SIGTERM)
    step = 0.05
    waited = 0.0
    while workers and waited < _END_GRACE:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            workers.discard(pid)
            continue
        select.select([], [], [], step)
        waited += step
    _signal_all(workers, signal.SIGKILL)


def zygote(control: socket.socket) -> None:
    """Fork a worker per hand-off until the daemon closes the pair."""
    # The daemon decides when to stop: a terminal's ^C reaches the whole
    # process group, and the daemon then closes the pair.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    workers: set[int] = set()
    try:
        while True:
            try:
                ready, _, _ = select.select([control.fileno(), r], [], [])
            except InterruptedError:
                continue
            if r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(r, 512):
                        pass
                _reap(control, workers)
            if control.fileno() not in ready:
                continue
            data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 2)
            if not data:
                for fd in fds:
                    os.close(fd)
                return
            message = json.loads(data)
            if "end" in message:
                pid = int(message["end"])
                if pid in workers:
                    os.kill(pid, signal.SIGTERM)
                continue
            if not fds:
                continue
            token = int(message["token"])
            try:
                pid = _fork_worker(control, (r, w), fds, data)
            except (OSError, ValueError, TypeError) as exc:
                # One connection lost (fork refused, a hand-off we cannot
                # read), not the workers already serving.
                for fd in fds:
                    os.close(fd)
                _send(control, {"failed": token, "error": str(exc)})
                continue
            workers.add(pid)
            _send(control, {"spawned": token, "pid": pid})
    finally:
        _end_all(workers)


def main(argv: Sequence[str]) -> int:
    # Whatever allow_core_dumps says: the zygote and (inherited over fork)
    # every worker hold the PIN, and a worker the module's session, so no
    # core file, and no ptrace or /proc/PID/mem by other processes of the
    # daemon's uid. A worker that changes uid would be made non-dumpable by
    # the kernel; one of the same uid would not.
    set_dumpable(False)
    control = socket.socket(fileno=int(argv[0]))
    zygote(control)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

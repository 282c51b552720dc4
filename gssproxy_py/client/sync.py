"""A blocking ONC RPC client over an AF_UNIX stream socket.

Like the interposer it keeps one connection, opened on first use and reused,
and sends one call at a time (a lock makes concurrent threads take turns). A
call's timeout covers the whole exchange: connect, send and the complete reply.

After a timeout or any broken reply the connection is closed rather than
reused, because a late or stray reply left on it would otherwise be read as
the answer to the next call. A refusal (`RpcRejected`) is a proper reply, so
the connection stays open.

Unlike the interposer it never resends a call after a timeout: a call such as
ACCEPT_SEC_CONTEXT is not idempotent, and the caller is better placed to
decide. The one resend it does is on a reused connection that the daemon
closed while idle, detected when the send fails before any reply was read.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from types import TracebackType
from typing import Any

from gssproxy_py.client.errors import (
    ConnectionClosedError,
    RpcClientError,
    RpcConnectionError,
    RpcRejected,
    RpcTimeoutError,
)
from gssproxy_py.client.wire import (
    DEFAULT_TIMEOUT,
    MAX_RECORD_SIZE,
    RecordAssembler,
    XidSource,
    build_call,
    frame,
    lookup_version,
    parse_reply,
    resolve_procedure,
)
from gssproxy_py.xdr import Procedure, Program

_RECV_SIZE = 65536
# Errors that mean "the daemon closed this connection", which on a reused
# connection is an idle close and worth one reconnect.
_STALE_ERRNOS = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN})


def connect_error(path: str, exc: OSError) -> RpcConnectionError:
    """A one-line reason for a failed connect, naming the path."""
    if isinstance(exc, FileNotFoundError):
        why = "no such socket (is the daemon running?)"
    elif isinstance(exc, ConnectionRefusedError):
        why = "connection refused (nothing is listening)"
    elif isinstance(exc, PermissionError):
        why = "permission denied"
    else:
        why = exc.strerror or str(exc)
    return RpcConnectionError(f"cannot connect to {path}: {why}")


class RpcClient:
    """Calls the procedures of one program version on one AF_UNIX socket.

    `timeout` (seconds, None for no limit) bounds each call; `max_reply_size`
    bounds a reply record, `max_request_size` a call (both 1 MiB by default,
    gssproxy's own limit).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        program: Program,
        version: int,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        max_reply_size: int = MAX_RECORD_SIZE,
        max_request_size: int = MAX_RECORD_SIZE,
        xids: XidSource | None = None,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.program = program
        self.version = version
        self.timeout = timeout
        self.max_reply_size = max_reply_size
        self.max_request_size = max_request_size
        self._version = lookup_version(program, version)
        self._xids = xids if xids is not None else XidSource()
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._records = RecordAssembler(max_reply_size)
        self._pid = 0
        self._used = False

    # -- connection ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Connect now rather than on the first call (to report errors early)."""
        with self._lock:
            self._ensure(_Deadline(self.timeout))

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _ensure(self, deadline: _Deadline) -> socket.socket:
        if self._sock is not None and self._pid != os.getpid():
            # A forked child must not share the parent's stream: their replies
            # would interleave. Closing our copy leaves the parent's intact.
            self.close()
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(deadline.remaining())
                sock.connect(self.socket_path)
            except TimeoutError:
                sock.close()
                raise RpcTimeoutError(
                    f"cannot connect to {self.socket_path}: not accepted in time"
                ) from None
            except OSError as e:
                sock.close()
                raise connect_error(self.socket_path, e) from e
            self._sock = sock
            self._pid = os.getpid()
            self._records = RecordAssembler(self.max_reply_size)
            self._used = False
        return self._sock

    # -- calls -----------------------------------------------------------------

    def procedure(self, key: int | str) -> Procedure:
        """The table entry for a procedure number or (case-insensitive) name."""
        return resolve_procedure(self._version, key)

    def null(self) -> None:
        """Call procedure 0, the conventional ping."""
        self.call(0)

    def call(
        self, proc: int | str | Procedure, arg: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Call a procedure and return its decoded result.

        `timeout` overrides the client's for this call. Raises RpcRejected (and
        subclasses) for a refusal, RpcTimeoutError, RpcProtocolError,
        RpcConnectionError or RequestTooLargeError; any of these but a refusal
        closes the connection.
        """
        p = proc if isinstance(proc, Procedure) else self.procedure(proc)
        with self._lock:
            xid = self._xids.next()
            body = build_call(
                xid, self.program, self.version, p, arg, max_size=self.max_request_size
            )
            deadline = _Deadline(self.timeout if timeout is None else timeout)
            try:
                record = self._exchange(frame(body), deadline, p)
                return parse_reply(
                    record, xid=xid, program=self.program, version=self.version, proc=p
                )
            except RpcRejected:
                raise
            except (RpcClientError, OSError):
                self.close()
                raise

    def _exchange(self, data: bytes, deadline: _Deadline, proc: Procedure) -> bytes:
        sock = self._ensure(deadline)
        try:
            self._send(sock, data, deadline, proc)
        except RpcConnectionError as e:
            cause = e.__cause__
            if not (self._used and isinstance(cause, OSError) and cause.errno in _STALE_ERRNOS):
                raise
            self.close()
            sock = self._ensure(deadline)
            self._send(sock, data, deadline, proc)
        self._used = True
        return self._receive(sock, deadline, proc)

    def _send(self, sock: socket.socket, data: bytes, deadline: _Deadline, proc: Procedure) -> None:
        try:
            sock.settimeout(deadline.remaining())
            # MSG_NOSIGNAL: an embedding program may not ignore SIGPIPE as
            # CPython does, and a closed daemon must not kill it.
            sock.sendall(data, socket.MSG_NOSIGNAL)
        except TimeoutError:
            raise deadline.expired(self.socket_path, proc) from None
        except OSError as e:
            raise RpcConnectionError(
                f"sending {proc.name} to {self.socket_path} failed: {e.strerror or e}"
            ) from e

    def _receive(self, sock: socket.socket, deadline: _Deadline, proc: Procedure) -> bytes:
        while True:
            try:
                sock.settimeout(deadline.remaining())
                chunk = sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise deadline.expired(self.socket_path, proc) from None
            except OSError as e:
                raise ConnectionClosedError(
                    f"reading the {proc.name} reply from {self.socket_path} failed: "
                    f"{e.strerror or e}"
                ) from e
            if not chunk:
                raise ConnectionClosedError(
                    f"{self.socket_path} closed the connection before replying to {proc.name}"
                )
            records = self._records.feed(chunk)
            if records:
                if len(records) > 1 or not self._records.idle:
                    # Data nobody asked for: answer this call, but do not let
                    # the rest be taken for the next call's reply.
                    self.close()
                return records[0]


class _Deadline:
    """The end of one call's time budget; None means no limit."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left, for socket.settimeout; TimeoutError when none are."""
        if self._end is None:
            return None
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def expired(self, path: str, proc: Procedure) -> RpcTimeoutError:
        return timeout_error(path, proc, self.timeout)


def timeout_error(path: str, proc: Procedure, timeout: float | None) -> RpcTimeoutError:
    """The one wording of a call timeout, shared with the asyncio client."""
    within = "" if timeout is None else f" within {timeout:g} s"
    return RpcTimeoutError(f"no reply to {proc.name} from {path}{within}")


__all__ = ["RpcClient", "connect_error", "timeout_error"]

"""Attributing each call to the process that wrote it (issue 14, item 7).

SO_PEERCRED names the process that *connected*; a process that shares the
descriptor (a child forked after the connect) writes as someone else. The
exec race: a user whose uid matches a service connects, forks, the parent
execs the service's `program` while the child sends the call; reading
`/proc/PID/exe` of the connector then says "program" and the child gets the
service's credentials.

With `SO_PASSCRED` on the listening socket (accepted sockets inherit it, and
the kernel attaches credentials even to what was written before the
accept), every message carries `SCM_CREDENTIALS`: the pid, uid and gid of
the process that wrote it, and one `recvmsg` never returns bytes of two
writers. uvloop's transports read with `read(2)` and drop ancillary data,
so connections that need it are read here instead: `WriterTransport` is a
small asyncio transport over `loop.add_reader` / `add_writer` with
`recvmsg`, and `Acceptor` accepts on a listening socket and hands each
connection either to it or to uvloop's own transport
(`loop.connect_accepted_socket`).

Which connections need it is the server's decision
(`needs_writer_credentials`): those whose uid could match a service that
names a `program`. Everything else keeps uvloop's C read path.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger(__name__)

# struct ucred { pid_t pid; uid_t uid; gid_t gid; }
_UCRED = struct.Struct("=iII")
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size)
#: Bytes read per recvmsg, as uvloop reads (256 KiB).
READ_SIZE = 256 * 1024
#: Write buffer marks at which the protocol is paused and resumed.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
#: Connections accepted per readiness of a listening socket: others wait for
#: the next turn of the loop, so a burst of connects cannot hold it.
ACCEPTS_PER_TURN = 64
#: With worker processes (`server.workers`) every process is woken for a new
#: connection and the first to accept gets it; taking one per wake-up leaves
#: the rest of a burst to the others (a busy process comes back later, so
#: the idler ones take more), where 64 would let one process take the
#: whole burst of clients that connect at once.
ACCEPTS_PER_TURN_SHARED = 1
#: After EMFILE/ENFILE, accepting pauses this long (as asyncio does).
ACCEPT_RETRY_DELAY = 1.0
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True, slots=True)
class Writer:
    """The process that wrote the bytes just read (SCM_CREDENTIALS)."""

    pid: int
    uid: int
    gid: int


def writer_of(ancillary: list[tuple[int, int, bytes]]) -> Writer | None:
    """The SCM_CREDENTIALS of one `recvmsg`, or None (none attached)."""
    for level, kind, data in ancillary:
        if (
            level == socket.SOL_SOCKET
            and kind == socket.SCM_CREDENTIALS
            and len(data) >= _UCRED.size
        ):
            pid, uid, gid = _UCRED.unpack_from(data)
            # pid 0: nothing was attached (written before SO_PASSCRED).
            return Writer(pid, uid, gid) if pid > 0 else None
    return None


class WriterTransport(asyncio.Transport):
    """A stream transport that reads with `recvmsg` and exposes, while the
    protocol's `data_received` runs, the writer of those bytes as `writer`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol
    ) -> None:
        super().__init__({"socket": sock})
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._buffer = bytearray()
        self._closing = False
        self._lost = False
        self._reading = False
        self._write_paused = False
        #: the writer of the bytes being delivered; None when the kernel
        #: attached no credentials
        self.writer: Writer | None = None
        sock.setblocking(False)
        protocol.connection_made(self)
        if not self._closing:
            self.resume_reading()

    # -- reading ---------------------------------------------------------------

    def _read_ready(self) -> None:
        try:
            data, ancillary, _flags, _addr = self._sock.recvmsg(READ_SIZE, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        if not data:
            self.pause_reading()
            if not self._protocol.eof_received():
                self.close()
            return
        self.writer = writer_of(ancillary)
        self._protocol.data_received(data)

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)

    # -- writing ---------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or not data:
            return
        if not self._buffer:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._force_close(exc)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        self._buffer += data
        if not self._write_paused and len(self._buffer) > HIGH_WATER:
            self._write_paused = True
            self._protocol.pause_writing()

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        del self._buffer[:sent]
        if self._write_paused and len(self._buffer) <= LOW_WATER:
            self._write_paused = False
            self._protocol.resume_writing()
        if not self._buffer:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._lose(None)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def can_write_eof(self) -> bool:
        return False

    # -- closing -----------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close once the write buffer is empty."""
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        if not self._buffer:
            self._loop.call_soon(self._lose, None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._closing = True
        self.pause_reading()
        if self._buffer:
            self._buffer.clear()
            self._loop.remove_writer(self._fd)
        self._loop.call_soon(self._lose, exc)

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()


class Acceptor:
    """Accepts connections on a listening socket, handing each to a
    `WriterTransport` when `needs_writer` says so, else to uvloop's."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        needs_writer: Callable[[socket.socket], bool],
        accepts_per_turn: int = ACCEPTS_PER_TURN,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._accepts_per_turn = accepts_per_turn
        self._factory = protocol_factory
        self._needs_writer = needs_writer
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        # Accepted sockets inherit it: credentials from the first byte on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        loop.add_reader(sock.fileno(), self._accept_ready)

    def close(self) -> None:
        """Stop accepting and close the listening socket."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _resume(self) -> None:
        self._retry = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept_ready)

    def _accept_ready(self) -> None:
        for _ in range(self._accepts_per_turn):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    _log.error(
                        "cannot accept on %s: %s; pausing %gs",
                        self._sock.getsockname(),
                        exc.strerror,
                        ACCEPT_RETRY_DELAY,
                    )
                    self._loop.remove_reader(self._sock.fileno())
                    self._retry = self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume)
                    return
                raise
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            writer = self._needs_writer(conn)
        except Exception:
            _log.exception("cannot classify an accepted connection")
            writer = True  # the careful path
        if writer:
            WriterTransport(self._loop, conn, self._factory())
            return
        task = self._loop.create_task(self._adopt(conn))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception as exc:
            conn.close()
            _log.error("cannot set up an accepted connection: %s", exc)

"""One accepted connection: an `asyncio.Protocol` that turns socket bytes into
calls and replies.

Bytes go through the record reader (`rpc.records`), each record through
`rpc.messages.route`; what the RPC layer answers by itself is written at
once. Every other call is started by the host (`ConnectionHost.start_call`),
which either answers it at once (a program's immediate handler) or hands
back a coroutine that runs as the call's own task, so several calls of one
connection are in flight together (the kernel multiplexes nfsd threads
this way). Replies are matched by xid, may leave in any order and each goes
out whole, so two replies never interleave; the replies answered at once
while one read's records are started leave together in one
`transport.write` (one system call and one wake-up of the peer for a batch
of pipelined calls, as the kernel sends them).
`flow.CallWindow` bounds the calls in flight and decides when reading
pauses.

A record over the size limit or a call header that cannot be read leaves no
way to answer or to find the next record: the connection is closed (and the
reason logged). Nothing a peer sends can raise out of this class, so one bad
peer never affects another connection.

When the peer shuts down its sending side, calls already received still get
their replies; the connection closes once they are written.

Tenant isolation (docs/RELIABILITY.md): the host may refuse a connection
once its peer is known (`ConnectionHost.admit`); it is told how many bytes
of a partial record are buffered whenever that changes
(`ConnectionHost.input_buffered`, the global input budget); and it calls
`check_timeouts` periodically, which closes a connection whose record has
not completed within `record_timeout`, or that was idle (no call in
flight, nothing received) for `idle_timeout`. The checks compare a count
of records with the one seen at the previous check, so the path of a call
reads no clock.

On a connection read through `writers.WriterTransport` (the host decided
that its uid could match a service that names a `program`), each record is
attributed to the process that wrote it: the pid, uid and gid the kernel
attached to those bytes, with `/proc/PID/exe` read as the record arrives.
A record whose bytes come from two processes closes the connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from gssproxy_py.config.match import MatchMemo
from gssproxy_py.config.peer import Peer
from gssproxy_py.rpc.dispatch import SECRETS_LOG_LEVEL, ProgramService
from gssproxy_py.rpc.messages import (
    Routed,
    UndecodableCallError,
    describe_reply,
    reply_system_err,
    route,
)
from gssproxy_py.rpc.records import RecordReader, RecordTooLargeError, frame
from gssproxy_py.server.flow import CallWindow
from gssproxy_py.server.peer import PeerCredentialsError, program_of, read_peer
from gssproxy_py.server.writers import WriterTransport

_log = logging.getLogger(__name__)


class PrefixLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that starts every message with a fixed prefix
    (the connection, and for a call its xid)."""

    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        super().__init__(logger, {})
        self.prefix = prefix

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.prefix} {msg}", kwargs


def admitted_peer(
    transport: asyncio.BaseTransport,
    log: PrefixLog,
    socket_path: str,
    with_selinux: bool,
    admit: Callable[[Peer], bool],
) -> Peer | None:
    """The peer of a new connection on `socket_path` if `admit` lets it in;
    None if its credentials cannot be read (logged here) or `admit` refused
    it (which logs why). The caller then aborts the connection. Shared by
    the GSS-Proxy and admin connections and the p11-kit ones."""
    try:
        peer = read_peer(transport.get_extra_info("socket"), with_selinux=with_selinux)
    except PeerCredentialsError as exc:
        # gssproxy drops such a connection too: it cannot be attributed.
        log.error("dropping connection on %s: %s", socket_path, exc)
        return None
    return peer if admit(peer) else None


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What the host needs to know about the connection a call came from."""

    number: int
    peer: Peer
    #: the configured path of the listening socket the peer connected to
    socket_path: str
    #: the host's memo of which service this connection matches
    match_memo: MatchMemo = field(default_factory=MatchMemo, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Limits fixed when a connection is accepted (a reload applies to new
    connections)."""

    max_record_size: int
    max_calls: int


class ConnectionHost(Protocol):
    """What a connection needs from the server that accepted it."""

    @property
    def services(self) -> Mapping[int, ProgramService]: ...

    @property
    def selinux_enabled(self) -> bool: ...

    def connection_limits(self) -> ConnectionLimits: ...

    def calls_waiting(self, conn: RpcConnection) -> None:
        """`conn` has calls to start: the host calls `conn.start_calls`, now
        or in its later turns (`server.fairness`)."""
        ...

    def admit(self, conn: RpcConnection, peer: Peer) -> bool:
        """Whether the peer may hold one more connection (a refusal is
        logged by the host); `connection_opened` follows if it may."""
        ...

    def input_buffered(self, conn: RpcConnection, size: int) -> None:
        """`conn` now buffers `size` bytes of a partial record."""
        ...

    def connection_opened(self, conn: RpcConnection) -> None: ...

    def connection_closed(self, conn: RpcConnection) -> None: ...

    def start_call(
        self, conn: ConnectionInfo, routed: Routed
    ) -> bytes | Coroutine[Any, Any, bytes]:
        """Match the caller and start the call: the reply, or a coroutine
        whose result is the reply (neither raises)."""
        ...


class RpcConnection(asyncio.Protocol):
    """The server side of one client connection."""

    def __init__(self, host: ConnectionHost, socket_path: str, number: int) -> None:
        self._host = host
        self.socket_path = socket_path
        self.number = number
        self.log = PrefixLog(_log, f"[conn {number}]")
        self.info: ConnectionInfo | None = None  # set once the peer is known
        self._transport: asyncio.Transport | None = None
        self._reader = RecordReader()
        self._window = CallWindow(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading = True
        #: replies made while `_pump` runs, written together when it ends
        self._batch: list[bytes] | None = None
        self._stopped = False  # start no more calls: bad stream, shutdown or lost
        self._eof = False
        self._opened = False
        #: records received so far, and bytes of a partial record buffered
        self._records_seen = 0
        self._buffered = 0
        #: (records seen, time) when `check_timeouts` first saw the current
        #: partial record, or the current idle spell
        self._partial_mark: tuple[int, float] | None = None
        self._idle_mark: tuple[int, float] | None = None
        #: with writer credentials: the identity of each record received and
        #: not yet started (in step with the window's backlog), and the pid
        #: that wrote the partial record
        self._record_infos: deque[ConnectionInfo] | None = None
        self._partial_writer: int | None = None

    # -- state for the host --------------------------------------------------

    @property
    def calls_in_flight(self) -> int:
        """Calls running as tasks (an immediate answer is never in flight here)."""
        return len(self._tasks)

    def stop_accepting_calls(self) -> int:
        """Start no further calls and stop reading (shutdown); returns how
        many received calls were dropped unanswered."""
        self._stopped = True
        dropped = self._drop_backlog()
        self._update_reading()
        return dropped

    async def wait_calls(self) -> None:
        """Return when the calls in flight now have finished."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def close(self) -> None:
        """Close after pending replies are written."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = admitted_peer(
            transport,
            self.log,
            self.socket_path,
            self._host.selinux_enabled,
            functools.partial(self._host.admit, self),
        )
        if peer is None:
            self._stopped = True
            self._transport.abort()
            return
        limits = self._host.connection_limits()
        self._reader = RecordReader(limits.max_record_size)
        self._window = CallWindow(limits.max_calls)
        self.info = ConnectionInfo(self.number, peer, self.socket_path)
        if isinstance(transport, WriterTransport):
            self._record_infos = deque()
        self.log.info(
            "accepted on %s: pid %d uid %d gid %d program %s%s",
            self.socket_path,
            peer.pid,
            peer.uid,
            peer.gid,
            peer.program or "(unknown)",
            f" context {peer.selinux_context}" if peer.selinux_context else "",
        )
        self._opened = True
        self._host.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        if self._record_infos is not None:
            self._data_from_writer(data)
            return
        records = self._feed(data)
        if records:
            self._records_seen += len(records)
            self._window.received(records)
            self._pump()

    def _feed(self, data: bytes) -> list[bytes] | None:
        """The records `data` completes (None: the stream was abandoned);
        the host hears of the bytes of a partial record now buffered."""
        try:
            records = self._reader.feed(data)
        except RecordTooLargeError as exc:
            self._abandon(f"closing: {exc}")
            return None
        buffered = self._reader.buffered
        if buffered != self._buffered:
            self._buffered = buffered
            self._host.input_buffered(self, buffered)
        return records

    def _data_from_writer(self, data: bytes) -> None:
        """`data_received` with the writer's credentials: each record gets
        the identity of the process that wrote it."""
        assert self.info is not None and self._record_infos is not None
        writer = cast(WriterTransport, self._transport).writer
        connector = self.info.peer
        if writer is None:
            # No credentials attached (a kernel that adds them only after
            # the accept): the connector, its executable read now.
            pid, uid, gid = connector.pid, connector.uid, connector.gid
        else:
            pid, uid, gid = writer.pid, writer.uid, writer.gid
        if self._reader.pending and self._partial_writer != pid:
            first = self._partial_writer
            self._abandon(f"closing: a record written by two processes (pids {first} and {pid})")
            return
        records = self._feed(data)
        self._partial_writer = pid if self._reader.pending else None
        if not records:
            return
        peer = Peer(
            pid=pid,
            uid=uid,
            gid=gid,
            program=program_of(pid),
            # Of the connection: the kernel attaches no context per message.
            selinux_context=connector.selinux_context,
            netns_inode=connector.netns_inode,
        )
        info = (
            self.info if peer == connector else ConnectionInfo(self.number, peer, self.socket_path)
        )
        if peer != connector and self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "%d records written by pid %d uid %d program %s",
                len(records),
                pid,
                uid,
                peer.program or "(unknown)",
            )
        self._records_seen += len(records)
        self._record_infos.extend([info] * len(records))
        self._window.received(records)
        self._pump()

    def eof_received(self) -> bool:
        self._eof = True
        if self._reader.pending:
            self.log.info("peer closed its side in the middle of a record")
        self._close_when_done()
        # Keep our side open: the calls already received still get replies.
        return True

    def pause_writing(self) -> None:
        self._window.write_blocked(True)
        self._update_reading()

    def resume_writing(self) -> None:
        self._window.write_blocked(False)
        self._update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stopped = True
        self._drop_backlog()
        for task in list(self._tasks):
            task.cancel()
        if self._opened:
            if exc is not None:
                self.log.info("closed: %s", exc)
            else:
                self.log.info("closed")
            self._host.connection_closed(self)

    # -- limits ------------------------------------------------------------------

    @property
    def peer_uid(self) -> int | None:
        return None if self.info is None else self.info.peer.uid

    @property
    def from_kernel(self) -> bool:
        """The kernel's own connection (the nfsd upcall): root, connected by
        a kernel thread, which has no executable. A root process in another
        pid namespace reads the same; it is root, so nothing is lost."""
        return self.info is not None and self.info.peer.uid == 0 and self.info.peer.program is None

    def drop_partial_record(self, why: str) -> None:
        """The input budget is spent: forget the partial record and close
        (the stream cannot go on without the rest of the record)."""
        self._buffered = 0
        self._abandon(f"closing: {why}")

    def check_timeouts(self, now: float, record_timeout: float, idle_timeout: float) -> None:
        """Close if a partial record took longer than `record_timeout`, or
        if idle for `idle_timeout` (0: never); called periodically."""
        if self._stopped or self._transport is None or self._transport.is_closing():
            return
        seen = self._records_seen
        if self._reader.pending:
            self._idle_mark = None
            mark = self._partial_mark
            if mark is None or mark[0] != seen:
                self._partial_mark = (seen, now)
            elif now - mark[1] >= record_timeout:
                self._abandon(
                    f"closing: a record was not complete within {record_timeout:g}s "
                    f"({self._reader.buffered} bytes received)"
                )
            return
        self._partial_mark = None
        if not idle_timeout or not self._window.idle or self._tasks:
            self._idle_mark = None
            return
        mark = self._idle_mark
        if mark is None or mark[0] != seen:
            self._idle_mark = (seen, now)
        elif now - mark[1] >= idle_timeout:
            self.log.info("closing: idle for %gs", idle_timeout)
            self._stopped = True
            self.close()

    # -- calls ---------------------------------------------------------------------

    def _pump(self) -> None:
        """Calls may start: the host starts them now or in its turns
        (`server.fairness`); reading pauses while some wait."""
        if self._window.can_start and not self._stopped:
            self._host.calls_waiting(self)
        self._update_reading()
        self._close_when_done()

    @property
    def calls_queued(self) -> int:
        """Records received and not started."""
        return self._window.backlog

    def start_calls(self, limit: int) -> tuple[int, bool]:
        """Start up to `limit` calls the window allows, then adjust reading;
        how many started, and whether more could start now."""
        started = 0
        self._batch = []
        try:
            while (
                started < limit
                and not self._stopped
                and (record := self._window.next_call()) is not None
            ):
                self._start(record)
                started += 1
        finally:
            self._flush_batch()
            self._batch = None
        self._update_reading()
        self._close_when_done()
        return started, not self._stopped and self._window.can_start

    def _start(self, record: bytes) -> None:
        # The identity of this record's writer (in step with the backlog).
        info = self.info if self._record_infos is None else self._record_infos.popleft()
        if self.log.isEnabledFor(SECRETS_LOG_LEVEL):
            self.log.log(SECRETS_LOG_LEVEL, "call record: %s", record.hex())
        try:
            outcome = route(record, self._host.services)
        except UndecodableCallError as exc:
            self._window.finished()
            self._abandon(f"closing: {exc}")
            return
        if isinstance(outcome, bytes):
            self._window.finished()
            if self.log.isEnabledFor(logging.DEBUG):
                self.log.debug(
                    "xid %#010x: %s", int.from_bytes(outcome[:4]), describe_reply(outcome)
                )
            self._send(outcome)
            return
        assert info is not None  # calls only arrive after connection_made set it
        try:
            started = self._host.start_call(info, outcome)
        except Exception:
            # start_call answers handler failures itself; this is a bug of ours.
            self.log.exception("xid %#010x: internal error", outcome.call.xid)
            started = reply_system_err(outcome.call.xid)
        if isinstance(started, bytes):
            self._window.finished()
            self._send(started)
            return
        task = asyncio.get_running_loop().create_task(self._serve(started, outcome.call.xid))
        self._tasks.add(task)
        task.add_done_callback(self._call_done)

    async def _serve(self, started: Coroutine[Any, Any, bytes], xid: int) -> None:
        try:
            reply = await started
        except Exception:
            # The host's coroutine answers handler failures itself; this is a bug of ours.
            self.log.exception("xid %#010x: internal error", xid)
            reply = reply_system_err(xid)
        self._send(reply)

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._window.finished()
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("call task failed", exc_info=exc)
        self._pump()

    def _send(self, reply: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self.log.debug(
                "xid %#010x: reply dropped, connection closing", int.from_bytes(reply[:4])
            )
            return
        if self.log.isEnabledFor(SECRETS_LOG_LEVEL):
            self.log.log(SECRETS_LOG_LEVEL, "reply record: %s", reply.hex())
        if self._batch is not None:
            self._batch.append(frame(reply))
        else:
            transport.write(frame(reply))

    def _flush_batch(self) -> None:
        """Write the replies batched so far, in one write."""
        batch = self._batch
        if not batch:
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(batch[0] if len(batch) == 1 else b"".join(batch))
        batch.clear()

    # -- reading and closing ---------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        want = not self._stopped and not self._eof and self._window.reading_allowed
        if want and not self._reading:
            transport.resume_reading()
        elif not want and self._reading:
            transport.pause_reading()
        self._reading = want

    def _drop_backlog(self) -> int:
        """Forget the calls received and not started; how many."""
        if self._record_infos is not None:
            self._record_infos.clear()
        return self._window.drop_backlog()

    def _close_when_done(self) -> None:
        if self._eof and self._window.idle:
            self.close()

    def _abandon(self, why: str) -> None:
        """The stream is unusable: log why and close; calls in flight are
        cancelled when the connection is lost."""
        self.log.warning("%s", why)
        # Replies to the calls before the bad one still leave.
        self._flush_batch()
        self._stopped = True
        self._drop_backlog()
        self.close()

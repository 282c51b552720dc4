"""An asyncio ONC RPC client over an AF_UNIX stream socket, with pipelining.

Any number of calls may be outstanding on the one connection: each is written
as a whole record as soon as it is made, and a single reader task hands each
reply to the call with the same xid. Whether the server actually works on them
concurrently is its business (gssproxy answers one at a time, in order); the
client does not depend on the order of replies.

A call that times out or is cancelled gives up its xid but leaves the
connection open for the others; its reply, if it ever comes, is recognised and
dropped. A reply with an xid that no call ever had is a protocol violation
that fails every outstanding call and closes the connection, as does an
oversized reply or the server closing it. The next call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from types import TracebackType
from typing import Any, Final

from gssproxy_py.client.errors import (
    ConnectionClosedError,
    RpcClientError,
    RpcConnectionError,
    XidMismatchError,
)
from gssproxy_py.client.sync import connect_error, timeout_error
from gssproxy_py.client.wire import (
    DEFAULT_TIMEOUT,
    MAX_RECORD_SIZE,
    RecordAssembler,
    XidSource,
    build_call,
    frame,
    lookup_version,
    parse_reply,
    reply_xid,
    resolve_procedure,
)
from gssproxy_py.xdr import Procedure, Program

_READ_SIZE: Final = 65536
#: How many given-up xids are remembered so that their late replies are dropped.
_ABANDONED_MEMORY: Final = 1024


class _Connection:
    """One open stream: the outstanding calls and the task reading replies."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        path: str,
        max_reply_size: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.path = path
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self._abandoned: OrderedDict[int, None] = OrderedDict()
        self.error: RpcClientError | None = None
        self._records = RecordAssembler(max_reply_size)
        self.task = asyncio.get_running_loop().create_task(self._read_replies())

    @property
    def usable(self) -> bool:
        return self.error is None and not self.writer.is_closing()

    def abandon(self, xid: int) -> None:
        """Forget a call whose caller stopped waiting; drop its reply if it comes."""
        self.pending.pop(xid, None)
        self._abandoned[xid] = None
        while len(self._abandoned) > _ABANDONED_MEMORY:
            self._abandoned.popitem(last=False)

    async def _read_replies(self) -> None:
        try:
            while True:
                try:
                    data = await self.reader.read(_READ_SIZE)
                except OSError as e:
                    raise ConnectionClosedError(
                        f"reading replies from {self.path} failed: {e.strerror or e}"
                    ) from e
                if not data:
                    raise ConnectionClosedError(
                        f"{self.path} closed the connection"
                        + (f" with {len(self.pending)} call(s) unanswered" if self.pending else "")
                    )
                for record in self._records.feed(data):
                    self._deliver(record)
        except RpcClientError as e:
            self.fail(e)

    def _deliver(self, record: bytes) -> None:
        xid = reply_xid(record)
        fut = self.pending.pop(xid, None)
        if fut is None:
            if xid in self._abandoned:
                del self._abandoned[xid]
                return
            raise XidMismatchError(xid, None)
        if not fut.done():
            fut.set_result(record)

    def fail(self, exc: RpcClientError) -> None:
        """Fail every outstanding call with exc and close the stream."""
        if self.error is None:
            self.error = exc
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self.writer.close()

    async def close(self) -> None:
        self.fail(ConnectionClosedError(f"the client closed its connection to {self.path}"))
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        # The peer may have reset the stream first; closed is closed.
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class AsyncRpcClient:
    """Calls the procedures of one program version on one AF_UNIX socket.

    The same parameters as `RpcClient`; calls may be made concurrently from
    several tasks and share one connection.
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
        self._conn: _Connection | None = None
        self._connect_lock = asyncio.Lock()

    # -- connection ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.usable

    @property
    def in_flight(self) -> int:
        """Calls sent and not yet answered on the current connection."""
        return 0 if self._conn is None else len(self._conn.pending)

    async def connect(self) -> None:
        """Connect now rather than on the first call (to report errors early)."""
        async with asyncio.timeout(self.timeout):
            await self._connection()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> AsyncRpcClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _connection(self) -> _Connection:
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            if conn is not None:
                self._conn = None
                await conn.close()
            try:
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError as e:
                raise connect_error(self.socket_path, e) from e
            self._conn = _Connection(reader, writer, self.socket_path, self.max_reply_size)
            return self._conn

    # -- calls -----------------------------------------------------------------

    def procedure(self, key: int | str) -> Procedure:
        """The table entry for a procedure number or (case-insensitive) name."""
        return resolve_procedure(self._version, key)

    async def null(self) -> None:
        """Call procedure 0, the conventional ping."""
        await self.call(0)

    async def call(self, proc: int | str | Procedure, arg: Any = None) -> Any:
        """Call a procedure and return its decoded result.

        The same errors as `RpcClient.call`; the client's timeout covers
        connecting, sending and the reply. (For a shorter limit on one call,
        wrap it in `asyncio.timeout`; the call's xid is then given up cleanly.)
        """
        p = proc if isinstance(proc, Procedure) else self.procedure(proc)
        xid = self._xids.next()
        data = frame(
            build_call(xid, self.program, self.version, p, arg, max_size=self.max_request_size)
        )
        limit = self.timeout
        try:
            async with asyncio.timeout(limit):
                record = await self._exchange(xid, data, p)
        except TimeoutError:
            raise timeout_error(self.socket_path, p, limit) from None
        return parse_reply(record, xid=xid, program=self.program, version=self.version, proc=p)

    async def _exchange(self, xid: int, data: bytes, proc: Procedure) -> bytes:
        conn = await self._connection()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        conn.pending[xid] = fut
        try:
            # write() queues the whole record at once, so records from
            # concurrent calls never interleave on the stream.
            conn.writer.write(data)
            try:
                await conn.writer.drain()
            except OSError as e:
                err = RpcConnectionError(
                    f"sending {proc.name} to {self.socket_path} failed: {e.strerror or e}"
                )
                # Off the pending list first, so only the caller sees err.
                conn.pending.pop(xid, None)
                conn.fail(err)
                raise err from e
            return await fut
        finally:
            if xid in conn.pending:
                # Timed out or cancelled (which also cancels fut): the reply
                # may still come, and is dropped then.
                conn.abandon(xid)


__all__ = ["AsyncRpcClient"]

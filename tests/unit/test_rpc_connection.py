"""The connection state machine: flow control (`CallWindow`) and the protocol
class driven by hand with a fake transport, so every interleaving is chosen
by the test rather than by a socket."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gssproxy_py.config.load import load_config_text
from gssproxy_py.rpc.dispatch import CallInfo, Pending, ProgramService
from gssproxy_py.rpc.records import frame
from gssproxy_py.server.connection import RpcConnection
from gssproxy_py.server.daemon import GssProxyServer, ServerOptions
from gssproxy_py.server.flow import CallWindow
from gssproxy_py.xdr.program import Procedure, Program, Version
from gssproxy_py.xdr.runtime import Decoder, Encoder

PROG = 0x20000042
SOCKET = "/nonexistent/gssproxy-test.sock"


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def call_record(xid: int, proc: int, args: bytes = b"", *, prog: int = PROG) -> bytes:
    return frame(u32(xid, 0, 2, prog, 1, proc, 0, 0, 0, 0) + args)


def tag_args(tag: bytes) -> bytes:
    return u32(len(tag)) + tag + b"\0" * (-len(tag) % 4)


def success(xid: int, result: bytes = b"") -> bytes:
    return frame(u32(xid, 1, 0, 0, 0, 0) + result)


def accepted(xid: int, stat: int) -> bytes:
    return frame(u32(xid, 1, 0, 0, 0, stat))


# -- CallWindow -------------------------------------------------------------------


def test_window_starts_calls_up_to_the_limit() -> None:
    w = CallWindow(2)
    assert w.reading_allowed and w.idle
    w.received([b"a", b"b", b"c"])
    assert not w.reading_allowed  # a backlog means: do not read more yet
    assert w.next_call() == b"a"
    assert w.next_call() == b"b"
    assert w.next_call() is None
    assert (w.in_flight, w.backlog) == (2, 1)
    w.finished()
    assert w.next_call() == b"c"
    assert not w.reading_allowed  # back at the limit
    w.finished()
    assert w.reading_allowed
    w.finished()
    assert w.idle


def test_window_write_blocking_pauses_reading() -> None:
    w = CallWindow(4)
    w.write_blocked(True)
    assert not w.reading_allowed
    w.write_blocked(False)
    assert w.reading_allowed


def test_window_drop_backlog_and_misuse() -> None:
    w = CallWindow(1)
    w.received([b"a", b"b", b"c"])
    assert w.next_call() == b"a"
    assert w.drop_backlog() == 2
    w.finished()
    assert w.idle
    with pytest.raises(RuntimeError):
        w.finished()
    with pytest.raises(ValueError):
        CallWindow(0)


# -- RpcConnection with a fake transport ---------------------------------------------


class FakeSocket:
    def __init__(self, fail: bool = False, pid: int | None = None) -> None:
        self.fail = fail
        self.pid = os.getpid() if pid is None else pid

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
        if self.fail:
            raise OSError(95, "Operation not supported")
        return struct.pack("=iII", self.pid, os.getuid(), os.getgid())[:buflen]


class FakeTransport(asyncio.Transport):
    def __init__(self, sock: FakeSocket | None = None) -> None:
        super().__init__()
        self.sock = sock or FakeSocket()
        #: the framed records written, in order (a stream has no write
        #: boundaries, so each write is split into its records)
        self.writes: list[bytes] = []
        #: how many times write() was called
        self.write_calls = 0
        self.reading = True
        self.closed = False
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed
        self.write_calls += 1
        data = bytes(data)
        while data:
            # Every reply is one fragment with the last-fragment bit set.
            (mark,) = struct.unpack(">I", data[:4])
            assert mark & 0x80000000
            end = 4 + (mark & 0x7FFFFFFF)
            self.writes.append(data[:end])
            data = data[end:]

    def pause_reading(self) -> None:
        assert self.reading
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True


class Gates:
    """Handler side of the test program: WAIT(tag) returns tag once opened."""

    def __init__(self) -> None:
        self.events: dict[bytes, asyncio.Event] = {}
        self.started: list[bytes] = []
        self.cancelled: list[bytes] = []

    def gate(self, tag: bytes) -> asyncio.Event:
        return self.events.setdefault(tag, asyncio.Event())

    async def wait(self, info: CallInfo, tag: bytes) -> bytes:
        self.started.append(tag)
        try:
            await self.gate(tag).wait()
        except asyncio.CancelledError:
            self.cancelled.append(tag)
            raise
        return tag


def _blob(number: int, name: str) -> Procedure:
    def dec(d: Decoder) -> bytes:
        return d.opaque_var(64)

    def enc(e: Encoder, v: bytes) -> None:
        e.opaque_var(v, 64)

    return Procedure(number, name, bytes, bytes, dec, enc, dec, enc)


async def _raise(info: CallInfo, arg: Any) -> Any:
    raise RuntimeError("handler bug")


def _now(info: CallInfo, tag: bytes) -> Any:
    """NOW's immediate handler: the tag at once; `fail` raises; anything
    starting with `wait` continues as WAIT would."""
    if tag == b"fail":
        raise RuntimeError("immediate handler bug")
    return tag


def make_server(
    gates: Gates, *, max_calls: int = 16, call_timeout: float = 5.0, calls_per_read: int = 2
) -> GssProxyServer:
    config = load_config_text(
        f"[gssproxy]\n  max_calls_per_connection = {max_calls}\n"
        f"  call_timeout = {call_timeout}\n"
        f"  turn_calls_per_connection = {calls_per_read}\n"
        f"[service/any]\n  mechs = krb5\n  euid = 0\n  allow_any_uid = yes\n",
        default_socket=SOCKET,
    )
    procedures = {1: _blob(1, "WAIT"), 2: _blob(2, "RAISE"), 3: _blob(3, "NOW")}
    program = Program(PROG, "TEST", {1: Version(1, "V1", procedures)})

    def now(info: CallInfo, tag: bytes) -> Any:
        if tag.startswith(b"wait"):
            return Pending(lambda: gates.wait(info, tag))
        return _now(info, tag)

    service = ProgramService(
        program,
        {(1, 1): gates.wait, (1, 2): _raise, (1, 3): gates.wait},
        immediate={(1, 3): now},
    )
    return GssProxyServer(config, {PROG: service}, ServerOptions(None, None, SOCKET))


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=10))


async def settle() -> None:
    """Let every ready task and callback run."""
    for _ in range(10):
        await asyncio.sleep(0)


def connect(
    server: GssProxyServer, sock: FakeSocket | None = None
) -> tuple[RpcConnection, FakeTransport]:
    conn = RpcConnection(server, SOCKET, 1)
    transport = FakeTransport(sock)
    conn.connection_made(transport)
    return conn, transport


def test_replies_leave_in_completion_order_each_in_one_write() -> None:
    async def body() -> None:
        gates = Gates()
        conn, transport = connect(make_server(gates))
        conn.data_received(
            call_record(1, 1, tag_args(b"slow")) + call_record(2, 1, tag_args(b"fast"))
        )
        await settle()
        assert gates.started == [b"slow", b"fast"]
        gates.gate(b"fast").set()
        await settle()
        assert transport.writes == [success(2, tag_args(b"fast"))]
        gates.gate(b"slow").set()
        await settle()
        assert transport.writes == [success(2, tag_args(b"fast")), success(1, tag_args(b"slow"))]
        assert transport.write_calls == 2

    run(body)


def test_immediate_answers_need_no_task_and_leave_together() -> None:
    async def body() -> None:
        gates = Gates()
        # Three calls start in the read that brings them (the default is 2).
        conn, transport = connect(make_server(gates, calls_per_read=3))
        conn.data_received(
            call_record(1, 3, tag_args(b"a"))
            + call_record(2, 0)
            + call_record(3, 3, tag_args(b"b"))
        )
        # Answered inside data_received: no task, nothing to await.
        assert conn.calls_in_flight == 0
        assert transport.writes == [
            success(1, tag_args(b"a")),
            success(2),
            success(3, tag_args(b"b")),
        ]
        assert transport.write_calls == 1

    run(body)


def test_immediate_pending_runs_as_a_task_and_a_bug_is_system_err() -> None:
    async def body() -> None:
        gates = Gates()
        conn, transport = connect(make_server(gates, calls_per_read=3))
        conn.data_received(
            call_record(1, 3, tag_args(b"wait1"))
            + call_record(2, 3, tag_args(b"fail"))
            + call_record(3, 3, tag_args(b"c"))
        )
        assert conn.calls_in_flight == 1
        assert transport.writes == [accepted(2, 5), success(3, tag_args(b"c"))]
        await settle()
        assert gates.started == [b"wait1"]
        gates.gate(b"wait1").set()
        await settle()
        assert transport.writes[-1] == success(1, tag_args(b"wait1"))
        assert conn.calls_in_flight == 0
        assert not transport.closed

    run(body)


def test_rpc_layer_replies_do_not_wait_for_calls_in_flight() -> None:
    async def body() -> None:
        gates = Gates()
        conn, transport = connect(make_server(gates))
        conn.data_received(
            call_record(1, 1, tag_args(b"a")) + call_record(2, 0) + call_record(3, 9)
        )
        await settle()
        assert transport.writes == [success(2), accepted(3, 3)]
        gates.gate(b"a").set()
        await settle()
        assert transport.writes[-1] == success(1, tag_args(b"a"))

    run(body)


def test_in_flight_limit_pauses_reading_until_a_call_finishes() -> None:
    async def body() -> None:
        gates = Gates()
        conn, transport = connect(make_server(gates, max_calls=2))
        records = b"".join(call_record(i, 1, tag_args(b"%d" % i)) for i in range(1, 4))
        conn.data_received(records)
        await settle()
        assert gates.started == [b"1", b"2"]  # the third waits in the backlog
        assert not transport.reading
        gates.gate(b"2").set()
        await settle()
        assert gates.started == [b"1", b"2", b"3"]
        assert not transport.reading  # at the limit again
        gates.gate(b"1").set()
        gates.gate(b"3").set()
        await settle()
        assert transport.reading
        assert sorted(transport.writes) == sorted(
            success(i, tag_args(b"%d" % i)) for i in range(1, 4)
        )

    run(body)


def test_a_full_write_buffer_pauses_reading() -> None:
    async def body() -> None:
        conn, transport = connect(make_server(Gates()))
        conn.pause_writing()
        assert not transport.reading
        conn.data_received(call_record(1, 0))  # already read: still answered
        assert transport.writes == [success(1)]
        conn.resume_writing()
        assert transport.reading

    run(body)


def test_byte_at_a_time() -> None:
    async def body() -> None:
        conn, transport = connect(make_server(Gates()))
        for b in call_record(7, 0):
            conn.data_received(bytes([b]))
        assert transport.writes == [success(7)]

    run(body)


def test_oversize_record_closes_the_connection() -> None:
    async def body() -> None:
        conn, transport = connect(make_server(Gates()))
        conn.data_received(call_record(1, 0) + u32(0x80000000 | (1024 * 1024 + 1)))
        assert transport.closed
        assert transport.writes == []  # the whole chunk was refused
        conn.data_received(call_record(2, 0))  # ignored after the close
        assert transport.writes == []

    run(body)


def test_undecodable_header_closes_after_earlier_replies() -> None:
    async def body() -> None:
        conn, transport = connect(make_server(Gates()))
        conn.data_received(call_record(1, 0) + frame(b"\0\0\0\x02\0\0") + call_record(3, 0))
        assert transport.writes == [success(1)]
        assert transport.closed

    run(body)


def test_handler_exception_is_system_err_and_the_connection_lives_on() -> None:
    async def body() -> None:
        conn, transport = connect(make_server(Gates()))
        conn.data_received(call_record(1, 2, tag_args(b"x")))
        await settle()
        assert transport.writes == [accepted(1, 5)]
        conn.data_received(call_record(2, 0))
        assert transport.writes[-1] == success(2)
        assert not transport.closed

    run(body)


def test_deadline_is_system_err() -> None:
    async def body() -> None:
        gates = Gates()
        conn, transport = connect(make_server(gates, call_timeout=0.05))
        conn.data_received(call_record(1, 1, tag_args(b"never")))
        await asyncio.sleep(0.2)
        assert transport.writes == [accepted(1, 5)]
        assert gates.cancelled == [b"never"]

    run(body)


def test_eof_keeps_the_connection_until_replies_are_written() -> None:
    async def body() -> None:
        gates = Gates()
        conn, transport = connect(make_server(gates))
        conn.data_received(call_record(1, 1, tag_args(b"a")))
        assert conn.eof_received() is True
        await settle()
        assert not transport.closed
        gates.gate(b"a").set()
        await settle()
        assert transport.writes == [success(1, tag_args(b"a"))]
        assert transport.closed

    run(body)


def test_connection_lost_cancels_calls_in_flight() -> None:
    async def body() -> None:
        gates = Gates()
        conn, _ = connect(make_server(gates))
        conn.data_received(call_record(1, 1, tag_args(b"a")))
        await settle()
        conn.connection_lost(ConnectionResetError())
        await settle()
        assert gates.cancelled == [b"a"]
        assert conn.calls_in_flight == 0

    run(body)


def test_unreadable_peer_credentials_drop_the_connection() -> None:
    async def body() -> None:
        conn, transport = connect(make_server(Gates()), FakeSocket(fail=True))
        assert transport.aborted
        conn.data_received(call_record(1, 0))
        assert transport.writes == []
        conn.connection_lost(None)

    run(body)


def test_stop_accepting_calls_drops_the_backlog() -> None:
    async def body() -> None:
        gates = Gates()
        conn, transport = connect(make_server(gates, max_calls=1))
        conn.data_received(call_record(1, 1, tag_args(b"a")) + call_record(2, 1, tag_args(b"b")))
        await settle()
        assert conn.stop_accepting_calls() == 1
        assert not transport.reading
        gates.gate(b"a").set()
        await conn.wait_calls()
        await settle()
        assert transport.writes == [success(1, tag_args(b"a"))]
        assert gates.started == [b"a"]

    run(body)


def test_a_root_peer_with_no_executable_is_the_kernels_connection() -> None:
    async def body() -> None:
        server = make_server(Gates())
        # pid 0: what SO_PEERCRED gives for a peer with no process we can
        # name (a kernel thread reads the same: no executable).
        kernel, _ = connect(server, FakeSocket(pid=0))
        process, _ = connect(server)
        assert kernel.from_kernel is (os.getuid() == 0)
        assert not process.from_kernel

    run(body)

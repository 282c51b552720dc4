"""The RPC clients (client/wire.py, sync.py, aio.py) against an in-test fake server.

The fake server is a thread on a real AF_UNIX listener that speaks raw bytes
built here with struct, so the tests check the client's wire format against an
independent rendering of RFC 5531 rather than against its own encoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gssproxy_py.client import (
    AsyncGssProxyClient,
    AsyncRpcClient,
    AuthError,
    ConnectionClosedError,
    GarbageArgs,
    GssProxyClient,
    ProcedureUnavailable,
    ProgramMismatch,
    ProgramUnavailable,
    RemoteSystemError,
    ReplyTooLargeError,
    RequestTooLargeError,
    RpcClient,
    RpcClientError,
    RpcConnectionError,
    RpcMismatch,
    RpcProtocolError,
    RpcRejected,
    RpcTimeoutError,
    XidMismatchError,
    call_ctx,
    default_socket_path,
    find_option,
    option,
)
from gssproxy_py.client.wire import (
    DEFAULT_SOCKET_PATH,
    RecordAssembler,
    XidSource,
    build_call,
    frame,
    parse_reply,
    resolve_procedure,
)
from gssproxy_py.errors import LocalError, PeerError
from gssproxy_py.proto.gss_proxy import (
    GSSPROXY_PROGRAM,
    GssxArgIndicateMechs,
    GssxMechInfo,
    GssxResIndicateMechs,
    GssxStatus,
    encode_gssx_res_indicate_mechs,
)
from gssproxy_py.proto.rpc_msg import AcceptStat, AuthStat, RejectStat, ReplyStat
from gssproxy_py.xdr import encode_bytes

PROG = 400112
V1 = GSSPROXY_PROGRAM.versions[1]
KRB5 = bytes.fromhex("2a864886f712010202")

# -- raw RPC bytes, built independently of the client -----------------------------


def mark(body: bytes, last: bool = True) -> bytes:
    return struct.pack(">I", (0x80000000 if last else 0) | len(body)) + body


def accepted(xid: int, stat: int, tail: bytes = b"", verf: bytes = b"") -> bytes:
    """REPLY, MSG_ACCEPTED, AUTH_NONE verifier (optionally with a body), stat, tail."""
    pad = b"\0" * (-len(verf) % 4)
    return (
        struct.pack(">IIII", xid, 1, 0, 0)
        + struct.pack(">I", len(verf))
        + verf
        + pad
        + (struct.pack(">I", stat) + tail)
    )


def success(xid: int, results: bytes = b"") -> bytes:
    return accepted(xid, 0, results)


def denied(xid: int, tail: bytes) -> bytes:
    return struct.pack(">III", xid, 1, 1) + tail


def indicate_mechs_result(n: int = 1) -> GssxResIndicateMechs:
    mech = GssxMechInfo(KRB5, (), (), (), (), (), b"GS2-KRB5", b"krb5", b"Kerberos 5", ())
    status = GssxStatus(0, b"", 0, b"", b"", b"", ())
    return GssxResIndicateMechs(status, (mech,) * n, (), (), ())


def mechs_bytes(n: int = 1) -> bytes:
    return encode_bytes(encode_gssx_res_indicate_mechs, indicate_mechs_result(n))


@dataclass(frozen=True)
class Call:
    xid: int
    mtype: int
    rpcvers: int
    prog: int
    vers: int
    proc: int
    cred: tuple[int, bytes]
    verf: tuple[int, bytes]
    args: bytes


def parse_call(record: bytes) -> Call:
    xid, mtype, rpcvers, prog, vers, proc, cflav, clen = struct.unpack_from(">8I", record)
    pos = 32
    cbody = record[pos : pos + clen]
    pos += clen + (-clen % 4)
    vflav, vlen = struct.unpack_from(">II", record, pos)
    pos += 8
    vbody = record[pos : pos + vlen]
    pos += vlen + (-vlen % 4)
    return Call(xid, mtype, rpcvers, prog, vers, proc, (cflav, cbody), (vflav, vbody), record[pos:])


def recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_record(conn: socket.socket) -> bytes | None:
    """One record (any number of fragments), or None at EOF."""
    out = b""
    while True:
        head = recv_exact(conn, 4)
        if head is None:
            return None
        (m,) = struct.unpack(">I", head)
        body = recv_exact(conn, m & 0x7FFFFFFF)
        if body is None:
            return None
        out += body
        if m & 0x80000000:
            return out


# -- the fake server -------------------------------------------------------------

Script = Callable[["FakeServer", socket.socket], None]


class FakeServer:
    """Accepts connections on an AF_UNIX path; runs `script(server, conn)` for each."""

    def __init__(self, path: Path, script: Script) -> None:
        self.path = path
        self.script = script
        self.records: list[bytes] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(8)
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.script(self, conn)
        except OSError:
            pass  # the client went away; that is some tests' point
        except BaseException as e:
            self.errors.append(e)
        finally:
            conn.close()

    def read(self, conn: socket.socket) -> Call | None:
        record = read_record(conn)
        if record is None:
            return None
        with self._lock:
            self.records.append(record)
        return parse_call(record)

    def close(self) -> None:
        self._sock.close()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)


def answering(reply: Callable[[Call], bytes | None]) -> Script:
    """A script that answers each call with reply(call) (framed), or closes on None."""

    def script(server: FakeServer, conn: socket.socket) -> None:
        while (call := server.read(conn)) is not None:
            data = reply(call)
            if data is None:
                return
            conn.sendall(data)

    return script


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Not tmp_path: AF_UNIX paths are limited to 107 bytes and pytest's
    # per-test directories with parametrised names can exceed that.
    d = Path(tempfile.mkdtemp(prefix="gpc-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def serve(sockdir: Path) -> Iterator[Callable[[Script], FakeServer]]:
    servers: list[FakeServer] = []

    def start(script: Script) -> FakeServer:
        s = FakeServer(sockdir / f"s{len(servers)}.sock", script)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()
    for s in servers:
        if s.errors:
            raise s.errors[0]


def rpc(server: FakeServer, timeout: float = 5.0, **kw: object) -> RpcClient:
    return RpcClient(server.path, GSSPROXY_PROGRAM, 1, timeout, **kw)  # type: ignore[arg-type]


# -- wire: call bytes -------------------------------------------------------------


def test_null_call_bytes_match_the_kernel_ping() -> None:
    # protocol-clients.md §5.1, byte for byte.
    body = build_call(0x1A2B3C4C, GSSPROXY_PROGRAM, 1, V1.procedures[0], None)
    assert frame(body).hex() == (
        "80000028" "1a2b3c4c" "00000000" "00000002"
        "00061af0" "00000001" "00000000" "00000000"
        "00000000" "00000000" "00000000"
    )  # fmt: skip


def test_indicate_mechs_call_bytes() -> None:
    arg = GssxArgIndicateMechs(call_ctx=call_ctx())
    body = build_call(7, GSSPROXY_PROGRAM, 1, V1.procedures[1], arg)
    expected = struct.pack(">10I", 7, 0, 2, PROG, 1, 1, 0, 0, 0, 0) + b"\0" * 12
    assert body == expected
    assert frame(body) == struct.pack(">I", 0x80000000 | 52) + expected


def test_options_carry_their_nul() -> None:
    arg = GssxArgIndicateMechs(call_ctx=call_ctx(option("localname")))
    body = build_call(7, GSSPROXY_PROGRAM, 1, V1.procedures[1], arg)
    assert body.endswith(
        struct.pack(">III", 0, 0, 1) + struct.pack(">I", 10) + b"localname\0\0\0" + b"\0" * 4
    )
    assert option("acquire_type", "impersonate_name").value == b"impersonate_name\0"
    assert option(b"sync_creds\0", b"\x01\x02").value == b"\x01\x02"
    assert find_option([option("localname", b"alice")], "localname") == b"alice"
    assert find_option([option("localname", b"alice")], b"localname\0") == b"alice"
    assert find_option([option("other")], "localname") is None


def test_build_call_checks_the_argument_type_and_size() -> None:
    with pytest.raises(TypeError, match="GssxArgIndicateMechs"):
        build_call(1, GSSPROXY_PROGRAM, 1, V1.procedures[1], None)
    with pytest.raises(TypeError, match="no argument"):
        build_call(1, GSSPROXY_PROGRAM, 1, V1.procedures[0], b"x")
    big = GssxArgIndicateMechs(call_ctx=call_ctx(option("x", b"\0" * 2000)))
    with pytest.raises(RequestTooLargeError) as ei:
        build_call(1, GSSPROXY_PROGRAM, 1, V1.procedures[1], big, max_size=1000)
    assert isinstance(ei.value, LocalError)


def test_xids_start_random_then_increment_and_skip_zero() -> None:
    starts = {XidSource().next() for _ in range(20)}
    assert len(starts) > 1
    assert all(1 <= x <= 0x7FFFFFFF for x in starts)
    src = XidSource(0x7FFFFFFE)
    assert [src.next() for _ in range(4)] == [0x7FFFFFFE, 0x7FFFFFFF, 1, 2]
    with pytest.raises(ValueError):
        XidSource(0)


@pytest.mark.parametrize(
    ("key", "number"),
    [
        (1, 1),
        ("1", 1),
        ("GSSX_INDICATE_MECHS", 1),
        ("indicate_mechs", 1),
        ("Indicate-Mechs", 1),
        ("null", 0),
        ("NULL", 0),
        ("gssx_verify", 12),
        ("verify", 12),
        ("wrap", 13),
        ("unwrap", 14),
        (" accept_sec_context ", 9),
    ],
)
def test_resolve_procedure(key: int | str, number: int) -> None:
    assert resolve_procedure(V1, key).number == number


@pytest.mark.parametrize("key", [16, "mechs", "GSSX_", "nope", "-1"])
def test_resolve_procedure_unknown(key: int | str) -> None:
    with pytest.raises(KeyError):
        resolve_procedure(V1, key)


def test_default_socket_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GSSPROXY_SOCKET", raising=False)
    assert default_socket_path() == DEFAULT_SOCKET_PATH == "/var/lib/gssproxy/default.sock"
    monkeypatch.setenv("GSSPROXY_SOCKET", "")
    assert default_socket_path() == DEFAULT_SOCKET_PATH
    monkeypatch.setenv("GSSPROXY_SOCKET", "/run/x.sock")
    assert default_socket_path() == "/run/x.sock"
    assert GssProxyClient().rpc.socket_path == "/run/x.sock"


# -- wire: records ----------------------------------------------------------------


def test_assembler_joins_fragments() -> None:
    a = RecordAssembler()
    stream = mark(b"abcd", last=False) + mark(b"", last=False) + mark(b"efgh") + mark(b"1234")
    assert a.feed(stream) == [b"abcdefgh", b"1234"]
    assert a.idle


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(
        st.lists(st.binary(max_size=20), min_size=1, max_size=4), min_size=1, max_size=4
    ),
    cuts=st.lists(st.integers(0, 400), max_size=10),
)
def test_assembler_any_chunking(records: list[list[bytes]], cuts: list[int]) -> None:
    stream = b"".join(
        mark(frag, last=i == len(frags) - 1) for frags in records for i, frag in enumerate(frags)
    )
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    a = RecordAssembler()
    got: list[bytes] = []
    for lo, hi in itertools.pairwise(points):
        got += a.feed(stream[lo:hi])
    assert got == [b"".join(frags) for frags in records]
    assert a.idle


def test_assembler_refuses_oversize_before_buffering() -> None:
    a = RecordAssembler(max_size=100)
    # Only the header of a 101-byte fragment: refused without waiting for the body.
    with pytest.raises(ReplyTooLargeError) as ei:
        a.feed(struct.pack(">I", 0x80000000 | 101))
    assert (ei.value.size, ei.value.limit) == (101, 100)
    b = RecordAssembler(max_size=100)
    b.feed(mark(b"x" * 60, last=False))
    with pytest.raises(ReplyTooLargeError):
        b.feed(struct.pack(">I", 0x80000000 | 41))
    assert RecordAssembler(max_size=100).feed(mark(b"x" * 100)) == [b"x" * 100]


# -- wire: reply checks ----------------------------------------------------------


def parse(record: bytes, proc: int = 1, xid: int = 5) -> object:
    return parse_reply(
        record, xid=xid, program=GSSPROXY_PROGRAM, version=1, proc=V1.procedures[proc]
    )


def test_parse_success_decodes_the_result() -> None:
    assert parse(success(5, mechs_bytes(2))) == indicate_mechs_result(2)
    assert parse(success(5), proc=0) is None
    # The verifier body is read and skipped, not checked (as the interposer does).
    assert parse(accepted(5, 0, mechs_bytes(), verf=b"abcde")) == indicate_mechs_result()


REFUSALS = [
    (accepted(5, 1), ProgramUnavailable, AcceptStat.PROG_UNAVAIL, None),
    (accepted(5, 2, struct.pack(">II", 1, 1)), ProgramMismatch, AcceptStat.PROG_MISMATCH, None),
    (accepted(5, 3), ProcedureUnavailable, AcceptStat.PROC_UNAVAIL, None),
    (accepted(5, 4), GarbageArgs, AcceptStat.GARBAGE_ARGS, None),
    (accepted(5, 5), RemoteSystemError, AcceptStat.SYSTEM_ERR, None),
    (denied(5, struct.pack(">III", 0, 2, 2)), RpcMismatch, None, RejectStat.RPC_MISMATCH),
    (denied(5, struct.pack(">II", 1, 7)), AuthError, None, RejectStat.AUTH_ERROR),
]


@pytest.mark.parametrize(
    ("record", "exc", "accept", "reject"), REFUSALS, ids=[r[1].__name__ for r in REFUSALS]
)
def test_parse_refusals(
    record: bytes,
    exc: type[RpcRejected],
    accept: AcceptStat | None,
    reject: RejectStat | None,
) -> None:
    with pytest.raises(exc) as ei:
        parse(record)
    e = ei.value
    assert isinstance(e, RpcRejected)
    assert isinstance(e, PeerError)
    assert isinstance(e, RpcClientError)
    assert (e.accept_stat, e.reject_stat) == (accept, reject)
    assert e.reply_stat == (ReplyStat.MSG_ACCEPTED if accept is not None else ReplyStat.MSG_DENIED)
    assert e.stat_name in str(e)


def test_refusal_details() -> None:
    with pytest.raises(ProgramMismatch) as pm:
        parse(accepted(5, 2, struct.pack(">II", 3, 4)))
    assert (pm.value.version, pm.value.low, pm.value.high) == (1, 3, 4)
    with pytest.raises(RpcMismatch) as rm:
        parse(denied(5, struct.pack(">III", 0, 3, 5)))
    assert (rm.value.low, rm.value.high) == (3, 5)
    with pytest.raises(AuthError) as ae:
        parse(denied(5, struct.pack(">II", 1, 7)))
    assert ae.value.stat is AuthStat.AUTH_FAILED
    assert "AUTH_FAILED" in str(ae.value)
    with pytest.raises(ProcedureUnavailable) as pu:
        parse(accepted(5, 3), proc=0)
    assert (pu.value.procedure, pu.value.name) == (0, "NULL")
    with pytest.raises(ProgramUnavailable) as pg:
        parse(accepted(5, 1))
    assert pg.value.program == PROG


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (b"\0\0", "too short"),
        (success(6), "xid"),
        (struct.pack(">II", 5, 0) + b"\0" * 40, "CALL"),
        (struct.pack(">II", 5, 7), "malformed reply header"),
        (struct.pack(">IIIII", 5, 1, 0, 0, 500), "malformed reply header"),  # verf > 400
        (accepted(5, 9), "malformed reply header"),  # unknown accept_stat
        (denied(5, struct.pack(">II", 1, 99)), "malformed reply header"),  # unknown auth_stat
        (success(5, b"\0\0\0"), "malformed GSSX_INDICATE_MECHS result"),
        (success(5, mechs_bytes() + b"\0\0\0\0"), "malformed GSSX_INDICATE_MECHS result"),
    ],
)
def test_parse_protocol_errors(record: bytes, match: str) -> None:
    with pytest.raises(RpcProtocolError, match=match) as ei:
        parse(record)
    assert isinstance(ei.value, PeerError)


def test_xid_mismatch_carries_both_xids() -> None:
    with pytest.raises(XidMismatchError) as ei:
        parse(success(6), xid=5)
    assert (ei.value.got, ei.value.expected) == (6, 5)


# -- the blocking client -----------------------------------------------------------


def test_sync_call_sends_exact_bytes_and_decodes(
    serve: Callable[[Script], FakeServer],
) -> None:
    srv = serve(answering(lambda c: mark(success(c.xid, mechs_bytes() if c.proc else b""))))
    with rpc(srv, xids=XidSource(0x10)) as client:
        res = client.call("indicate_mechs", GssxArgIndicateMechs(call_ctx()))
        assert res == indicate_mechs_result()
        assert client.call(0) is None
    assert srv.records == [
        struct.pack(">10I", 0x10, 0, 2, PROG, 1, 1, 0, 0, 0, 0) + b"\0" * 12,
        struct.pack(">10I", 0x11, 0, 2, PROG, 1, 0, 0, 0, 0, 0),
    ]
    assert srv.connections == 1  # the connection is reused


def test_sync_multi_fragment_reply(serve: Callable[[Script], FakeServer]) -> None:
    def reply(c: Call) -> bytes:
        body = success(c.xid, mechs_bytes(3))
        # Split at odd places, including a zero-length fragment.
        return mark(body[:3], False) + mark(b"", False) + mark(body[3:50], False) + mark(body[50:])

    srv = serve(answering(reply))
    with GssProxyClient(srv.path, timeout=5) as client:
        assert client.indicate_mechs() == indicate_mechs_result(3)


def test_sync_reply_in_many_small_writes(serve: Callable[[Script], FakeServer]) -> None:
    def script(server: FakeServer, conn: socket.socket) -> None:
        c = server.read(conn)
        assert c is not None
        data = mark(success(c.xid, mechs_bytes()))
        for i in range(0, len(data), 7):
            conn.sendall(data[i : i + 7])
            time.sleep(0.001)

    srv = serve(script)
    with GssProxyClient(srv.path, timeout=5) as client:
        assert client.indicate_mechs() == indicate_mechs_result()


def test_sync_xid_mismatch_closes_the_connection(serve: Callable[[Script], FakeServer]) -> None:
    srv = serve(answering(lambda c: mark(success(c.xid + 1))))
    client = rpc(srv)
    with pytest.raises(XidMismatchError):
        client.null()
    assert not client.connected


@pytest.mark.parametrize(
    ("tail", "exc"),
    [
        (lambda x: accepted(x, 1), ProgramUnavailable),
        (lambda x: accepted(x, 2, struct.pack(">II", 1, 1)), ProgramMismatch),
        (lambda x: accepted(x, 3), ProcedureUnavailable),
        (lambda x: accepted(x, 4), GarbageArgs),
        (lambda x: accepted(x, 5), RemoteSystemError),
        (lambda x: denied(x, struct.pack(">III", 0, 2, 2)), RpcMismatch),
        (lambda x: denied(x, struct.pack(">II", 1, 1)), AuthError),
    ],
)
def test_sync_refusals_keep_the_connection(
    serve: Callable[[Script], FakeServer],
    tail: Callable[[int], bytes],
    exc: type[RpcRejected],
) -> None:
    srv = serve(answering(lambda c: mark(tail(c.xid))))
    client = rpc(srv)
    for _ in range(2):
        with pytest.raises(exc):
            client.null()
        assert client.connected
    assert srv.connections == 1
    client.close()


def test_sync_oversize_reply(serve: Callable[[Script], FakeServer]) -> None:
    srv = serve(answering(lambda c: mark(success(c.xid, mechs_bytes(50)))))
    client = rpc(srv, max_reply_size=1024)
    with pytest.raises(ReplyTooLargeError):
        client.call(1, GssxArgIndicateMechs(call_ctx()))
    assert not client.connected


def test_default_limit_is_one_mib(serve: Callable[[Script], FakeServer]) -> None:
    def script(server: FakeServer, conn: socket.socket) -> None:
        c = server.read(conn)
        assert c is not None
        conn.sendall(struct.pack(">I", 0x80000000 | ((1 << 20) + 1)))
        time.sleep(1)

    srv = serve(script)
    with pytest.raises(ReplyTooLargeError, match="1048576"):
        rpc(srv).null()


def test_sync_timeout(serve: Callable[[Script], FakeServer]) -> None:
    release = threading.Event()

    def script(server: FakeServer, conn: socket.socket) -> None:
        server.read(conn)
        release.wait(5)  # never answer

    srv = serve(script)
    client = rpc(srv, timeout=0.2)
    with pytest.raises(RpcTimeoutError, match=r"NULL.*within 0\.2 s") as ei:
        client.null()
    assert isinstance(ei.value, PeerError)
    assert not client.connected
    release.set()


def test_sync_per_call_timeout(serve: Callable[[Script], FakeServer]) -> None:
    release = threading.Event()

    def script(server: FakeServer, conn: socket.socket) -> None:
        server.read(conn)
        release.wait(5)

    srv = serve(script)
    with pytest.raises(RpcTimeoutError, match=r"within 0\.1 s"):
        rpc(srv, timeout=30).call(0, timeout=0.1)
    release.set()


def test_sync_server_closes_without_reply(serve: Callable[[Script], FakeServer]) -> None:
    srv = serve(answering(lambda c: None))
    with pytest.raises(ConnectionClosedError, match="closed the connection before replying"):
        rpc(srv).null()


def test_sync_server_closes_mid_reply(serve: Callable[[Script], FakeServer]) -> None:
    def script(server: FakeServer, conn: socket.socket) -> None:
        c = server.read(conn)
        assert c is not None
        conn.sendall(mark(success(c.xid, mechs_bytes()))[:-5])  # then close

    srv = serve(script)
    with pytest.raises(ConnectionClosedError):
        rpc(srv).call(1, GssxArgIndicateMechs(call_ctx()))


def test_sync_reconnects_after_idle_close(serve: Callable[[Script], FakeServer]) -> None:
    def script(server: FakeServer, conn: socket.socket) -> None:
        c = server.read(conn)
        if c is not None:
            conn.sendall(mark(success(c.xid)))
        # Then close while idle, as a restarted daemon would.

    srv = serve(script)
    client = rpc(srv)
    client.null()
    time.sleep(0.05)
    client.null()
    assert srv.connections == 2
    client.close()


@pytest.mark.parametrize("kind", ["missing", "not-listening"])
def test_sync_connect_errors(sockdir: Path, kind: str) -> None:
    path = sockdir / "nothing.sock"
    if kind == "not-listening":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.close()  # the file stays, nobody listens
    with pytest.raises(RpcConnectionError, match=str(path)) as ei:
        RpcClient(path, GSSPROXY_PROGRAM, 1).null()
    assert isinstance(ei.value, LocalError)
    assert "\n" not in str(ei.value)


def test_sync_extra_data_is_not_taken_for_the_next_reply(
    serve: Callable[[Script], FakeServer],
) -> None:
    # A server that answers twice: the first reply is returned, the stray
    # second must not become the answer to the next call.
    srv = serve(answering(lambda c: mark(success(c.xid)) + mark(success(c.xid))))
    client = rpc(srv)
    client.null()
    assert not client.connected
    client.null()
    assert srv.connections == 2


def test_sync_after_fork_reconnects(serve: Callable[[Script], FakeServer]) -> None:
    srv = serve(answering(lambda c: mark(success(c.xid))))
    client = rpc(srv)
    client.null()
    client._pid = -1  # as if we were a forked child
    client.null()
    assert srv.connections == 2
    client.close()


def test_sync_threads_take_turns(serve: Callable[[Script], FakeServer]) -> None:
    srv = serve(answering(lambda c: mark(success(c.xid))))
    client = rpc(srv)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                client.null()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(srv.records) == 80
    assert srv.connections == 1
    client.close()


def test_gssproxy_client_methods_use_their_procedures(
    serve: Callable[[Script], FakeServer],
) -> None:
    from gssproxy_py.client.values import default_of

    seen: list[int] = []

    def reply(c: Call) -> bytes:
        seen.append(c.proc)
        proc = V1.procedures[c.proc]
        res = default_of(proc.res_type) if proc.res_type else None
        return mark(success(c.xid, encode_bytes(proc.encode_res, res)))

    srv = serve(answering(reply))
    methods = {
        1: "indicate_mechs",
        2: "get_call_context",
        3: "import_and_canon_name",
        4: "export_cred",
        5: "import_cred",
        6: "acquire_cred",
        7: "store_cred",
        8: "init_sec_context",
        9: "accept_sec_context",
        10: "release_handle",
        11: "get_mic",
        12: "verify_mic",
        13: "wrap",
        14: "unwrap",
        15: "wrap_size_limit",
    }
    with GssProxyClient(srv.path, timeout=5) as client:
        client.null()
        for number, name in methods.items():
            proc = V1.procedures[number]
            assert proc.arg_type is not None and proc.res_type is not None
            res = getattr(client, name)(default_of(proc.arg_type))
            assert isinstance(res, proc.res_type)

    async def run_async() -> None:
        async with AsyncGssProxyClient(srv.path, timeout=5) as client:
            await client.null()
            for number, name in methods.items():
                proc = V1.procedures[number]
                assert proc.arg_type is not None and proc.res_type is not None
                res = await getattr(client, name)(default_of(proc.arg_type))
                assert isinstance(res, proc.res_type)

    asyncio.run(run_async())
    assert seen == [0, *methods, 0, *methods]


# -- the asyncio client ------------------------------------------------------------


def arpc(server: FakeServer, timeout: float = 5.0, **kw: object) -> AsyncRpcClient:
    return AsyncRpcClient(server.path, GSSPROXY_PROGRAM, 1, timeout, **kw)  # type: ignore[arg-type]


def test_async_pipelines_and_matches_replies_by_xid(
    serve: Callable[[Script], FakeServer],
) -> None:
    n = 5

    def script(server: FakeServer, conn: socket.socket) -> None:
        # Read every call before answering any: only a pipelining client gets
        # past this. Then answer in reverse order with distinct results.
        calls = [server.read(conn) for _ in range(n)]
        for c in reversed(calls):
            assert c is not None
            conn.sendall(mark(success(c.xid, mechs_bytes(c.xid - 100))))

    srv = serve(script)

    async def main() -> list[object]:
        async with arpc(srv, xids=XidSource(101)) as client:
            arg = GssxArgIndicateMechs(call_ctx())
            return list(await asyncio.gather(*(client.call(1, arg) for _ in range(n))))

    results = asyncio.run(main())
    assert results == [indicate_mechs_result(i) for i in range(1, n + 1)]
    assert srv.connections == 1
    assert [parse_call(r).xid for r in srv.records] == list(range(101, 101 + n))


def test_async_multi_fragment_and_refusal(serve: Callable[[Script], FakeServer]) -> None:
    def reply(c: Call) -> bytes:
        if c.proc == 0:
            return mark(accepted(c.xid, 3))
        body = success(c.xid, mechs_bytes(2))
        return mark(body[:9], False) + mark(body[9:])

    srv = serve(answering(reply))

    async def main() -> None:
        async with AsyncGssProxyClient(srv.path, timeout=5) as client:
            with pytest.raises(ProcedureUnavailable):
                await client.null()
            assert await client.indicate_mechs() == indicate_mechs_result(2)
            assert client.rpc.connected

    asyncio.run(main())
    assert srv.connections == 1


def test_async_timeout_abandons_only_that_call(serve: Callable[[Script], FakeServer]) -> None:
    def script(server: FakeServer, conn: socket.socket) -> None:
        slow = server.read(conn)
        fast = server.read(conn)
        assert slow is not None and fast is not None
        conn.sendall(mark(success(fast.xid)))
        time.sleep(0.4)  # past the slow call's timeout
        conn.sendall(mark(success(slow.xid)))  # late: must be dropped quietly
        while (c := server.read(conn)) is not None:
            conn.sendall(mark(success(c.xid)))

    srv = serve(script)

    async def main() -> None:
        async with arpc(srv, timeout=0.25) as client:
            slow = asyncio.ensure_future(client.call(0))
            await asyncio.sleep(0.05)
            fast = asyncio.ensure_future(client.call(0))
            assert await fast is None
            with pytest.raises(RpcTimeoutError, match="NULL"):
                await slow
            await asyncio.sleep(0.3)  # the late reply arrives now
            assert client.connected
            assert await client.call(0) is None

    asyncio.run(main())
    assert srv.connections == 1


def test_async_cancelled_call_reply_is_dropped(serve: Callable[[Script], FakeServer]) -> None:
    gate = threading.Event()

    def script(server: FakeServer, conn: socket.socket) -> None:
        first = server.read(conn)
        assert first is not None
        gate.wait(5)
        conn.sendall(mark(success(first.xid)))
        while (c := server.read(conn)) is not None:
            conn.sendall(mark(success(c.xid)))

    srv = serve(script)

    async def main() -> None:
        async with arpc(srv) as client:
            task = asyncio.ensure_future(client.call(0))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert client.in_flight == 0
            gate.set()
            assert await client.call(0) is None
            assert client.connected

    asyncio.run(main())


def test_async_unknown_xid_fails_outstanding_calls(serve: Callable[[Script], FakeServer]) -> None:
    def script(server: FakeServer, conn: socket.socket) -> None:
        a = server.read(conn)
        b = server.read(conn)
        assert a is not None and b is not None
        conn.sendall(mark(success(0x7FFFFFF0)))
        time.sleep(0.5)

    srv = serve(script)

    async def main() -> None:
        async with arpc(srv, xids=XidSource(1)) as client:
            results = await asyncio.gather(client.call(0), client.call(0), return_exceptions=True)
            assert all(isinstance(r, XidMismatchError) for r in results), results
            assert isinstance(results[0], XidMismatchError)
            assert results[0].got == 0x7FFFFFF0
            assert not client.connected

    asyncio.run(main())


def test_async_server_close_fails_outstanding_calls_then_reconnects(
    serve: Callable[[Script], FakeServer],
) -> None:
    def script(server: FakeServer, conn: socket.socket) -> None:
        c = server.read(conn)
        if server.connections == 1:
            return  # close without answering
        while c is not None:
            conn.sendall(mark(success(c.xid)))
            c = server.read(conn)

    srv = serve(script)

    async def main() -> None:
        async with arpc(srv) as client:
            with pytest.raises(ConnectionClosedError, match="unanswered"):
                await client.call(0)
            assert await client.call(0) is None

    asyncio.run(main())
    assert srv.connections == 2


def test_async_oversize_reply(serve: Callable[[Script], FakeServer]) -> None:
    srv = serve(answering(lambda c: mark(success(c.xid, mechs_bytes(50)))))

    async def main() -> None:
        async with arpc(srv, max_reply_size=1024) as client:
            with pytest.raises(ReplyTooLargeError):
                await client.call(1, GssxArgIndicateMechs(call_ctx()))
            assert not client.connected

    asyncio.run(main())


def test_async_connect_error(sockdir: Path) -> None:
    async def main() -> None:
        client = AsyncRpcClient(sockdir / "none.sock", GSSPROXY_PROGRAM, 1)
        with pytest.raises(RpcConnectionError, match="no such socket"):
            await client.null()

    asyncio.run(main())


def test_async_request_too_large_is_not_sent(serve: Callable[[Script], FakeServer]) -> None:
    srv = serve(answering(lambda c: mark(success(c.xid))))

    async def main() -> None:
        async with arpc(srv, max_request_size=64) as client:
            arg = GssxArgIndicateMechs(call_ctx(option("x", b"\0" * 100)))
            with pytest.raises(RequestTooLargeError):
                await client.call(1, arg)

    asyncio.run(main())
    assert srv.records == []


def test_async_on_uvloop(serve: Callable[[Script], FakeServer]) -> None:
    uvloop = pytest.importorskip("uvloop")
    srv = serve(answering(lambda c: mark(success(c.xid, mechs_bytes()))))

    async def main() -> None:
        async with AsyncGssProxyClient(srv.path, timeout=5) as client:
            got = await asyncio.gather(*(client.indicate_mechs() for _ in range(10)))
            assert got == [indicate_mechs_result()] * 10

    uvloop.run(main())


def test_socket_path_accepts_pathlike(sockdir: Path) -> None:
    assert RpcClient(sockdir / "x", GSSPROXY_PROGRAM, 1).socket_path == os.fspath(sockdir / "x")
    with pytest.raises(ValueError, match="no version 2"):
        RpcClient(sockdir / "x", GSSPROXY_PROGRAM, 2)

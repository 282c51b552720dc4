"""A p11-kit worker's blocking loop (`server.p11kit_zygote.serve_connection`)
over a socket pair, with the fake backend: the version byte answered with
min(client's, ours), requests sent together answered together and in
order, a malformed frame or a partial frame past the record timeout closing
the connection; and the hand-off message surviving its JSON round trip,
refused by the daemon when the zygote could not read it whole."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gssproxy_py.config.model import Config, GlobalSettings
from gssproxy_py.config.peer import Peer
from gssproxy_py.p11kit.ck import Ckf
from gssproxy_py.p11kit.session import Cryptoki
from gssproxy_py.p11kit.wire import Mechanism
from gssproxy_py.server import p11kit_zygote
from gssproxy_py.server.connection import PrefixLog
from gssproxy_py.server.p11kit_workers import P11KitWorkers
from gssproxy_py.server.p11kit_zygote import MAX_MESSAGE, Handoff, serve_connection
from tests.support.p11kit_client import Request, error_of, initialize, response
from tests.support.p11kit_fake import Completing
from tests.unit.test_p11kit_session import ECDSA, FakeBackend

TIMEOUT = 10.0


def _frame(code: int, body: bytes) -> bytes:
    return struct.pack(">III", code, 0, len(body)) + body


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _handshake(sock: socket.socket) -> None:
    sock.sendall(b"\x00")
    assert _read_exact(sock, 1) == b"\x00"


def _reply(sock: socket.socket) -> tuple[int, bytes]:
    code, olen, dlen = struct.unpack(">III", _read_exact(sock, 12))
    _read_exact(sock, olen)
    return code, _read_exact(sock, dlen)


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, threading.Thread]]:
    record_timeout = getattr(request, "param", TIMEOUT)
    client, server = socket.socketpair()
    client.settimeout(TIMEOUT)
    log = PrefixLog(logging.getLogger("test"), "[p11kit 1]")

    def serve() -> None:
        try:
            backend = FakeBackend()
            serve_connection(server, Cryptoki(backend), log, record_timeout, Completing(backend))
        finally:
            server.close()

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    yield client, worker
    client.close()
    worker.join(TIMEOUT)


def test_version_and_requests_in_order(pair: tuple[socket.socket, threading.Thread]) -> None:
    client, _ = pair
    client.sendall(b"\x02")  # a newer client speaks version 0
    assert _read_exact(client, 1) == b"\x00"
    open_session = Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body()
    client.sendall(
        _frame(7, initialize()) + _frame(8, open_session) + _frame(9, Request(3, "").body())
    )
    code, body = _reply(client)
    assert code == 7 and error_of(body) is None
    code, body = _reply(client)
    assert code == 8 and response(body)[2].ulong() == 0x11
    code, _ = _reply(client)
    assert code == 9  # C_GetInfo, answered too


def test_requests_read_whole_take_the_hot_loop(
    pair: tuple[socket.socket, threading.Thread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the version byte is in, each request that arrives alone (with
    the options p11-kit-client.so sends) is answered without the frame
    buffer: setup calls by the generic dispatch, a signature's by the
    fast path, each reply with its request's code."""
    fed: list[bytes] = []
    general = p11kit_zygote._general
    monkeypatch.setattr(
        p11kit_zygote,
        "_general",
        lambda reader, fast, cryptoki, data, *rest: (
            fed.append(data) or general(reader, fast, cryptoki, data, *rest)
        ),
    )
    client, _ = pair
    _handshake(client)
    ecdsa = Mechanism(ECDSA)
    digest = b"\x5a" * 32
    requests = [
        initialize(),
        Request(4, "yfu").y(1).fu(4).body(),  # C_GetSlotList
        Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body(),
    ]
    for _ in range(2):
        requests += [
            Request(42, "uMu").u(0x11).m(ecdsa).u(3).body(),
            Request(43, "uayfy").u(0x11).ay(digest).fy(0).body(),
            Request(43, "uayfy").u(0x11).ay(digest).fy(64).body(),
        ]
    replies = []
    for code, body in enumerate(requests, 0x10):
        client.sendall(struct.pack(">III", code, 6, len(body)) + b"client" + body)
        got, reply = _reply(client)
        assert got == code and error_of(reply) is None, (code, reply)
        replies.append(reply)
    assert fed == [b"\x00"]
    assert replies[-2] == bytes.fromhex("0000002b0000000261790000000040")  # absent, 64
    assert replies[-1] == bytes.fromhex("0000002b000000026179010000004002") + b"\x02" * 63
    # A request longer than the hot loop reads at once is still answered
    # (by the general loop, which gathers it), and the hot loop goes on.
    init = Request(42, "uMu").u(0x11).m(ecdsa).u(3).body()
    long_sign = Request(43, "uayfy").u(0x11).ay(b"\x5b" * 4000).fy(64).body()
    size_query = Request(43, "uayfy").u(0x11).ay(digest).fy(0).body()
    frames = [
        struct.pack(">III", code, 6, len(body)) + b"client" + body
        for code, body in enumerate([init, long_sign, init, size_query], 0x40)
    ]
    for frame in frames:
        client.sendall(frame)
        _, reply = _reply(client)
        assert error_of(reply) is None
    assert reply == bytes.fromhex("0000002b0000000261790000000040")
    assert b"".join(fed[1:]) == frames[1]


def test_a_malformed_frame_closes_the_connection(
    pair: tuple[socket.socket, threading.Thread],
) -> None:
    client, worker = pair
    _handshake(client)
    client.sendall(_frame(5, b"\x00\x00\x00\x04\xff\xff\xff\xf0"))
    with pytest.raises(EOFError):
        _reply(client)
    worker.join(TIMEOUT)
    assert not worker.is_alive()


@pytest.mark.parametrize("pair", [0.2], indirect=True)
def test_a_partial_frame_past_the_record_timeout_closes(
    pair: tuple[socket.socket, threading.Thread],
) -> None:
    client, worker = pair
    _handshake(client)
    client.sendall(_frame(5, initialize())[:7])
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert client.recv(1) == b""


def test_the_hand_off_round_trips() -> None:
    h = Handoff(
        token=3,
        number=9,
        socket_path="/run/p11.sock",
        who="uid 1000 pid 42 program /usr/bin/ssh",
        log_level=20,
        record_timeout=30.0,
        uid=0,
        gid=0,
        groups=(0, 4),
        service="keys",
        pkcs11_module="/usr/lib/softhsm/libsofthsm2.so",
        pkcs11_uris=("pkcs11:token=t;object=k",),
        p11kit_mechanisms=("ECDSA",),
        has_pin=True,
        pin_source="keyring:k",
    )
    assert Handoff.decode(h.encode()) == h
    # The PIN travels in a pipe of its own (p11kit_workers._pin_pipe): the
    # hand-off, its JSON and its repr have no field that could hold it.
    assert not any(
        "pin" in name and name not in ("has_pin", "pin_source", "pin_problem")
        for name in json.loads(h.encode())
    )


def test_a_hand_off_the_zygote_could_not_read_whole_is_refused() -> None:
    """A hand-off over `MAX_MESSAGE` would reach the zygote cut short (a
    SOCK_SEQPACKET read keeps only what fits) and end it with every worker:
    the daemon refuses that one connection instead and sends nothing."""

    @dataclass
    class Conn:
        number: int = 1
        socket_path: str = "/run/p11.sock"

        def worker_ended(self) -> None:
            raise AssertionError("never handed off")

    ours, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    served, _client = socket.socketpair()
    workers = P11KitWorkers(None, 1.0)
    workers._control = ours
    try:
        peer = Peer(pid=42, uid=1000, gid=1000, program="/" + "x" * MAX_MESSAGE)
        config = Config(globals=GlobalSettings(), services=())
        refusal = workers._send(Conn(), peer, None, served.fileno(), config)
        assert refusal is not None and "over the zygote's" in refusal
        zygote_end.setblocking(False)
        with pytest.raises(BlockingIOError):
            zygote_end.recv(MAX_MESSAGE)
        short = Peer(pid=42, uid=1000, gid=1000, program="/usr/bin/ssh")
        assert workers._send(Conn(), short, None, served.fileno(), config) is None
        assert Handoff.decode(zygote_end.recv(MAX_MESSAGE)).who.endswith("/usr/bin/ssh")
    finally:
        for s in (ours, zygote_end, served, _client):
            s.close()

"""The p11-kit listener's connection on a fake transport: the version byte,
requests answered in order (those that do not wait at once, in one write),
one that waits on the module's thread holding the ones behind it, a
malformed frame closing only this connection, and matching by service."""

from __future__ import annotations

import asyncio
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from gssproxy_py.config.load import load_config_text
from gssproxy_py.config.model import Config, Service
from gssproxy_py.config.peer import Peer
from gssproxy_py.p11kit.ck import Ckf
from gssproxy_py.p11kit.model import Backend, VirtualObject
from gssproxy_py.p11kit.wire import Mechanism
from gssproxy_py.server.p11kit import P11KitConnection
from tests.support.p11kit_client import Request, error_of, initialize, response
from tests.unit.test_p11kit_session import FakeBackend
from tests.unit.test_rpc_connection import FakeSocket

SOCK = "/run/p11.sock"


class StreamTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sock = FakeSocket()
        self.data = b""
        self.write_calls = 0
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed
        self.write_calls += 1
        self.data += bytes(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def frames(self) -> list[tuple[int, bytes]]:
        out, data = [], self.data[1:]
        while data:
            code, olen, dlen = struct.unpack(">III", data[:12])
            out.append((code, data[12 + olen : 12 + olen + dlen]))
            data = data[12 + olen + dlen :]
        return out


class SlowBackend(FakeBackend):
    """Signs only when the test releases it, as a module thread would."""

    def __init__(self) -> None:
        super().__init__()
        self.release: asyncio.Future[None] | None = None

    async def sign(self, key: VirtualObject, mechanism: Mechanism, data: bytes) -> bytes:
        self.release = asyncio.get_running_loop().create_future()
        await self.release
        return await super().sign(key, mechanism, data)


@dataclass
class Host:
    backend: Backend | None
    config: Config = field(
        default_factory=lambda: load_config_text(
            f"[service/s]\n  mechs = krb5\n  euid = {os.getuid()}\n"
            f"  pkcs11_module = /m.so\n  pkcs11_uri = pkcs11:token=t\n  p11kit_socket = {SOCK}\n"
        )
    )
    default_socket: str = "/d.sock"
    selinux_enabled: bool = False
    p11kit_workers: None = None  # served here, on the loop
    opened: int = 0
    services: list[str] = field(default_factory=list)

    def p11kit_backend(self, service: Service, who: str) -> Backend | None:
        self.services.append(service.name)
        return self.backend

    def admit(self, conn: P11KitConnection, peer: Peer) -> bool:
        return True

    def connection_opened(self, conn: P11KitConnection) -> None:
        self.opened += 1

    def connection_closed(self, conn: P11KitConnection) -> None:
        self.opened -= 1


def _frame(code: int, body: bytes) -> bytes:
    return struct.pack(">III", code, 6, len(body)) + b"client" + body


def _connect(host: Host, path: str = SOCK) -> tuple[P11KitConnection, StreamTransport]:
    conn = P11KitConnection(host, path, 1)
    t = StreamTransport()
    conn.connection_made(t)
    return conn, t


def test_version_byte_and_in_order_answers_in_one_write() -> None:
    async def go() -> None:
        host = Host(FakeBackend())
        conn, t = _connect(host)
        conn.data_received(b"\x02")  # a 0.26 client
        assert t.data == b"\x00"
        bodies = [initialize(), Request(4, "yfu").y(0).fu(0).body(), Request(3, "").body()]
        conn.data_received(b"".join(_frame(0x10 + i, b) for i, b in enumerate(bodies)))
        assert t.write_calls == 2  # the version byte, then all three answers
        assert [code for code, _ in t.frames()] == [0x10, 0x11, 0x12]
        assert all(error_of(body) is None for _, body in t.frames())
        assert host.services == ["s"]

    asyncio.run(go())


def test_a_waiting_sign_holds_the_requests_behind_it() -> None:
    async def go() -> None:
        backend = SlowBackend()
        conn, t = _connect(Host(backend))
        conn.data_received(b"\x00" + _frame(0x10, initialize()))
        conn.data_received(_frame(0x11, Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body()))
        session = response(t.frames()[-1][1])[2].ulong()
        conn.data_received(
            _frame(0x12, Request(26, "uaA").u(session).aa([]).body())
            + _frame(0x13, Request(27, "ufu").u(session).fu(10).body())
        )
        handles = response(t.frames()[-1][1])[2]
        assert handles.flag() and handles.u32() == 4
        ec = [handles.ulong() for _ in range(4)][2]
        conn.data_received(
            _frame(0x14, Request(42, "uMu").u(session).m(Mechanism(0x1041)).u(ec).body())
            + _frame(0x15, Request(43, "uayfy").u(session).ay(b"d" * 32).fy(64).body())
            + _frame(0x16, Request(13, "u").u(session).body())
        )
        assert [c for c, _ in t.frames()][-1] == 0x14  # C_Sign waits, C_GetSessionInfo behind it
        assert conn.calls_in_flight == 1
        for _ in range(3):
            await asyncio.sleep(0)
        assert backend.release is not None
        backend.release.set_result(None)
        await conn.wait_calls()
        for _ in range(3):
            await asyncio.sleep(0)
        assert [c for c, _ in t.frames()][-2:] == [0x15, 0x16]
        _, sig, r = response(t.frames()[-2][1])
        assert sig == "ay" and r.flag() and len(r.byte_array() or b"") == 64

    asyncio.run(go())


def test_malformed_frame_closes_the_connection() -> None:
    async def go() -> None:
        host = Host(FakeBackend())
        conn, t = _connect(host)
        conn.data_received(b"\x00" + _frame(0x10, b"\x00\x00\x00\x04\xff\xff\xff\xf0"))
        assert t.closed
        conn.connection_lost(None)
        assert host.opened == 0

    asyncio.run(go())


def test_no_service_on_another_socket_sees_no_slot() -> None:
    async def go() -> None:
        host = Host(FakeBackend())
        conn, t = _connect(host, "/run/other.sock")
        conn.data_received(b"\x00" + _frame(0x10, initialize()))
        conn.data_received(_frame(0x11, Request(4, "yfu").y(0).fu(0).body()))
        r = response(t.frames()[-1][1])[2]
        assert (r.flag(), r.u32()) == (False, 0)
        assert host.services == []

    asyncio.run(go())


def test_a_reload_rebinds_the_same_service_and_keeps_the_sessions() -> None:
    async def go() -> None:
        host = Host(FakeBackend())
        conn, t = _connect(host)
        conn.data_received(b"\x00" + _frame(0x10, initialize()))
        conn.data_received(_frame(0x11, Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body()))
        session = response(t.frames()[-1][1])[2].ulong()
        host.config = load_config_text(TEXT_RELOADED.format(uid=os.getuid()))
        host.backend = FakeBackend(allowed=frozenset())
        conn.data_received(_frame(0x12, Request(13, "u").u(session).body()))
        assert error_of(t.frames()[-1][1]) is None  # the session survived
        assert host.services == ["s", "s"]  # the new policy is in use

    asyncio.run(go())


TEXT_RELOADED = (
    "[service/s]\n  mechs = krb5\n  euid = {uid}\n  pkcs11_module = /m.so\n"
    f"  pkcs11_uri = pkcs11:token=t\n  p11kit_socket = {SOCK}\n  p11kit_mechanisms = ECDSA\n"
)


@dataclass
class WorkersHost(Host):
    """A daemon with worker processes: a connection whose peer matches a
    service is handed to one (`hand_off`), never served here."""

    p11kit_workers: Any = None

    def __post_init__(self) -> None:
        self.p11kit_workers = self  # stands for P11KitWorkers
        self.handed: list[int] = []

    def hand_off(self, conn: Any, peer: Peer, service: Service, fd: int, config: Config) -> bool:
        self.handed.append(conn.number)
        return True


def test_with_workers_a_peer_that_gains_a_service_is_closed_at_the_reload() -> None:
    async def go() -> None:
        host = WorkersHost(FakeBackend())
        conn, t = _connect(host, "/run/other.sock")  # no service there: served here
        conn.data_received(b"\x00" + _frame(0x10, initialize()))
        assert host.handed == [] and not t.closed
        host.config = load_config_text(
            f"[service/s]\n  mechs = krb5\n  euid = {os.getuid()}\n  pkcs11_module = /m.so\n"
            "  pkcs11_uri = pkcs11:token=t\n  p11kit_socket = /run/other.sock\n"
        )
        # Between the reload taking the configuration and its hooks: still
        # no slot, the service is never served on the loop.
        conn.data_received(_frame(0x11, Request(4, "yfu").y(0).fu(0).body()))
        r = response(t.frames()[-1][1])[2]
        assert (r.flag(), r.u32()) == (False, 0)
        assert host.services == []
        conn.rematched(host.config)  # the reload's hook
        assert t.closed and host.handed == []

    asyncio.run(go())

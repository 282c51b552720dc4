"""The client side of p11-kit's RPC protocol, for tests: request bodies as
p11-kit-client.so builds them, and a blocking socket client.

Written from the protocol notes (tests/conformance/data/p11kit-protocol.md),
not from p11-kit; only what tests send.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence

import pytest

from gssproxy_py.p11kit.attributes import Attribute, value_length
from gssproxy_py.p11kit.wire import AttributeOut, Mechanism, OaepParams, PssParams, Reader, Writer

HANDSHAKE = b"PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1"
#: p11-kit's client module, as Debian 12 installs it (p11-kit-modules).
CLIENT = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
#: The marks of the integration tests that drive the real daemon with
#: SoftHSM2 through p11-kit's client.
INTEGRATION_MARKS = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(
        not os.path.exists("/usr/lib/softhsm/libsofthsm2.so") or not os.path.exists(CLIENT),
        reason="SoftHSM2 or p11-kit-modules is not installed (make deps installs them)",
    ),
]
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Request:
    """Builds one request body field by field."""

    def __init__(self, call_id: int, signature: str) -> None:
        self._w = Writer(call_id, signature)
        self._extra: list[bytes] = []

    def u(self, value: int) -> Request:
        self._flush()
        self._w.ulong(value)
        return self

    def y(self, value: int) -> Request:
        self._flush()
        self._w.byte(value)
        return self

    def ay(self, data: bytes | None) -> Request:
        """Input bytes: present and the array, or absent (NULL)."""
        self._flush()
        if data is None:
            self._extra.append(b"\x00" + _U32.pack(0))
        else:
            self._extra.append(b"\x01" + _U32.pack(len(data)) + data)
        return self

    def fy(self, room: int) -> Request:
        self._extra.append(_U32.pack(room))
        return self

    def fu(self, room: int) -> Request:
        self._extra.append(_U32.pack(room))
        return self

    def z(self, text: bytes) -> Request:
        self._extra.append(_U32.pack(len(text)) + text)
        return self

    def fa(self, rooms: Sequence[tuple[int, int]]) -> Request:
        self._extra.append(_U32.pack(len(rooms)))
        self._extra += [_U32.pack(t) + _U32.pack(r) for t, r in rooms]
        return self

    def aa(self, attrs: Sequence[Attribute]) -> Request:
        self._flush()
        self._w.attributes(
            [
                AttributeOut(
                    a.type, value_length(a.type, a.value) if a.value is not None else None, a.value
                )
                for a in attrs
            ]
        )
        return self

    def m(self, mech: Mechanism) -> Request:
        self._extra.append(_U32.pack(mech.type))
        p = mech.param
        if isinstance(p, PssParams):
            self._extra.append(_U64.pack(p.hash_alg) + _U64.pack(p.mgf) + _U64.pack(p.salt_length))
        elif isinstance(p, OaepParams):
            self._extra.append(_U64.pack(p.hash_alg) + _U64.pack(p.mgf) + _U64.pack(p.source))
            d = p.source_data
            self._extra.append(_U32.pack(0xFFFFFFFF) if d is None else _U32.pack(len(d)) + d)
        elif p is None:
            self._extra.append(_U32.pack(0xFFFFFFFF))
        else:
            self._extra.append(_U32.pack(len(p)) + p)
        return self

    def _flush(self) -> None:
        if self._extra:
            self._w._parts += self._extra  # the test helper shares the writer
            self._extra = []

    def body(self) -> bytes:
        self._flush()
        return self._w.body()


def initialize() -> bytes:
    return Request(1, "ayyay").ay(HANDSHAKE).y(0).ay(b"\x00").body()


def response(body: bytes) -> tuple[int, str, Reader]:
    """(call id, signature, reader at the first field) of a response body."""
    r = Reader(body)
    cid = r.u32()
    sig = r.signature()
    return cid, sig, r


def error_of(body: bytes) -> int | None:
    """The CK_RV of an ERROR response, None for a normal one."""
    cid, sig, r = response(body)
    if cid != 0:
        return None
    assert sig == "u"
    return r.ulong()


class P11KitClient:
    """One blocking connection: version byte, then frames in order."""

    def __init__(self, path: str, version: int = 0, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.sock.sendall(bytes((version,)))
        self.version = self.read_exact(1)[0]
        self.code = 0x10

    def read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, body: bytes) -> bytes:
        code = self.code
        self.code += 1
        self.sock.sendall(struct.pack(">III", code, 6, len(body)) + b"client" + body)
        header = self.read_exact(12)
        got, olen, dlen = struct.unpack(">III", header)
        assert got == code, (got, code)
        self.read_exact(olen)
        return self.read_exact(dlen)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> P11KitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

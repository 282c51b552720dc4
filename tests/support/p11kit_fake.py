"""A deterministic virtual token and backend for the p11-kit sign and
decrypt paths (tests/unit/test_p11kit_fast.py, the fuzz targets): RSA and
EC private keys, one key that may not sign, one mechanism policy leaves
out, and outputs that depend only on the order of the calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gssproxy_py.p11kit.attributes import Cka
from gssproxy_py.p11kit.calls import dispatch
from gssproxy_py.p11kit.ck import Ckf, Cko, Ckr
from gssproxy_py.p11kit.fast import FastCalls, complete
from gssproxy_py.p11kit.model import Backend, CkError, MechanismInfo, VirtualObject, VirtualToken
from gssproxy_py.p11kit.session import Cryptoki
from gssproxy_py.p11kit.wire import Mechanism, PssParams, encode_frame
from tests.support.p11kit_client import Request, error_of, initialize

RSA_PKCS, RSA_OAEP, RSA_PSS, SHA256_RSA, ECDSA = 0x1, 0x9, 0xD, 0x40, 0x1041
SIGN_DECRYPT = Ckf.SIGN | Ckf.DECRYPT | Ckf.VERIFY


def _key(cls: Cko, label: bytes, key_type: int, usage: dict[int, object]) -> VirtualObject:
    attrs = {Cka.CLASS: int(cls), Cka.LABEL: label, Cka.KEY_TYPE: key_type, **usage}
    return VirtualObject(cls, attrs, frozenset(), key_ref=label)


TOKEN = VirtualToken(
    label="fast",
    manufacturer="m",
    model="v",
    serial="1",
    objects=(
        _key(Cko.PRIVATE_KEY, b"rsa", 0, {Cka.SIGN: True}),
        _key(Cko.PRIVATE_KEY, b"ec", 3, {Cka.SIGN: True, Cka.DECRYPT: False}),
        _key(Cko.PUBLIC_KEY, b"ec", 3, {}),
        _key(Cko.PRIVATE_KEY, b"nosign", 0, {Cka.SIGN: False}),
    ),
    mechanisms={
        RSA_PKCS: MechanismInfo(1024, 8192, SIGN_DECRYPT),
        RSA_OAEP: MechanismInfo(1024, 8192, Ckf.DECRYPT),
        RSA_PSS: MechanismInfo(1024, 8192, Ckf.SIGN | Ckf.VERIFY),
        SHA256_RSA: MechanismInfo(1024, 8192, Ckf.SIGN | Ckf.VERIFY),
        ECDSA: MechanismInfo(256, 521, Ckf.SIGN | Ckf.VERIFY),
    },
)


@dataclass
class SignBackend:
    """Deterministic: the nth output is n repeated; input starting with 0xee fails."""

    made: list[bytes] = field(default_factory=list)

    async def tokens(self) -> tuple[VirtualToken, ...]:
        return (TOKEN,)

    def _make(self, data: bytes, length: int) -> bytes:
        if data[:1] == b"\xee":
            raise CkError(Ckr.DEVICE_ERROR)
        self.made.append(data)
        return bytes([len(self.made) % 256]) * length

    async def sign(self, key: VirtualObject, mechanism: Mechanism, data: bytes) -> bytes:
        return self._make(data, self.output_length(key, mechanism))

    async def decrypt(self, key: VirtualObject, mechanism: Mechanism, data: bytes) -> bytes:
        return self._make(data, min(len(data), 100))

    def verify(
        self, key: VirtualObject, mechanism: Mechanism, data: bytes, signature: bytes
    ) -> None:
        raise CkError(0xC0)

    def output_length(self, key: VirtualObject, mechanism: Mechanism) -> int:
        ec = key.attributes[Cka.KEY_TYPE] == 3
        if ec != (mechanism.type == ECDSA):
            raise CkError(Ckr.KEY_TYPE_INCONSISTENT)
        if mechanism.type == RSA_PSS and not isinstance(mechanism.param, PssParams):
            raise CkError(Ckr.MECHANISM_PARAM_INVALID)
        return 64 if ec else 256

    def allows(self, mechanism: int) -> bool:
        return mechanism != SHA256_RSA  # one mechanism the service's policy leaves out

    def note_login(self, user_type: int) -> None:
        pass


@dataclass(frozen=True)
class Completing:
    """`operate_inline` for a fake backend: its coroutine run to its end
    (the fakes never wait), as the worker's `ServiceTokens` does inline."""

    backend: Backend

    def operate_inline(
        self, sign: bool, key: VirtualObject, mechanism: Mechanism, data: bytes
    ) -> bytes:
        make = self.backend.sign if sign else self.backend.decrypt
        return complete(make(key, mechanism, data))


#: The transaction code the hot-call tests send (any non-zero one does).
CODE = 0x5EED


def hot_answer(fast: FastCalls, body: bytes) -> bytes | None:
    """The fast path's reply body to `body` (None: left to the generic
    path), its frame's header checked against `encode_frame`'s."""
    frame = fast.frame(CODE, body)
    if frame is None:
        return None
    reply = frame[12:]
    assert frame == encode_frame(CODE, reply)
    return reply


def opened() -> tuple[Cryptoki, SignBackend]:
    """A connection after C_Initialize with sessions 0x11 and 0x12 open."""
    backend = SignBackend()
    c = Cryptoki(backend)
    for body in (
        initialize(),
        Request(4, "yfu").y(1).fu(4).body(),  # C_GetSlotList: fetches the token
        Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body(),
        Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body(),
    ):
        assert error_of(asyncio.run(dispatch(c, body))) is None
    return c, backend

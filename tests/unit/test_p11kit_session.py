"""The p11-kit call handlers on a fake backend: slots, sessions, searches,
attributes in the client's order, size queries and CKR_BUFFER_TOO_SMALL
keeping the operation, multi-part signing, policy refusals, and that a
C_Login's PIN goes nowhere."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from gssproxy_py.p11kit.attributes import Attribute, Cka
from gssproxy_py.p11kit.calls import CALLS, dispatch
from gssproxy_py.p11kit.ck import Ckf, Cko, Ckr
from gssproxy_py.p11kit.model import CkError, MechanismInfo, VirtualObject, VirtualToken
from gssproxy_py.p11kit.session import Cryptoki
from gssproxy_py.p11kit.wire import Mechanism, ProtocolError
from tests.support.p11kit_client import Request, error_of, initialize, response

PIN = b"consumer-PIN-never-used-9931"
ECDSA = 0x1041
SHA256_RSA = 0x40
SIG_LEN = {ECDSA: 64, SHA256_RSA: 256}


def _key(
    cls: Cko, label: bytes, key_id: bytes, key_type: int, extra: dict[int, object] | None = None
) -> VirtualObject:
    attrs: dict[int, object] = {
        Cka.CLASS: int(cls),
        Cka.LABEL: label,
        Cka.ID: key_id,
        Cka.KEY_TYPE: key_type,
        Cka.TOKEN: True,
        **(extra or {}),
    }
    sensitive = (
        frozenset({Cka.VALUE, Cka.PRIVATE_EXPONENT}) if cls is Cko.PRIVATE_KEY else frozenset()
    )
    return VirtualObject(cls, attrs, sensitive, key_ref=label)  # type: ignore[arg-type]


OBJECTS = (
    _key(Cko.PRIVATE_KEY, b"rsa", b"\x01", 0, {Cka.SIGN: True, Cka.SENSITIVE: True}),
    _key(Cko.PUBLIC_KEY, b"rsa", b"\x01", 0, {Cka.MODULUS: b"\xc5" * 256}),
    _key(Cko.PRIVATE_KEY, b"ec", b"\x02", 3, {Cka.SIGN: True}),
    _key(Cko.PUBLIC_KEY, b"ec", b"\x02", 3),
)
TOKEN = VirtualToken(
    label="gpytest",
    manufacturer="SoftHSM project",
    model="SoftHSM v2",
    serial="0123",
    objects=OBJECTS,
    mechanisms={
        ECDSA: MechanismInfo(256, 521, Ckf.SIGN | Ckf.VERIFY),
        SHA256_RSA: MechanismInfo(1024, 8192, Ckf.SIGN | Ckf.VERIFY),
    },
)


@dataclass
class FakeBackend:
    signed: list[tuple[bytes, bytes]] = field(default_factory=list)  # (label, data)
    logins: list[int] = field(default_factory=list)
    allowed: frozenset[int] = frozenset({ECDSA, SHA256_RSA})
    fail: int | None = None

    async def tokens(self) -> tuple[VirtualToken, ...]:
        return (TOKEN,)

    async def sign(self, key: VirtualObject, mechanism: Mechanism, data: bytes) -> bytes:
        if self.fail is not None:
            raise CkError(self.fail)
        self.signed.append((key.attributes[Cka.LABEL], data))  # type: ignore[arg-type]
        return bytes([len(self.signed)]) * SIG_LEN[mechanism.type]

    async def decrypt(self, key: VirtualObject, mechanism: Mechanism, data: bytes) -> bytes:
        return data[::-1]

    def verify(
        self, key: VirtualObject, mechanism: Mechanism, data: bytes, signature: bytes
    ) -> None:
        if signature != b"ok":
            raise CkError(0xC0)

    def output_length(self, key: VirtualObject, mechanism: Mechanism) -> int:
        if (mechanism.type == ECDSA) != (key.attributes[Cka.KEY_TYPE] == 3):
            raise CkError(Ckr.KEY_TYPE_INCONSISTENT)
        return SIG_LEN[mechanism.type]

    def allows(self, mechanism: int) -> bool:
        return mechanism in self.allowed

    def note_login(self, user_type: int) -> None:
        self.logins.append(user_type)


def call(c: Cryptoki, body: bytes) -> bytes:
    return asyncio.run(dispatch(c, body))


def ok(c: Cryptoki, body: bytes) -> object:
    out = call(c, body)
    assert error_of(out) is None, hex(error_of(out) or 0)
    return response(out)[2]


def opened(backend: FakeBackend | None = None) -> tuple[Cryptoki, FakeBackend, int]:
    b = backend or FakeBackend()
    c = Cryptoki(b)
    call(c, initialize())
    r = ok(c, Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body())
    return c, b, r.ulong()  # type: ignore[attr-defined]


def find(c: Cryptoki, session: int, template: list[Attribute]) -> list[int]:
    call(c, Request(26, "uaA").u(session).aa(template).body())
    r = ok(c, Request(27, "ufu").u(session).fu(100).body())
    call(c, Request(28, "u").u(session).body())
    assert r.flag()  # type: ignore[attr-defined]
    n = r.u32()  # type: ignore[attr-defined]
    return [r.ulong() for _ in range(n)]  # type: ignore[attr-defined]


def test_slot_list_size_query_then_fill() -> None:
    c = Cryptoki(FakeBackend())
    call(c, initialize())
    r = ok(c, Request(4, "yfu").y(0).fu(0).body())
    assert (r.flag(), r.u32()) == (False, 1)  # type: ignore[attr-defined]
    r = ok(c, Request(4, "yfu").y(0).fu(4).body())
    assert (r.flag(), r.u32(), r.ulong()) == (True, 1, 0x11)  # type: ignore[attr-defined]


def test_no_service_sees_no_slot() -> None:
    c = Cryptoki(None)
    call(c, initialize())
    r = ok(c, Request(4, "yfu").y(0).fu(0).body())
    assert (r.flag(), r.u32()) == (False, 0)  # type: ignore[attr-defined]
    assert error_of(call(c, Request(6, "u").u(0x11).body())) == Ckr.SLOT_ID_INVALID


def test_token_info_says_write_protected_and_no_login() -> None:
    c = Cryptoki(FakeBackend())
    call(c, initialize())
    r = ok(c, Request(6, "u").u(0x11).body())
    label = r.string()  # type: ignore[attr-defined]
    for _ in range(3):
        r.string()  # type: ignore[attr-defined]
    flags = r.ulong()  # type: ignore[attr-defined]
    assert label == b"gpytest".ljust(32)
    assert flags & Ckf.WRITE_PROTECTED and not flags & 0x4  # no CKF_LOGIN_REQUIRED


def test_search_by_class_and_id_and_handles_per_connection() -> None:
    c, _, s = opened()
    privs = find(c, s, [Attribute(Cka.CLASS, int(Cko.PRIVATE_KEY))])
    assert len(privs) == 2
    ec = find(c, s, [Attribute(Cka.CLASS, int(Cko.PRIVATE_KEY)), Attribute(Cka.ID, b"\x02")])
    assert len(ec) == 1 and ec[0] in privs
    assert find(c, s, [Attribute(Cka.LABEL, b"nope")]) == []
    # another connection has its own sessions: this session handle means nothing there
    other = Cryptoki(FakeBackend())
    call(other, initialize())
    assert error_of(call(other, Request(13, "u").u(s).body())) == Ckr.SESSION_HANDLE_INVALID


def test_attributes_in_client_order_with_size_query_and_sensitive() -> None:
    c, _, s = opened()
    (rsa, _ec) = find(c, s, [Attribute(Cka.CLASS, int(Cko.PRIVATE_KEY))])
    rooms = [(Cka.LABEL, 0), (Cka.VALUE, 64), (Cka.ID, 8), (0xDEAD, 8), (Cka.KEY_TYPE, 8)]
    r = ok(c, Request(24, "uufA").u(s).u(rsa).fa(rooms).body())
    n = r.u32()  # type: ignore[attr-defined]
    got = []
    for _ in range(n):
        t = r.u32()  # type: ignore[attr-defined]
        if not r.flag():  # type: ignore[attr-defined]
            got.append((t, None))
            continue
        length = r.u32()  # type: ignore[attr-defined]
        if t == Cka.KEY_TYPE:
            got.append((t, (length, r.ulong())))  # type: ignore[attr-defined]
        else:
            got.append((t, (length, r.byte_array())))  # type: ignore[attr-defined]
    rv = r.ulong()  # type: ignore[attr-defined]
    assert got == [
        (Cka.LABEL, (3, None)),  # length only
        (Cka.VALUE, None),
        (Cka.ID, (1, b"\x01")),
        (0xDEAD, None),
        (Cka.KEY_TYPE, (8, 0)),
    ]
    assert rv == Ckr.ATTRIBUTE_SENSITIVE


def test_sign_size_query_and_too_small_keep_the_operation() -> None:
    c, b, s = opened()
    (_, ec) = find(c, s, [Attribute(Cka.CLASS, int(Cko.PRIVATE_KEY))])
    ok(c, Request(42, "uMu").u(s).m(Mechanism(ECDSA)).u(ec).body())
    digest = b"\x11" * 32
    r = ok(c, Request(43, "uayfy").u(s).ay(digest).fy(0).body())
    assert (r.flag(), r.u32()) == (False, 64)  # type: ignore[attr-defined]
    r = ok(c, Request(43, "uayfy").u(s).ay(digest).fy(10).body())
    assert (r.flag(), r.u32()) == (False, 64)  # type: ignore[attr-defined]
    assert b.signed == []  # no signature made for a room it cannot fit
    r = ok(c, Request(43, "uayfy").u(s).ay(digest).fy(512).body())
    assert r.flag() and r.byte_array() == b"\x01" * 64  # type: ignore[attr-defined]
    assert b.signed == [(b"ec", digest)]
    # the operation ended with the signature
    assert error_of(call(c, Request(43, "uayfy").u(s).ay(digest).fy(512).body())) == (
        Ckr.OPERATION_NOT_INITIALIZED
    )


def test_multipart_sign() -> None:
    c, b, s = opened()
    (rsa, _) = find(c, s, [Attribute(Cka.CLASS, int(Cko.PRIVATE_KEY))])
    ok(c, Request(42, "uMu").u(s).m(Mechanism(SHA256_RSA)).u(rsa).body())
    for part in (b"hello ", b"multi", b"part"):
        ok(c, Request(44, "uay").u(s).ay(part).body())
    r = ok(c, Request(45, "ufy").u(s).fy(0).body())
    assert (r.flag(), r.u32()) == (False, 256)  # type: ignore[attr-defined]
    r = ok(c, Request(45, "ufy").u(s).fy(256).body())
    assert r.flag() and len(r.byte_array()) == 256  # type: ignore[attr-defined]
    assert b.signed == [(b"rsa", b"hello multipart")]


def test_sign_refusals() -> None:
    c, _, s = opened(FakeBackend(allowed=frozenset({SHA256_RSA})))
    rsa, ec = find(c, s, [Attribute(Cka.CLASS, int(Cko.PRIVATE_KEY))])
    (pub,) = find(c, s, [Attribute(Cka.CLASS, int(Cko.PUBLIC_KEY)), Attribute(Cka.ID, b"\x01")])
    # not in the service's allowed list
    assert error_of(call(c, Request(42, "uMu").u(s).m(Mechanism(ECDSA)).u(ec).body())) == (
        Ckr.MECHANISM_INVALID
    )
    # not served at all
    assert error_of(call(c, Request(42, "uMu").u(s).m(Mechanism(0x3)).u(rsa).body())) == (
        Ckr.MECHANISM_INVALID
    )
    assert error_of(call(c, Request(42, "uMu").u(s).m(Mechanism(SHA256_RSA)).u(pub).body())) == (
        Ckr.KEY_FUNCTION_NOT_PERMITTED
    )
    assert error_of(call(c, Request(42, "uMu").u(s).m(Mechanism(SHA256_RSA)).u(99).body())) == (
        Ckr.OBJECT_HANDLE_INVALID
    )


def test_backend_failure_ends_the_operation() -> None:
    """The module is called once per signature, at C_Sign (its SignInit and
    Sign together): an error it would have given at C_SignInit comes with
    C_Sign, after C_SignInit and the size query succeeded (docs/PKCS11.md)."""
    c, b, s = opened(FakeBackend(fail=Ckr.DEVICE_ERROR))
    (_, ec) = find(c, s, [Attribute(Cka.CLASS, int(Cko.PRIVATE_KEY))])
    ok(c, Request(42, "uMu").u(s).m(Mechanism(ECDSA)).u(ec).body())
    r = ok(c, Request(43, "uayfy").u(s).ay(b"x" * 32).fy(0).body())
    assert (r.flag(), r.u32()) == (False, 64)  # type: ignore[attr-defined]
    assert b.signed == []  # neither call reached the module
    assert error_of(call(c, Request(43, "uayfy").u(s).ay(b"x" * 32).fy(64).body())) == (
        Ckr.DEVICE_ERROR
    )
    assert error_of(call(c, Request(43, "uayfy").u(s).ay(b"x" * 32).fy(64).body())) == (
        Ckr.OPERATION_NOT_INITIALIZED
    )


@pytest.mark.parametrize(
    ("request_body", "rv"),
    [
        (Request(15, "uayay").u(0x11).ay(b"old").ay(b"new").body(), Ckr.TOKEN_WRITE_PROTECTED),
        (Request(14, "uay").u(0x11).ay(b"pin").body(), Ckr.TOKEN_WRITE_PROTECTED),
        (Request(9, "uayz").u(0x11).ay(b"so").z(b"label").body(), Ckr.TOKEN_WRITE_PROTECTED),
        (
            Request(59, "uMaAaA").u(0x11).m(Mechanism(0x0)).aa([]).aa([]).body(),
            Ckr.TOKEN_WRITE_PROTECTED,
        ),
        (Request(22, "uu").u(0x11).u(1).body(), Ckr.TOKEN_WRITE_PROTECTED),
        (
            Request(60, "uMuufy").u(0x11).m(Mechanism(0x1)).u(1).u(2).fy(0).body(),
            Ckr.ACTION_PROHIBITED,
        ),
        (Request(64, "ufy").u(0x11).fy(16).body(), Ckr.FUNCTION_NOT_SUPPORTED),
        (Request(77, "u").u(0x11).body(), Ckr.FUNCTION_NOT_SUPPORTED),  # a v1 call id
    ],
)
def test_refused_calls_answer_and_keep_the_connection(request_body: bytes, rv: int) -> None:
    c, _, s = opened()
    assert error_of(call(c, request_body)) == rv
    ok(c, Request(13, "u").u(s).body())  # still serving


def test_login_succeeds_without_using_the_pin_and_logout_is_a_no_op() -> None:
    c, b, s = opened()
    out = call(c, Request(18, "uuay").u(s).u(1).ay(PIN).body())
    assert error_of(out) is None and PIN not in out
    assert b.logins == [1]
    assert error_of(call(c, Request(18, "uuay").u(s).u(0).ay(PIN).body())) == Ckr.ACTION_PROHIBITED
    ok(c, Request(19, "u").u(s).body())
    r = ok(c, Request(13, "u").u(s).body())
    assert r.ulong() == 0x11  # type: ignore[attr-defined]
    assert r.ulong() == 1  # type: ignore[attr-defined]  # CKS_RO_USER_FUNCTIONS


def test_wait_for_slot_event() -> None:
    c = Cryptoki(FakeBackend())
    assert error_of(call(c, Request(65, "u").u(1).body())) == Ckr.NO_EVENT
    assert error_of(call(c, Request(65, "u").u(0).body())) == Ckr.FUNCTION_NOT_SUPPORTED


def test_verify_locally() -> None:
    c, _, s = opened()
    (pub,) = find(c, s, [Attribute(Cka.CLASS, int(Cko.PUBLIC_KEY)), Attribute(Cka.ID, b"\x02")])
    ok(c, Request(48, "uMu").u(s).m(Mechanism(ECDSA)).u(pub).body())
    ok(c, Request(49, "uayay").u(s).ay(b"d" * 32).ay(b"ok").body())
    ok(c, Request(48, "uMu").u(s).m(Mechanism(ECDSA)).u(pub).body())
    assert error_of(call(c, Request(49, "uayay").u(s).ay(b"d" * 32).ay(b"bad").body())) == 0xC0


@pytest.mark.parametrize(
    "body",
    [
        Request(4, "yu").y(0).u(0).body(),  # wrong signature for the id
        Request(0, "").body(),  # call id 0
        Request(4, "yfu").y(0).body(),  # truncated
        Request(4, "yfu").y(0).fu(0).body() + b"\x00",  # trailing
        b"\x00\x00",  # too short for an id
    ],
)
def test_malformed_bodies_raise_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        call(Cryptoki(FakeBackend()), body)


def test_every_call_has_a_row() -> None:
    assert sorted(CALLS) == list(range(1, 66))

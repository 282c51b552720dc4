"""The token layer and the TOKEN_SIGN handlers on a scripted fake module.

The fake implements the adapter protocols with `cryptography` keys, so every
signature can be verified, and lets a test remove tokens, kill sessions,
lock PINs or fail the module load. Calls go through the real handlers with a
synthetic CallInfo, as the server will make them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from gssproxy_py.config import load_config_text
from gssproxy_py.config.model import PinSource
from gssproxy_py.config.peer import Peer
from gssproxy_py.pkcs11 import token as token_module
from gssproxy_py.pkcs11.adapter import (
    KeyOperation,
    LibraryInfo,
    ObjectClass,
    ObjectView,
    RawParam,
    RawValue,
    TokenFlag,
    TokenInfo,
)
from gssproxy_py.pkcs11.errors import CkrError, ModuleLoadError, PinSourceError, SignFailure
from gssproxy_py.pkcs11.keys import KeyKind
from gssproxy_py.pkcs11.mechanisms import MECHANISMS, Ckm, Mgf, PssParams
from gssproxy_py.pkcs11.pin import Pin
from gssproxy_py.pkcs11.pkinit import PkinitRequest
from gssproxy_py.pkcs11.program import TokenSignBackend, build_token_sign
from gssproxy_py.pkcs11.token import ModuleWorker, ServiceAccess
from gssproxy_py.pkcs11.uri import parse_uri
from gssproxy_py.proto.token_sign import (
    TOKEN_SIGN,
    TsKeyInfo,
    TsListKeysOutcomeFailure,
    TsListKeysOutcomeListing,
    TsListKeysRes,
    TsMechanism,
    TsSignArg,
    TsSignInputDigest,
    TsSignInputMessage,
    TsSignOutcomeFailure,
    TsSignOutcomeSignature,
    TsSignRes,
    TsStatus,
)
from gssproxy_py.rpc.dispatch import CallInfo, ProgramService
from tests.support.signatures import HASHES, verify

MODULE = "/nonexistent/fake-p11.so"
LOGIN_FLAGS = (
    TokenFlag.LOGIN_REQUIRED | TokenFlag.USER_PIN_INITIALIZED | TokenFlag.TOKEN_INITIALIZED
)
ALL_MECHS = frozenset(int(m) for m in Ckm) - {Ckm.ECDSA_SHA256, Ckm.ECDSA_SHA384, Ckm.ECDSA_SHA512}

# Software keys are slow to make (RSA); make them once.
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


# -- the fake module -------------------------------------------------------------


@dataclass
class FakeKey:
    label: str
    key_id: bytes
    private: Any
    extractable: bool = False
    always_authenticate: bool = False

    @property
    def kind(self) -> KeyKind:
        if isinstance(self.private, rsa.RSAPrivateKey):
            return KeyKind.RSA
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return KeyKind.EC
        return KeyKind.EC_EDWARDS

    def view(self, cls: ObjectClass) -> ObjectView:
        pub = self.private.public_key()
        if self.kind is KeyKind.RSA:
            n = pub.public_numbers()
            extra: dict[str, Any] = {
                "modulus": n.n.to_bytes(256, "big"),
                "public_exponent": n.e.to_bytes(3, "big"),
            }
        elif self.kind is KeyKind.EC:
            point = pub.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            extra = {"ec_params": bytes.fromhex("06082a8648ce3d030107")}
            if cls is ObjectClass.PUBLIC_KEY:
                extra["ec_point"] = bytes([4, len(point)]) + point
        else:
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            extra = {"ec_params": b"\x13\x0cedwards25519"}
            if cls is ObjectClass.PUBLIC_KEY:
                extra["ec_point"] = bytes([4, 32]) + raw
        if cls is ObjectClass.PRIVATE_KEY:
            extra["extractable"] = self.extractable
            extra["sensitive"] = not self.extractable
        return ObjectView(
            object_class=cls,
            label=self.label,
            key_id=self.key_id,
            key_type=int(self.kind),
            handle=self,
            **extra,
        )


@dataclass
class FakeCopy:
    """A session copy of a FakeKey (C_CopyObject with CKA_TOKEN false)."""

    original: FakeKey
    sensitive: bool
    extractable: bool
    alive: bool = True


@dataclass
class FakeToken:
    label: str
    pin: str
    keys: list[FakeKey]
    slot_id: int
    serial: str = "0001"
    flags: TokenFlag = LOGIN_FLAGS
    mechanisms: frozenset[int] = ALL_MECHS
    present: bool = True
    logged_in: bool = False
    login_attempts: int = 0
    login_result: str = ""  # a CKR to return from C_Login regardless of the PIN
    sessions: list[FakeSession] = field(default_factory=list)
    used: list[int] = field(default_factory=list)  # mechanisms signed with
    copy_result: str = ""  # a CKR to refuse C_CopyObject with
    weaken_copies: bool = False  # copies read extractable and not sensitive
    copies: list[FakeCopy] = field(default_factory=list)
    signed_with: list[object] = field(default_factory=list)  # the handles used

    def info(self) -> TokenInfo:
        return TokenInfo(
            slot_id=self.slot_id,
            slot_description="fake slot",
            slot_manufacturer="fake",
            label=self.label,
            manufacturer="Fake Inc.",
            model="F1",
            serial=self.serial,
            flags=self.flags,
        )

    def kill_sessions(self) -> None:
        for s in self.sessions:
            s.alive = False
        self.logged_in = False


class FakeSession:
    def __init__(self, token: FakeToken, lib: FakeLibrary) -> None:
        self.token = token
        self.lib = lib
        self.alive = True
        self.operation_left_active = False

    def _check(self, call: str) -> None:
        self.lib.calls.append(threading.current_thread().name)
        if not self.token.present:
            raise CkrError("CKR_DEVICE_REMOVED", call)
        if not self.alive:
            raise CkrError("CKR_SESSION_HANDLE_INVALID", call)

    def objects(
        self, object_class: ObjectClass, *, label: str | None = None, key_id: bytes | None = None
    ) -> list[ObjectView]:
        self._check("C_FindObjects")
        if object_class is ObjectClass.CERTIFICATE:
            return []
        if object_class is ObjectClass.PRIVATE_KEY and not self.token.logged_in:
            return []
        return [
            k.view(object_class)
            for k in self.token.keys
            if (label is None or k.label == label) and (key_id is None or k.key_id == key_id)
        ]

    def sign(self, key: ObjectView, mechanism: int, param: PssParams | None, data: bytes) -> bytes:
        self._check("C_Sign")
        if mechanism not in self.token.mechanisms:
            raise CkrError("CKR_MECHANISM_INVALID", "C_Sign")
        self.token.used.append(mechanism)
        self.token.signed_with.append(key.handle)
        fk = self._key(key, "C_Sign")
        priv = fk.private
        m = Ckm(mechanism)
        if m is Ckm.EDDSA:
            return bytes(priv.sign(data))
        if m is Ckm.ECDSA:
            h = HASHES[len(data)]
            der = priv.sign(data, ec.ECDSA(utils.Prehashed(h)))
            r, s = utils.decode_dss_signature(der)
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if m is Ckm.RSA_PKCS:
            for size, h in HASHES.items():
                prefix = data[: len(data) - size]
                if len(data) > size and prefix[-2:] == bytes([4, size]):
                    return bytes(priv.sign(data[-size:], padding.PKCS1v15(), utils.Prehashed(h)))
            raise CkrError("CKR_DATA_INVALID", "C_Sign")
        assert param is not None or "PSS" not in m.name
        if m is Ckm.RSA_PKCS_PSS:
            assert param is not None
            h = HASHES[len(data)]
            pss = padding.PSS(padding.MGF1(h), param.salt_length)
            return bytes(priv.sign(data, pss, utils.Prehashed(h)))
        h = {"SHA256": hashes.SHA256(), "SHA384": hashes.SHA384(), "SHA512": hashes.SHA512()}[
            m.name.split("_")[0]
        ]
        if m.name.endswith("PSS"):
            assert param is not None
            return bytes(priv.sign(data, padding.PSS(padding.MGF1(h), param.salt_length), h))
        return bytes(priv.sign(data, padding.PKCS1v15(), h))

    def _key(self, obj: ObjectView, call: str) -> FakeKey:
        """The key behind a view: a live copy's original, or a key still on the token."""
        handle = obj.handle
        if isinstance(handle, FakeCopy):
            if not handle.alive:
                raise CkrError("CKR_OBJECT_HANDLE_INVALID", call)
            return handle.original
        assert isinstance(handle, FakeKey)
        if handle not in self.token.keys:
            raise CkrError("CKR_OBJECT_HANDLE_INVALID", call)
        return handle

    def read_attributes(self, obj: ObjectView, types: Sequence[int]) -> dict[int, RawValue]:
        self._check("C_GetAttributeValue")
        security: dict[int, RawValue] = {}
        if obj.object_class is ObjectClass.PRIVATE_KEY:
            fk = self._key(obj, "C_GetAttributeValue")
            copy = obj.handle if isinstance(obj.handle, FakeCopy) else None
            security = {
                0x1: copy is None,
                0x2: True,
                0x103: copy.sensitive if copy else not fk.extractable,
                0x162: copy.extractable if copy else fk.extractable,
                0x202: fk.always_authenticate,
            }
        have: dict[int, RawValue | None] = {
            **security,
            0x0: int(obj.object_class),
            0x3: obj.label.encode(),
            0x102: obj.key_id,
            0x100: obj.key_type,
            0x120: obj.modulus,
            0x122: obj.public_exponent,
            0x180: obj.ec_params,
            0x181: obj.ec_point,
            0x11: obj.value,
        }
        return {t: v for t in types if (v := have.get(t)) is not None}

    def operate(
        self, key: ObjectView, operation: KeyOperation, mechanism: int, param: RawParam, data: bytes
    ) -> bytes:
        if self.operation_left_active:  # a module that kept a failed operation
            raise CkrError("CKR_OPERATION_ACTIVE", "C_Sign")
        if operation is not KeyOperation.SIGN:
            raise CkrError("CKR_FUNCTION_NOT_SUPPORTED", "C_Decrypt")
        pss = None
        if isinstance(param, tuple):
            pss = PssParams(Ckm(param[0]), Mgf(param[1]), int(param[2]))  # type: ignore[arg-type]
        return self.sign(key, mechanism, pss, data)

    def session_copy(self, key: ObjectView) -> ObjectView:
        self._check("C_CopyObject")
        if self.token.copy_result:
            raise CkrError(self.token.copy_result, "C_CopyObject")
        fk = self._key(key, "C_CopyObject")
        weak = self.token.weaken_copies
        copy = FakeCopy(fk, not (fk.extractable or weak), fk.extractable or weak)
        self.token.copies.append(copy)
        return replace(key, handle=copy)

    def destroy(self, obj: ObjectView) -> None:
        self._check("C_DestroyObject")
        assert isinstance(obj.handle, FakeCopy), "only copies are destroyed"
        obj.handle.alive = False

    def close(self) -> None:
        self.alive = False
        for c in self.token.copies:
            c.alive = False  # session objects die with the session


class FakeSlotToken:
    def __init__(self, token: FakeToken, lib: FakeLibrary) -> None:
        self.token = token
        self.lib = lib
        self._info = token.info()

    @property
    def info(self) -> TokenInfo:
        return self._info

    def mechanisms(self) -> frozenset[int]:
        return self.token.mechanisms

    def open(self, pin: str | None) -> FakeSession:
        self.lib.calls.append(threading.current_thread().name)
        t = self.token
        if not t.present:
            raise CkrError("CKR_TOKEN_NOT_PRESENT", "C_OpenSession")
        if pin is not None:
            if t.logged_in:
                raise CkrError("CKR_USER_ALREADY_LOGGED_IN", "C_Login")
            t.login_attempts += 1
            if t.login_result:
                raise CkrError(t.login_result, "C_Login")
            if pin != t.pin:
                raise CkrError("CKR_PIN_INCORRECT", "C_Login")
            t.logged_in = True
        session = FakeSession(t, self.lib)
        t.sessions.append(session)
        return session


class FakeLibrary:
    def __init__(self, path: str, tokens: list[FakeToken]) -> None:
        self._path = path
        self.tokens_ = tokens
        self.calls: list[str] = []
        self.closed = False

    @property
    def path(self) -> str:
        return self._path

    @property
    def info(self) -> LibraryInfo:
        return LibraryInfo("Fake Inc.", "fake module", "1.0")

    def tokens(self) -> list[FakeSlotToken]:  # type: ignore[override]
        self.calls.append(threading.current_thread().name)
        return [FakeSlotToken(t, self) for t in self.tokens_ if t.present]

    def close(self) -> None:
        self.closed = True


# -- fixtures --------------------------------------------------------------------


@dataclass
class Env:
    main: FakeToken
    second: FakeToken
    libs: dict[str, FakeLibrary]
    loads: list[str]
    pins: dict[str, str]
    fail_load: set[str]

    def loader(self, path: str) -> FakeLibrary:
        self.loads.append(path)
        if path in self.fail_load:
            raise ModuleLoadError(f"cannot load PKCS#11 module {path}: no such file")
        return self.libs[path]

    def pin_reader(self, source: PinSource) -> Pin:
        if source.location not in self.pins:
            raise PinSourceError(f"pkcs11_pin {source.kind}:{source.location}: no such key")
        return Pin(self.pins[source.location], f"{source.kind}:{source.location}")


@pytest.fixture
def env() -> Env:
    main = FakeToken(
        "main",
        "1234",
        [
            FakeKey("rsa", b"\x01", _RSA),
            FakeKey("p256", b"\x02", ec.generate_private_key(ec.SECP256R1())),
            FakeKey("ed", b"\x03", ed25519.Ed25519PrivateKey.generate()),
            FakeKey("soft", b"\x04", ec.generate_private_key(ec.SECP256R1()), extractable=True),
        ],
        slot_id=7,
    )
    second = FakeToken(
        "second",
        "2222",
        [FakeKey("other", b"\x11", ec.generate_private_key(ec.SECP256R1()))],
        slot_id=8,
        serial="0002",
    )
    lib = FakeLibrary(MODULE, [main, second])
    other = FakeLibrary("/nonexistent/other.so", [])
    return Env(
        main,
        second,
        {MODULE: lib, "/nonexistent/other.so": other},
        [],
        {"main-pin": "1234", "second-pin": "2222", "wrong-pin": "9999"},
        set(),
    )


CONFIG = f"""
[gssproxy]
[service/signer]
  mechs = krb5
  euid = 1001
  pkcs11_module = {MODULE}
  pkcs11_uri = pkcs11:token=main
  pkcs11_pin = keyring:main-pin
[service/limited]
  mechs = krb5
  euid = 1002
  pkcs11_module = {MODULE}
  pkcs11_uri = pkcs11:token=main;object=p256
  pkcs11_uri = pkcs11:token=main;id=%03
  pkcs11_pin = keyring:main-pin
[service/other]
  mechs = krb5
  euid = 1003
  pkcs11_module = {MODULE}
  pkcs11_uri = pkcs11:token=second
  pkcs11_pin = keyring:second-pin
[service/plain]
  mechs = krb5
  euid = 1004
"""


class Harness:
    def __init__(self, env: Env, text: str = CONFIG) -> None:
        self.env = env
        self.config = load_config_text(text)
        self.service, self.backend = build_token_sign(
            self.config,
            loader=env.loader,  # type: ignore[arg-type]
            pin_reader=env.pin_reader,
        )
        self.loop = asyncio.new_event_loop()

    def info(self, service: str | None, reason: str | None = None) -> CallInfo:
        svc = self.config.service(service) if service else None
        return CallInfo(
            xid=1,
            program=TOKEN_SIGN,
            version=1,
            procedure=0,
            peer=Peer(pid=1, uid=svc.euid if svc else 4242, gid=0, program=None),
            socket_path="/run/test.sock",
            service=svc,
            no_match_reason=None if svc else (reason or "no service for uid 4242"),
            config=self.config,
            log=logging.LoggerAdapter(logging.getLogger("test.call"), {}),
        )

    def list(self, service: str | None) -> TsListKeysRes:
        handler = self.service.handler(1, 1)
        assert handler is not None
        return self.loop.run_until_complete(handler(self.info(service), None))  # type: ignore[no-any-return]

    def keys(self, service: str) -> list[TsKeyInfo]:
        res = self.list(service)
        assert isinstance(res.outcome, TsListKeysOutcomeListing), res
        return list(res.outcome.listing.keys)

    def sign(
        self, service: str | None, uri: str, mech: TsMechanism, data: bytes, digest: bool = False
    ) -> TsSignRes:
        handler = self.service.handler(1, 2)
        assert handler is not None
        arg = TsSignArg(
            uri.encode(), mech, TsSignInputDigest(data) if digest else TsSignInputMessage(data)
        )
        return self.loop.run_until_complete(handler(self.info(service), arg))  # type: ignore[no-any-return]

    def ok(
        self, service: str, uri: str, mech: TsMechanism, data: bytes, digest: bool = False
    ) -> bytes:
        res = self.sign(service, uri, mech, data, digest)
        assert isinstance(res.outcome, TsSignOutcomeSignature), res
        return res.outcome.signature

    def failed(
        self, service: str | None, uri: str, mech: TsMechanism, data: bytes = b"m"
    ) -> tuple[TsStatus, str, str]:
        res = self.sign(service, uri, mech, data)
        assert isinstance(res.outcome, TsSignOutcomeFailure), res
        f = res.outcome.failure
        return res.outcome.status, f.message.decode(), f.ckr.decode()

    def on_worker(self, fn: Callable[[], Any]) -> Any:
        worker = self.backend._workers[MODULE]
        return self.loop.run_until_complete(worker.run(fn))

    def close(self) -> None:
        self.loop.run_until_complete(self.backend.aclose())
        self.loop.close()


@pytest.fixture
def h(env: Env) -> Iterator[Harness]:
    harness = Harness(env)
    yield harness
    harness.close()


def uri_of(h: Harness, service: str, label: str) -> str:
    for k in h.keys(service):
        if f"object={label};" in k.uri.decode():
            return k.uri.decode()
    raise AssertionError(f"{label} not listed for {service}")


# -- tests ---------------------------------------------------------------------------


def test_lists_the_services_keys(h: Harness) -> None:
    keys = {k.uri.decode().split("object=")[1].split(";")[0]: k for k in h.keys("signer")}
    assert set(keys) == {"rsa", "p256", "ed", "soft"}
    assert keys["rsa"].key_bits == 2048
    assert keys["p256"].curve == b"P-256"
    assert keys["ed"].curve == b"Ed25519"
    assert keys["ed"].mechanisms == (TsMechanism.TS_MECH_ED25519,)
    assert len(keys["rsa"].mechanisms) == 6
    limited = sorted(k.uri.decode().rsplit("object=")[1] for k in h.keys("limited"))
    assert limited == ["ed;type=private", "p256;type=private"]


def test_uninitialised_tokens_are_ignored(env: Env) -> None:
    blank = FakeToken("", "", [], slot_id=1, serial="", flags=TokenFlag.LOGIN_REQUIRED)
    env.libs[MODULE].tokens_.insert(0, blank)
    text = CONFIG.replace("pkcs11_uri = pkcs11:token=main\n", "pkcs11_uri = pkcs11:\n", 1)
    h = Harness(env, text)
    try:
        res = h.list("signer")
        assert isinstance(res.outcome, TsListKeysOutcomeListing)
        # second is selected too (and refuses main's PIN); the blank one is
        # not even tried
        assert [p.token for p in res.outcome.listing.problems] == [
            b"pkcs11:model=F1;manufacturer=Fake%20Inc.;serial=0002;token=second"
        ]
        assert blank.login_attempts == 0
    finally:
        h.close()


def test_token_problems_are_listed_next_to_keys(env: Env) -> None:
    text = CONFIG.replace(
        "pkcs11_uri = pkcs11:token=main;id=%03", "pkcs11_uri = pkcs11:token=second"
    ).replace("keyring:second-pin", "keyring:wrong-pin")
    h = Harness(env, text)
    try:
        res = h.list("limited")
        assert isinstance(res.outcome, TsListKeysOutcomeListing)
        assert len(res.outcome.listing.keys) == 1
        (problem,) = res.outcome.listing.problems
        assert problem.status is TsStatus.TS_PIN_ERROR and b"token=second" in problem.token
        assert problem.failure.ckr == b"CKR_PIN_INCORRECT"
    finally:
        h.close()


@pytest.mark.parametrize("digest", [False, True], ids=["message", "digest"])
def test_every_mechanism_verifies(h: Harness, digest: bool) -> None:
    message = b"the quick brown fox" * 10
    checked = 0
    for key in h.keys("signer"):
        for mech in key.mechanisms:
            spec = MECHANISMS[mech]
            if digest and spec.hash is None:
                continue
            data = spec.hash.digest(message) if digest and spec.hash else message
            sig = h.ok("signer", key.uri.decode(), mech, data, digest)
            verify(key.spki, mech, message, sig)
            checked += 1
    # rsa 6, p256 2, soft 2, and ed25519 only over a message
    assert checked == (10 if digest else 11)


def test_combined_mechanism_used_only_when_offered(h: Harness, env: Env) -> None:
    rsa_uri = uri_of(h, "signer", "rsa")
    p256_uri = uri_of(h, "signer", "p256")
    h.ok("signer", rsa_uri, TsMechanism.TS_MECH_RSA_PKCS1_SHA256, b"m")
    h.ok("signer", p256_uri, TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    assert env.main.used == [Ckm.SHA256_RSA_PKCS, Ckm.ECDSA]
    env.main.mechanisms = ALL_MECHS - {Ckm.SHA256_RSA_PKCS}
    h.on_worker(h.backend._workers[MODULE].reset)
    h.ok("signer", rsa_uri, TsMechanism.TS_MECH_RSA_PKCS1_SHA256, b"m")
    assert env.main.used[-1] == Ckm.RSA_PKCS


def test_refusals(h: Harness) -> None:
    rsa_uri = uri_of(h, "signer", "rsa")
    ed_uri = uri_of(h, "signer", "ed")
    status, msg, _ = h.failed("signer", rsa_uri, TsMechanism.TS_MECH_ED25519)
    assert status is TsStatus.TS_BAD_MECHANISM and "2048-bit RSA" in msg
    status, msg, _ = h.failed("signer", rsa_uri, TsMechanism.TS_MECH_ECDSA_SHA256)
    assert status is TsStatus.TS_BAD_MECHANISM
    res = h.sign("signer", ed_uri, TsMechanism.TS_MECH_ED25519, b"\0" * 32, digest=True)
    assert isinstance(res.outcome, TsSignOutcomeFailure)
    assert res.outcome.status is TsStatus.TS_BAD_INPUT
    res = h.sign("signer", rsa_uri, TsMechanism.TS_MECH_RSA_PSS_SHA256, b"short", digest=True)
    assert isinstance(res.outcome, TsSignOutcomeFailure)
    assert b"32-byte SHA256 digest" in res.outcome.failure.message
    status, msg, _ = h.failed(
        "signer", "pkcs11:token=main;object=nope", TsMechanism.TS_MECH_ED25519
    )
    assert status is TsStatus.TS_UNKNOWN_KEY
    status, msg, _ = h.failed("signer", "pkcs11:token=main", TsMechanism.TS_MECH_ED25519)
    assert status is TsStatus.TS_AMBIGUOUS_KEY and "4 keys" in msg
    status, msg, _ = h.failed("signer", "not a uri", TsMechanism.TS_MECH_ED25519)
    assert status is TsStatus.TS_BAD_INPUT
    status, msg, _ = h.failed("signer", "pkcs11:object=rsa;type=cert", TsMechanism.TS_MECH_ED25519)
    assert status is TsStatus.TS_BAD_INPUT
    status, msg, _ = h.failed(
        "signer", "pkcs11:object=rsa?pin-value=1234", TsMechanism.TS_MECH_RSA_PSS_SHA256
    )
    assert status is TsStatus.TS_BAD_INPUT and "1234" not in msg
    status, _, _ = h.failed(
        "signer", "pkcs11:object=rsa?module-path=/usr/lib/x.so", TsMechanism.TS_MECH_ED25519
    )
    assert status is TsStatus.TS_UNKNOWN_KEY


def test_other_services_keys_are_denied(h: Harness) -> None:
    rsa_uri = uri_of(h, "signer", "rsa")
    other_uri = uri_of(h, "other", "other")
    status, msg, _ = h.failed("limited", rsa_uri, TsMechanism.TS_MECH_RSA_PSS_SHA256)
    assert status is TsStatus.TS_KEY_NOT_PERMITTED and "limited" in msg
    # "other" is on a token signer's URIs do not select: it is not even found.
    for service in ("signer", "limited"):
        status, _, _ = h.failed(service, other_uri, TsMechanism.TS_MECH_ECDSA_SHA256)
        assert status is TsStatus.TS_UNKNOWN_KEY
    status, _, _ = h.failed("other", rsa_uri, TsMechanism.TS_MECH_RSA_PSS_SHA256)
    assert status is TsStatus.TS_UNKNOWN_KEY
    assert h.ok("other", other_uri, TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    assert h.ok("limited", uri_of(h, "limited", "p256"), TsMechanism.TS_MECH_ECDSA_SHA256, b"m")


def test_no_service_and_not_configured(h: Harness) -> None:
    res = h.list(None)
    assert isinstance(res.outcome, TsListKeysOutcomeFailure)
    assert res.outcome.status is TsStatus.TS_NO_SERVICE
    assert res.outcome.failure.message == b"no service for uid 4242"
    status, msg, _ = h.failed(None, "pkcs11:object=rsa", TsMechanism.TS_MECH_ED25519)
    assert status is TsStatus.TS_NO_SERVICE
    status, msg, _ = h.failed("plain", "pkcs11:object=rsa", TsMechanism.TS_MECH_ED25519)
    assert status is TsStatus.TS_NOT_CONFIGURED and "plain" in msg


def test_session_loss_reopens_and_logs_in_again(h: Harness, env: Env) -> None:
    uri = uri_of(h, "signer", "p256")
    h.ok("signer", uri, TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    logins = env.main.login_attempts
    env.main.kill_sessions()
    h.ok("signer", uri, TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    assert env.main.login_attempts == logins + 1


def test_token_removed_and_reinserted(h: Harness, env: Env) -> None:
    uri = uri_of(h, "signer", "ed")
    h.ok("signer", uri, TsMechanism.TS_MECH_ED25519, b"m")
    env.main.present = False
    env.main.kill_sessions()
    status, msg, _ = h.failed("signer", uri, TsMechanism.TS_MECH_ED25519)
    assert status is TsStatus.TS_TOKEN_UNAVAILABLE, msg
    res = h.list("signer")
    assert isinstance(res.outcome, TsListKeysOutcomeFailure)
    assert res.outcome.status is TsStatus.TS_TOKEN_UNAVAILABLE
    # Back, in another slot: found again by label and serial.
    env.main.present = True
    env.main.slot_id = 99
    h.ok("signer", uri, TsMechanism.TS_MECH_ED25519, b"m")


def test_device_removed_mid_call_recovers_when_back(h: Harness, env: Env) -> None:
    uri = uri_of(h, "signer", "ed")
    h.ok("signer", uri, TsMechanism.TS_MECH_ED25519, b"m")
    env.main.kill_sessions()  # the next C_Sign fails; the rescan finds it again
    env.main.slot_id = 12
    h.ok("signer", uri, TsMechanism.TS_MECH_ED25519, b"m")


def test_wrong_pin_is_not_retried_and_others_keep_working(env: Env) -> None:
    text = CONFIG.replace("pkcs11_pin = keyring:second-pin", "pkcs11_pin = keyring:wrong-pin")
    h = Harness(env, text)
    try:
        other = "pkcs11:token=second;object=other"
        for _ in range(3):
            status, msg, ckr = h.failed("other", other, TsMechanism.TS_MECH_ECDSA_SHA256)
            assert status is TsStatus.TS_PIN_ERROR
            assert ckr == "CKR_PIN_INCORRECT"
            assert "9999" not in msg
        # Startup warm-up plus three calls, and still a single attempt.
        assert env.second.login_attempts == 1
        assert h.keys("signer")
        # A reload (new PIN source content) tries again.
        env.pins["wrong-pin"] = "2222"
        h.service.reload(h.config)  # type: ignore[misc]
        assert h.ok("other", other, TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
        assert env.second.login_attempts == 2
    finally:
        h.close()


@pytest.mark.parametrize(
    ("flags", "login_result", "ckr", "attempts"),
    [
        (LOGIN_FLAGS | TokenFlag.USER_PIN_LOCKED, "", "CKR_PIN_LOCKED", 0),
        (LOGIN_FLAGS, "CKR_PIN_LOCKED", "CKR_PIN_LOCKED", 1),
        (LOGIN_FLAGS | TokenFlag.USER_PIN_FINAL_TRY, "", "", 0),
        (LOGIN_FLAGS & ~TokenFlag.USER_PIN_INITIALIZED, "", "CKR_USER_PIN_NOT_INITIALIZED", 0),
        (LOGIN_FLAGS, "CKR_PIN_EXPIRED", "CKR_PIN_EXPIRED", 1),
    ],
    ids=["locked-flag", "locked-at-login", "final-try", "no-user-pin", "expired"],
)
def test_locked_token(
    env: Env, flags: TokenFlag, login_result: str, ckr: str, attempts: int
) -> None:
    env.second.flags = flags
    env.second.login_result = login_result
    h = Harness(env)
    try:
        status, msg, got = h.failed(
            "other", "pkcs11:object=other", TsMechanism.TS_MECH_ECDSA_SHA256
        )
        assert status is TsStatus.TS_PIN_ERROR, msg
        assert got == ckr
        assert "2222" not in msg
        assert env.second.login_attempts == attempts
        assert h.keys("signer")  # the other token's services are fine
    finally:
        h.close()


def test_missing_module_then_installed(env: Env) -> None:
    env.fail_load.add(MODULE)
    h = Harness(env)
    try:
        status, msg, _ = h.failed("signer", "pkcs11:object=rsa", TsMechanism.TS_MECH_RSA_PSS_SHA256)
        assert status is TsStatus.TS_TOKEN_UNAVAILABLE
        assert "cannot load PKCS#11 module" in msg and MODULE in msg
        res = h.list("signer")
        assert isinstance(res.outcome, TsListKeysOutcomeFailure)
        assert res.outcome.status is TsStatus.TS_TOKEN_UNAVAILABLE
        env.fail_load.clear()
        assert h.keys("signer")
    finally:
        h.close()


def test_services_with_different_pins_on_one_token(env: Env) -> None:
    env.pins["also-main"] = "1234"
    text = CONFIG.replace(
        "pkcs11_uri = pkcs11:token=second\n  pkcs11_pin = keyring:second-pin",
        "pkcs11_uri = pkcs11:token=main\n  pkcs11_pin = keyring:wrong-pin",
    ).replace("[service/limited]", "[service/limited]\n  pkcs11_pin = keyring:also-main", 0)
    h = Harness(env, text)
    try:
        assert h.keys("signer")
        status, msg, _ = h.failed("other", "pkcs11:object=rsa", TsMechanism.TS_MECH_RSA_PSS_SHA256)
        assert status is TsStatus.TS_PIN_ERROR
        assert "PIN of service signer" in msg and "differs" in msg
        # "limited" uses the same PIN as "signer": it shares the login.
        assert h.keys("limited")
    finally:
        h.close()


def test_pin_source_problem_is_reported_per_call(env: Env) -> None:
    text = CONFIG.replace("keyring:second-pin", "keyring:missing-pin")
    h = Harness(env, text)
    try:
        status, msg, _ = h.failed("other", "pkcs11:object=other", TsMechanism.TS_MECH_ECDSA_SHA256)
        assert status is TsStatus.TS_PIN_ERROR
        assert "keyring:missing-pin" in msg
        assert h.keys("signer")
    finally:
        h.close()


@pytest.mark.parametrize(
    ("option", "want"),
    [
        ("pkcs11_uri = pkcs11:token=a?pin-value=1234", "must not carry a PIN"),
        ("pkcs11_uri = pkcs11:tokne=a", "unknown attribute"),
        ("pkcs11_uri = pkcs11:type=cert", "selects no private keys"),
        ("pkcs11_uri = pkcs11:x-foo=1", "vendor attributes"),
        ("pkcs11_uri = pkcs11:?module-name=softhsm2", "module-name"),
    ],
)
def test_bad_service_uris(env: Env, option: str, want: str) -> None:
    text = (
        CONFIG
        + f"[service/bad]\n  mechs = krb5\n  euid = 1005\n  pkcs11_module = {MODULE}\n  {option}\n"
    )
    h = Harness(env, text)
    try:
        status, msg, _ = h.failed("bad", "pkcs11:object=rsa", TsMechanism.TS_MECH_RSA_PSS_SHA256)
        assert status is TsStatus.TS_NOT_CONFIGURED
        assert want in msg and "1234" not in msg
        assert h.keys("signer")
    finally:
        h.close()


def test_one_thread_per_module(env: Env) -> None:
    env.libs["/nonexistent/other.so"].tokens_.append(
        FakeToken(
            "third", "3333", [FakeKey("k", b"\x31", ec.generate_private_key(ec.SECP256R1()))], 3
        )
    )
    env.pins["third-pin"] = "3333"
    text = CONFIG + (
        "[service/third]\n  mechs = krb5\n  euid = 1006\n"
        "  pkcs11_module = /nonexistent/other.so\n  pkcs11_uri = pkcs11:token=third\n"
        "  pkcs11_pin = keyring:third-pin\n"
    )
    h = Harness(env, text)
    try:
        for _ in range(3):
            assert h.keys("signer") and h.keys("third")
        first = set(env.libs[MODULE].calls)
        second = set(env.libs["/nonexistent/other.so"].calls)
        assert len(first) == 1 and len(second) == 1 and first != second
        assert threading.current_thread().name not in first | second
    finally:
        h.close()
    assert env.libs[MODULE].closed


def test_secrets_stay_out_of_replies_and_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = Harness(env)
    try:
        _check_secrets(h, caplog)
    finally:
        h.close()


def _check_secrets(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    replies: list[Any] = []
    soft = next(k for k in h.env.main.keys if k.label == "soft")
    scalar = soft.private.private_numbers().private_value.to_bytes(32, "big")
    for key in h.keys("signer"):
        replies.append(key)
        replies.extend(h.sign("signer", key.uri.decode(), m, b"m") for m in key.mechanisms)
    replies.append(h.sign("other", "pkcs11:object=other", TsMechanism.TS_MECH_ECDSA_SHA256, b"m"))
    text = caplog.text + "".join(repr(r) for r in replies)
    blob = text.encode() + b"".join(_bytes_in(r) for r in replies)
    for secret in (b"1234", b"2222", scalar, scalar.hex().encode()):
        assert secret not in blob
    warnings = [r for r in caplog.records if "extractable" in r.getMessage()]
    assert len(warnings) == 1 and "object=soft" in warnings[0].getMessage()


def _bytes_in(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, tuple):
        return b"".join(_bytes_in(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return b"".join(_bytes_in(getattr(value, f)) for f in value.__dataclass_fields__)
    return b""


def test_reload_retires_unused_modules(h: Harness, env: Env) -> None:
    assert h.keys("signer")
    h.service.reload(load_config_text("[gssproxy]\n[service/plain]\n  mechs = krb5\n  euid = 1\n"))  # type: ignore[misc]
    assert h.backend._workers == {}
    # The retired worker finishes its queue, then unloads the module.
    for _ in range(100):
        if env.libs[MODULE].closed:
            break
        threading.Event().wait(0.01)
    assert env.libs[MODULE].closed


def test_backend_never_raises_into_the_server(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(TokenSignBackend, "sign", boom)
    status, msg, _ = h.failed("signer", "pkcs11:object=rsa", TsMechanism.TS_MECH_RSA_PSS_SHA256)
    assert status is TsStatus.TS_INTERNAL_ERROR and "bug" not in msg


def test_program_table(h: Harness) -> None:
    svc: ProgramService = h.service
    assert svc.program.number == 0x2F5E5001
    assert svc.handler(1, 1) is not None and svc.handler(1, 2) is not None
    assert svc.procedure(1, 0) is not None  # NULL, answered by the server


def test_verify_helper_rejects_a_bad_signature(h: Harness) -> None:
    key = next(k for k in h.keys("signer") if k.curve == b"Ed25519")
    sig = h.ok("signer", key.uri.decode(), TsMechanism.TS_MECH_ED25519, b"m")
    with pytest.raises(InvalidSignature):
        verify(key.spki, TsMechanism.TS_MECH_ED25519, b"n", sig)


# -- PKINIT's blocking entry (the GSS layer's TgtSource) -------------------------------

PKINIT_SERVICE = """[service/pk]
  mechs = krb5
  euid = 1007
  krb5_principal = pk@EXAMPLE.TEST
  cred_store = ccache:FILE:/nonexistent/pk.ccache
  pkcs11_module = {module}
  pkcs11_uri = pkcs11:token=main;object=rsa
  pkcs11_pin = keyring:{pin}
"""


class ChildRecorder:
    """Stands in for the PKINIT child: records what it would have been given."""

    def __init__(self) -> None:
        self.requests: list[tuple[PkinitRequest, str, float]] = []

    def __call__(
        self,
        request: PkinitRequest,
        pin: Pin,
        *,
        env: dict[str, str] | None = None,
        time_limit: float,
    ) -> None:
        self.requests.append((request, threading.current_thread().name, time_limit))


@pytest.fixture
def child(monkeypatch: pytest.MonkeyPatch) -> ChildRecorder:
    recorder = ChildRecorder()
    monkeypatch.setattr("gssproxy_py.pkcs11.program.obtain_tgt_sync", recorder)
    return recorder


def _no_event_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> asyncio.AbstractEventLoop:
        raise AssertionError("an event loop was made on the way to the token")

    monkeypatch.setattr(asyncio.events, "new_event_loop", refuse)


def test_pkinit_blocking_logs_in_on_the_module_thread_without_a_loop(
    env: Env, child: ChildRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(env, CONFIG + PKINIT_SERVICE.format(module=MODULE, pin="main-pin"))
    login_threads: list[str] = []
    check_login = ModuleWorker.check_login

    def recorded(worker: ModuleWorker, access: ServiceAccess) -> None:
        login_threads.append(threading.current_thread().name)
        check_login(worker, access)

    try:
        monkeypatch.setattr(ModuleWorker, "check_login", recorded)
        _no_event_loops(monkeypatch)
        h.backend.pkinit_tgt_blocking(h.config.service("pk"))
        ((request, thread, limit),) = child.requests
        assert request.principal == "pk@EXAMPLE.TEST"
        assert request.ccache == "FILE:/nonexistent/pk.ccache"
        assert request.identity.startswith(f"PKCS11:module_name={MODULE}:")
        # The login check ran on the module's thread; the child from ours.
        assert login_threads == ["pkcs11-fake-p11.so"]
        assert thread == threading.current_thread().name
        assert 0 < limit <= 30
    finally:
        monkeypatch.undo()
        h.close()


def test_pkinit_blocking_wrong_pin_never_reaches_the_child(env: Env, child: ChildRecorder) -> None:
    h = Harness(env, CONFIG + PKINIT_SERVICE.format(module=MODULE, pin="wrong-pin"))
    try:
        with pytest.raises(SignFailure) as e:
            h.backend.pkinit_tgt_blocking(h.config.service("pk"))
        assert e.value.status is TsStatus.TS_PIN_ERROR and "9999" not in str(e.value)
        assert not child.requests
    finally:
        h.close()


def test_pkinit_blocking_gives_up_behind_a_stuck_module(env: Env, child: ChildRecorder) -> None:
    h = Harness(env, CONFIG + PKINIT_SERVICE.format(module=MODULE, pin="main-pin"))
    release = threading.Event()
    try:
        h.backend._workers[MODULE].submit(release.wait)  # the module's one thread is busy
        with pytest.raises(TimeoutError):
            h.backend.pkinit_tgt_blocking(h.config.service("pk"), time_limit=0.2)
        assert not child.requests
    finally:
        release.set()
        h.close()


# -- session copies of keys --------------------------------------------------------


def test_signs_with_a_session_copy_and_reuses_it(h: Harness, env: Env) -> None:
    key = next(k for k in h.keys("signer") if b"object=p256;" in k.uri)
    for _ in range(3):
        sig = h.ok("signer", key.uri.decode(), TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
        verify(key.spki, TsMechanism.TS_MECH_ECDSA_SHA256, b"m", sig)
    assert len(env.main.copies) == 1 and env.main.copies[0].alive
    assert env.main.signed_with[-3:] == [env.main.copies[0]] * 3


def test_a_refused_copy_falls_back_and_is_not_retried(h: Harness, env: Env) -> None:
    env.main.copy_result = "CKR_ACTION_PROHIBITED"  # CKA_COPYABLE false
    h.ok("signer", uri_of(h, "signer", "p256"), TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    h.ok("signer", uri_of(h, "signer", "rsa"), TsMechanism.TS_MECH_RSA_PKCS1_SHA256, b"m")
    assert env.main.copies == []
    assert env.main.signed_with == [env.main.keys[1], env.main.keys[0]]
    # Tried once for the token: the second key did not ask again.
    env.main.copy_result = ""
    h.ok("signer", uri_of(h, "signer", "ed"), TsMechanism.TS_MECH_ED25519, b"m")
    assert env.main.copies == []


def test_a_weaker_copy_is_destroyed_and_not_used(h: Harness, env: Env) -> None:
    env.main.weaken_copies = True
    h.ok("signer", uri_of(h, "signer", "p256"), TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    assert len(env.main.copies) == 1 and not env.main.copies[0].alive
    assert env.main.signed_with == [env.main.keys[1]]
    h.ok("signer", uri_of(h, "signer", "rsa"), TsMechanism.TS_MECH_RSA_PKCS1_SHA256, b"m")
    assert len(env.main.copies) == 1  # the token is not asked again


def test_an_extractable_key_gets_an_extractable_copy(h: Harness, env: Env) -> None:
    # As strict as the original is enough: the copy of `soft` may be extractable.
    h.ok("signer", uri_of(h, "signer", "soft"), TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    assert env.main.copies[0].alive and env.main.signed_with == [env.main.copies[0]]


def test_a_key_needing_its_own_login_is_never_copied(h: Harness, env: Env) -> None:
    env.main.keys[1].always_authenticate = True
    h.ok("signer", uri_of(h, "signer", "p256"), TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    assert env.main.copies == [] and env.main.signed_with == [env.main.keys[1]]
    h.ok("signer", uri_of(h, "signer", "rsa"), TsMechanism.TS_MECH_RSA_PKCS1_SHA256, b"m")
    assert len(env.main.copies) == 1  # other keys of the token still are


def test_evicted_and_reloaded_copies_are_destroyed(
    h: Harness, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_module, "_RESOLVED_MAX", 1)
    h.ok("signer", uri_of(h, "signer", "p256"), TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    h.ok("signer", uri_of(h, "signer", "rsa"), TsMechanism.TS_MECH_RSA_PKCS1_SHA256, b"m")
    first, second = env.main.copies
    assert not first.alive and second.alive  # the map was full: its entry went
    h.on_worker(h.backend._workers[MODULE].reset)  # what a reload does
    assert not second.alive


def test_a_key_deleted_from_the_token_stops_signing(
    h: Harness, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recheck at every use rather than waiting KEY_RECHECK seconds.
    monkeypatch.setattr(token_module, "KEY_RECHECK", 0.0)
    uri = uri_of(h, "signer", "p256")
    h.ok("signer", uri, TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    h.ok("signer", uri, TsMechanism.TS_MECH_ECDSA_SHA256, b"m")  # rechecked: still there
    copy = env.main.copies[0]
    assert env.main.signed_with == [copy, copy]
    del env.main.keys[1]
    status, msg, _ = h.failed("signer", uri, TsMechanism.TS_MECH_ECDSA_SHA256)
    assert status is TsStatus.TS_UNKNOWN_KEY, msg
    assert not copy.alive


def test_session_keys_off(env: Env) -> None:
    text = CONFIG.replace(
        "pkcs11_pin = keyring:main-pin\n",
        "pkcs11_pin = keyring:main-pin\n  pkcs11_session_keys = no\n",
        1,
    )
    h = Harness(env, text)
    try:
        for _ in range(2):
            h.ok("signer", uri_of(h, "signer", "p256"), TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
        assert env.main.copies == [] and env.main.signed_with == [env.main.keys[1]] * 2
    finally:
        h.close()


def _operate_worker(
    env: Env, session_keys: bool = True
) -> tuple[ModuleWorker, Callable[[], bytes]]:
    """A worker and one p11-kit-path ECDSA signature with `p256`."""
    worker = ModuleWorker(MODULE, env.loader)  # type: ignore[arg-type]
    access = ServiceAccess(
        "p11",
        MODULE,
        (parse_uri("pkcs11:token=main"),),
        Pin("1234", "test"),
        None,
        None,
        session_keys,
    )
    worker.check_login(access)
    ident = next(i for i in worker._s.tokens if i.label == "main")

    def sign() -> bytes:
        return worker.operate(
            access, ident, "p256", b"\x02", KeyOperation.SIGN, Ckm.ECDSA, None, b"\x01" * 32
        )

    return worker, sign


def test_operate_signs_with_a_copy_and_rechecks_the_key(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, sign = _operate_worker(env)
    assert len(sign()) == 64 and len(sign()) == 64
    assert len(env.main.copies) == 1 and env.main.signed_with == [env.main.copies[0]] * 2
    # A lost session: the copy died with it, the key is found and copied again.
    monkeypatch.setattr(token_module, "KEY_RECHECK", 0.0)  # recheck at every use
    env.main.kill_sessions()
    sign()
    assert len(env.main.copies) == 2 and env.main.signed_with[-1] is env.main.copies[1]
    sign()
    assert env.main.signed_with[-1] is env.main.copies[1]
    del env.main.keys[1]
    with pytest.raises(SignFailure, match="gone"):
        sign()
    assert not env.main.copies[1].alive
    worker.shutdown()


def test_operate_without_session_keys(env: Env) -> None:
    worker, sign = _operate_worker(env, session_keys=False)
    sign()
    sign()
    assert env.main.copies == [] and env.main.signed_with == [env.main.keys[1]] * 2
    worker.shutdown()


def test_a_session_left_in_an_operation_is_reopened(env: Env) -> None:
    """A module that kept an operation active after failing it (function_list
    gives up on an absurd output size): the next init on that session says
    CKR_OPERATION_ACTIVE, and the worker reopens the session and signs."""
    worker, sign = _operate_worker(env)
    sign()
    broken = env.main.sessions[-1]
    broken.operation_left_active = True
    assert len(sign()) == 64
    assert env.main.sessions[-1] is not broken
    worker.shutdown()

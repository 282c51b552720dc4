"""The direct calls (`function_list.py`) and session copies of keys on real SoftHSM2.

Covers: the CK_FUNCTION_LIST indexes against p11-kit's pkcs11.h and the
entry points against SoftHSM's exported symbols; every mechanism p11-kit
consumers are served signs (verified with `cryptography`; the p11-kit
consumer tests verify the same path with openssl) and RSA decryption
round-trips, through the direct path and through python-pkcs11 alike; both
paths refuse alike (wrong mechanism for the key, bad PSS and OAEP
parameters, a dead session); CKR_BUFFER_TOO_SMALL keeps the operation
alive; a session copy reads as a sensitive, unextractable session object and
never shows in a listing; a key deleted from the token with `pkcs11-tool
--delete-object` stops signing within KEY_RECHECK seconds.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from gssproxy_py.pkcs11 import adapter
from gssproxy_py.pkcs11.adapter import KeyOperation, ObjectClass, ObjectView, load_library
from gssproxy_py.pkcs11.errors import CkrError, SignFailure
from gssproxy_py.pkcs11.function_list import FUNCTION_INDEX, FunctionList, load_function_list
from gssproxy_py.pkcs11.p11kit_backend import SERVED_MECHANISMS
from gssproxy_py.pkcs11.pin import Pin
from gssproxy_py.pkcs11.token import KEY_RECHECK, ModuleWorker, ServiceAccess
from gssproxy_py.pkcs11.uri import parse_uri
from tests.support.softhsm import MAIN, SoftHsm, shared_softhsm

HEADER = Path("/usr/include/p11-kit-1/p11-kit/pkcs11.h")

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/lib/softhsm/libsofthsm2.so") or shutil.which("softhsm2-util") is None,
    reason="SoftHSM2 is not installed",
)


@pytest.fixture(scope="module")
def hsm() -> SoftHsm:
    return shared_softhsm()


@pytest.fixture(scope="module")
def session(hsm: SoftHsm) -> Iterator[Any]:
    lib = load_library(hsm.module)
    token = next(t for t in lib.tokens() if t.info.label == MAIN.label)
    s = token.open(MAIN.pin)
    assert isinstance(s, adapter._P11Session) and s._direct is not None
    yield s
    s.close()


def _key(session: Any, label: str) -> ObjectView:
    (key,) = session.objects(ObjectClass.PRIVATE_KEY, label=label)
    return key  # type: ignore[no-any-return]


def _plain(session: Any) -> Any:
    """The same session without direct calls: python-pkcs11 all the way."""
    return adapter._P11Session(session._session, session._p11, None)


# -- the function list ------------------------------------------------------------


@pytest.mark.skipif(not HEADER.exists(), reason="p11-kit's pkcs11.h is not installed")
def test_indexes_follow_the_header() -> None:
    text = HEADER.read_text(encoding="utf-8")
    body = re.search(r"struct ck_function_list\s*\{(.*?)\};", text, re.S)
    assert body is not None
    fields = re.findall(r"CK_(C_\w+)\s+(C_\w+)\s*;", body.group(1))
    names = [name for _type, name in fields]
    assert names[:4] == ["C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList"]
    for name, index in FUNCTION_INDEX.items():
        assert names[index] == name


def test_entry_points_are_the_modules_exports(hsm: SoftHsm, session: Any) -> None:
    direct: FunctionList = session._direct
    lib = ctypes.CDLL(hsm.module)
    for name in FUNCTION_INDEX:
        exported = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
        assert direct.entry(name) == exported, name


def test_no_function_list_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    assert load_function_list("/nonexistent/libp11-missing.so") is None
    assert "signing through python-pkcs11" in caplog.text


# -- every served mechanism, both paths -------------------------------------------

_DIGEST = hashes.Hash(hashes.SHA256())
_DIGEST.update(b"message")
DIGEST = _DIGEST.finalize()
# DigestInfo of SHA-256 (RFC 8017 §9.2 note 1), for raw CKM_RSA_PKCS
DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420") + DIGEST
PSS_SHA256 = (0x250, 0x2, 32)


def _verify(hsm: SoftHsm, label: str, ckm: int, sig: bytes) -> None:
    pub: Any = serialization.load_der_public_key(hsm.keys[label].spki)
    served = SERVED_MECHANISMS[ckm]
    if ckm == 0x1041 or ckm == 0x1042:  # ECDSA (on a digest, or hashing SHA-1)
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        der = utils.encode_dss_signature(r, s)
        if served.hash is None:
            pub.verify(der, DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        else:
            pub.verify(der, b"message", ec.ECDSA(served.hash))
    elif ckm == 0x1:
        pub.verify(sig, DIGEST, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    elif ckm == 0xD:
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        pub.verify(sig, DIGEST, pss, utils.Prehashed(hashes.SHA256()))
    else:
        assert served.hash is not None
        pub.verify(sig, b"message", padding.PKCS1v15(), served.hash)


SIGNING = sorted(ckm for ckm, m in SERVED_MECHANISMS.items() if m.flags & m.flags.SIGN)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "python-pkcs11"])
@pytest.mark.parametrize("ckm", SIGNING, ids=[SERVED_MECHANISMS[c].name for c in SIGNING])
def test_every_served_mechanism_signs(hsm: SoftHsm, session: Any, ckm: int, direct: bool) -> None:
    s = session if direct else _plain(session)
    rsa = SERVED_MECHANISMS[ckm].key_kind.name == "RSA"
    key = _key(session, "rsa" if rsa else "p256")
    hashed = SERVED_MECHANISMS[ckm].hash is not None
    data = b"message" if hashed else DIGEST_INFO if ckm == 0x1 else DIGEST
    param = PSS_SHA256 if ckm == 0xD else None
    if ckm not in _token_mechanisms(hsm):
        # Not offered to consumers (SoftHSM 2.6.1 has no ECDSA_SHA1): refused alike.
        with pytest.raises(CkrError, match="CKR_MECHANISM_INVALID"):
            s.operate(key, KeyOperation.SIGN, ckm, param, data)
        return
    sig = s.operate(key, KeyOperation.SIGN, ckm, param, data)
    _verify(hsm, key.label, ckm, sig)


def _token_mechanisms(hsm: SoftHsm) -> frozenset[int]:
    token = next(t for t in load_library(hsm.module).tokens() if t.info.label == MAIN.label)
    return token.mechanisms()


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "python-pkcs11"])
def test_decryption_round_trips(hsm: SoftHsm, session: Any, direct: bool) -> None:
    s = session if direct else _plain(session)
    key = _key(session, "rsa")
    pub: Any = serialization.load_der_public_key(hsm.keys["rsa"].spki)
    secret = os.urandom(32)
    # SoftHSM 2.6.1 does OAEP with SHA-1 and MGF1-SHA1 only.
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    got = s.operate(key, KeyOperation.DECRYPT, 0x9, (0x220, 0x1, None), pub.encrypt(secret, oaep))
    assert got == secret
    got = s.operate(key, KeyOperation.DECRYPT, 0x1, None, pub.encrypt(secret, padding.PKCS1v15()))
    assert got == secret


def _outcome(fn: Any) -> str:
    try:
        fn()
    except CkrError as e:
        return f"{e.call}: {e.ckr}"
    return "ok"


def test_both_paths_refuse_alike(hsm: SoftHsm, session: Any) -> None:
    plain = _plain(session)
    rsa, p256 = _key(session, "rsa"), _key(session, "p256")
    sign, decrypt = KeyOperation.SIGN, KeyOperation.DECRYPT
    cases = [
        (p256, sign, 0x40, None, b"message"),  # an RSA mechanism on an EC key
        (rsa, sign, 0x1041, None, DIGEST),  # ECDSA on an RSA key
        (rsa, sign, 0xD, (0x250, 0x2, 4096), DIGEST),  # a salt longer than the key allows
        (rsa, sign, 0xD, (0x250, 0x77, 32), DIGEST),  # no such MGF
        (rsa, sign, 0x1, None, b"\x00" * 300),  # more than the modulus
        (rsa, decrypt, 0x9, (0x220, 0x1, None), b"\x01" * 256),  # not an OAEP block
        (rsa, decrypt, 0x9, (0x250, 0x2, b"label"), b"\x01" * 256),  # OAEP SoftHSM lacks
        (rsa, decrypt, 0x1, None, b"\x01" * 17),  # the wrong length
        (rsa, sign, 0x1041, PSS_SHA256, DIGEST),  # a parameter the mechanism does not take
    ]
    for key, op, ckm, param, data in cases:
        want = _outcome(lambda: plain.operate(key, op, ckm, param, data))  # noqa: B023
        got = _outcome(lambda: session.operate(key, op, ckm, param, data))  # noqa: B023
        assert got == want and want != "ok", (hex(ckm), param)
    # A dead session: the same CKR from both, through the TOKEN_SIGN entry too.
    token = next(t for t in load_library(hsm.module).tokens() if t.info.label == MAIN.label)
    dead = token.open(None)  # logged in already: the login is the application's
    key = dead.objects(ObjectClass.PRIVATE_KEY, label="p256")[0]
    dead.close()
    want = _outcome(lambda: _plain(dead).sign(key, 0x1041, None, DIGEST))
    got = _outcome(lambda: dead.sign(key, 0x1041, None, DIGEST))
    assert got == want == "C_Sign: CKR_SESSION_HANDLE_INVALID"


def test_buffer_too_small_keeps_the_operation(hsm: SoftHsm, session: Any) -> None:
    direct: FunctionList = session._direct
    key = _key(session, "rsa")
    handles = (session._session.handle, key.handle.handle)
    sig = direct.sign(*handles, 0x40, None, b"message", 16)
    _verify(hsm, "rsa", 0x40, sig)
    # The session is free again: a second signature works.
    _verify(hsm, "rsa", 0x40, direct.sign(*handles, 0x40, None, b"message", 256))


# -- session copies ---------------------------------------------------------------


def _worker(hsm: SoftHsm) -> tuple[ModuleWorker, ServiceAccess]:
    worker = ModuleWorker(hsm.module, load_library)
    uris = (parse_uri(f"pkcs11:token={MAIN.label}"),)
    access = ServiceAccess("direct", hsm.module, uris, Pin(MAIN.pin, "test"))
    worker.check_login(access)
    return worker, access


def test_a_copy_is_a_strict_session_object_never_listed(hsm: SoftHsm) -> None:
    worker, access = _worker(hsm)
    try:
        ident = next(i for i in worker._s.tokens if i.label == MAIN.label)
        before = {k.label for k in worker.list_keys(access)[0]}
        sig = worker.operate(
            access, ident, "p256", hsm.keys["p256"].key_id, KeyOperation.SIGN, 0x1041, None, DIGEST
        )
        _verify(hsm, "p256", 0x1041, sig)
        (held,) = worker._s.op_keys.values()
        assert held.use is not held.key
        st = worker._s.tokens[ident]
        assert st.session is not None
        attrs = st.session.read_attributes(held.use, (0x1, 0x2, 0x103, 0x162))
        assert attrs == {0x1: False, 0x2: True, 0x103: True, 0x162: False}
        assert {k.label for k in worker.list_keys(access)[0]} == before
    finally:
        worker.shutdown()


def test_a_key_deleted_from_the_token_stops_signing(hsm: SoftHsm) -> None:
    doomed_id = "7e"

    def tool(*args: str, check: bool = True) -> None:
        subprocess.run(
            [*("pkcs11-tool", "--module", hsm.module, "--token-label", MAIN.label), *args],
            env={**os.environ, "SOFTHSM2_CONF": str(hsm.conf)},
            check=check,
            capture_output=True,
            timeout=60,
        )

    tool(
        "--login",
        "--pin",
        MAIN.pin,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "doomed",
        "--id",
        doomed_id,
    )
    worker, access = _worker(hsm)
    try:
        ident = next(i for i in worker._s.tokens if i.label == MAIN.label)

        def sign() -> bytes:
            return worker.operate(
                access,
                ident,
                "doomed",
                bytes.fromhex(doomed_id),
                KeyOperation.SIGN,
                0x1041,
                None,
                DIGEST,
            )

        assert len(sign()) == 64
        (held,) = worker._s.op_keys.values()
        assert held.use is not held.key  # signing through a copy
        tool(
            "--login", "--pin", MAIN.pin, "--delete-object", "--type", "privkey", "--id", doomed_id
        )
        deadline = time.monotonic() + KEY_RECHECK + 30  # generous
        while True:
            try:
                sign()
            except SignFailure as f:
                assert "gone" in str(f)
                break
            assert time.monotonic() < deadline, "a deleted key still signs"
            time.sleep(0.5)
        assert worker._s.op_keys == {}
    finally:
        worker.shutdown()
        for kind in ("pubkey", "privkey"):
            tool(
                "--login",
                "--pin",
                MAIN.pin,
                "--delete-object",
                "--type",
                kind,
                "--id",
                doomed_id,
                check=False,
            )

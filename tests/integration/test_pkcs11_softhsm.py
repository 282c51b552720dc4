"""TOKEN_SIGN on real SoftHSM2 tokens, through the handlers with synthetic
CallInfo (service matching is the server's; here each call names its
service). PINs come from a fresh session keyring, as `keyctl session` gives.

Covers: every mechanism verifies (cryptography, and openssl for one key of
each kind), keys and certificates listed as created, services denied what
they were not given, a wrong PIN / a missing module / a lost session, and
no PIN or private-key byte in any reply or log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.config import load_config_text
from gssproxy_py.config.peer import Peer
from gssproxy_py.pkcs11.mechanisms import MECHANISMS
from gssproxy_py.pkcs11.program import TokenSignBackend, build_token_sign
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
from tests.support.signatures import verify
from tests.support.softhsm import (
    MAIN,
    SECOND,
    SPARE,
    SoftHsm,
    put_pins_in_session_keyring,
    shared_softhsm,
)

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/lib/softhsm/libsofthsm2.so") or shutil.which("softhsm2-util") is None,
    reason="SoftHSM2 is not installed",
)


def config_text(hsm: SoftHsm) -> str:
    return f"""
[gssproxy]
[service/signer]
  mechs = krb5
  euid = 1001
  pkcs11_module = {hsm.module}
  pkcs11_uri = pkcs11:token={MAIN.label}
  pkcs11_pin = keyring:gpytest-main
[service/limited]
  mechs = krb5
  euid = 1002
  pkcs11_module = {hsm.module}
  pkcs11_uri = pkcs11:token={MAIN.label};object=p256
  pkcs11_pin = keyring:gpytest-main
[service/second]
  mechs = krb5
  euid = 1003
  pkcs11_module = {hsm.module}
  pkcs11_uri = pkcs11:token={SECOND.label}
  pkcs11_pin = keyring:gpytest-second
[service/wrongpin]
  mechs = krb5
  euid = 1004
  pkcs11_module = {hsm.module}
  pkcs11_uri = pkcs11:token={SPARE.label}
  pkcs11_pin = keyring:gpytest-wrong
[service/nomodule]
  mechs = krb5
  euid = 1005
  pkcs11_module = /nonexistent/libp11-missing.so
  pkcs11_uri = pkcs11:token=x
  pkcs11_pin = keyring:gpytest-main
[service/nopin]
  mechs = krb5
  euid = 1006
  pkcs11_module = {hsm.module}
  pkcs11_uri = pkcs11:token={SPARE.label}
  pkcs11_pin = keyring:gpytest-no-such-key
"""


class Calls:
    def __init__(self, service: ProgramService, backend: TokenSignBackend, text: str) -> None:
        self.service = service
        self.backend = backend
        self.config = load_config_text(text)
        self.loop = asyncio.new_event_loop()
        self.replies: list[Any] = []

    def _info(self, name: str) -> CallInfo:
        svc = self.config.service(name)
        assert svc is not None
        return CallInfo(
            xid=1,
            program=TOKEN_SIGN,
            version=1,
            procedure=0,
            peer=Peer(pid=1, uid=svc.euid, gid=0, program=None),
            socket_path="/run/test.sock",
            service=svc,
            no_match_reason=None,
            config=self.config,
            log=logging.LoggerAdapter(logging.getLogger("test.call"), {}),
        )

    def list(self, name: str) -> TsListKeysRes:
        handler = self.service.handler(1, 1)
        assert handler is not None
        res: TsListKeysRes = self.loop.run_until_complete(handler(self._info(name), None))
        self.replies.append(res)
        return res

    def keys(self, name: str) -> dict[str, TsKeyInfo]:
        res = self.list(name)
        assert isinstance(res.outcome, TsListKeysOutcomeListing), res
        return {
            k.uri.decode().split("object=")[1].split(";")[0]: k for k in res.outcome.listing.keys
        }

    def sign(
        self, name: str, uri: str, mech: TsMechanism, data: bytes, digest: bool = False
    ) -> TsSignRes:
        handler = self.service.handler(1, 2)
        assert handler is not None
        arg = TsSignArg(
            uri.encode(), mech, TsSignInputDigest(data) if digest else TsSignInputMessage(data)
        )
        res: TsSignRes = self.loop.run_until_complete(handler(self._info(name), arg))
        self.replies.append(res)
        return res

    def ok(
        self, name: str, uri: str, mech: TsMechanism, data: bytes, digest: bool = False
    ) -> bytes:
        res = self.sign(name, uri, mech, data, digest)
        assert isinstance(res.outcome, TsSignOutcomeSignature), res
        return res.outcome.signature

    def failed(self, name: str, uri: str, mech: TsMechanism) -> tuple[TsStatus, str, str]:
        res = self.sign(name, uri, mech, b"message")
        assert isinstance(res.outcome, TsSignOutcomeFailure), res
        return (
            res.outcome.status,
            res.outcome.failure.message.decode(),
            res.outcome.failure.ckr.decode(),
        )


@pytest.fixture(scope="module")
def hsm() -> SoftHsm:
    hsm = shared_softhsm()
    put_pins_in_session_keyring(
        {
            "gpytest-main": MAIN.pin,
            "gpytest-second": SECOND.pin,
            "gpytest-wrong": "gpy-Wrong-PIN-0000",
        }
    )
    return hsm


@pytest.fixture(scope="module")
def log_capture() -> Iterator[list[logging.LogRecord]]:
    """Every log record of the module, from every thread, at every level."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=1)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(1)
    yield records
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.fixture(scope="module")
def calls(hsm: SoftHsm, log_capture: list[logging.LogRecord]) -> Iterator[Calls]:
    text = config_text(hsm)
    service, backend = build_token_sign(load_config_text(text))
    c = Calls(service, backend, text)
    yield c
    c.loop.run_until_complete(backend.aclose())
    c.loop.close()


def test_keys_are_listed_as_created(calls: Calls, hsm: SoftHsm) -> None:
    keys = calls.keys("signer")
    assert set(keys) == {"rsa", "p256", "ed25519", "soft"}
    for label, k in keys.items():
        facts = hsm.keys[label]
        assert k.spki == facts.spki, label
        assert (k.certificate or None) == facts.certificate, label
        assert f"serial={hsm.serials[MAIN.label]}" in k.uri.decode()
    assert (keys["rsa"].key_bits, keys["p256"].curve, keys["ed25519"].curve) == (
        2048,
        b"P-256",
        b"Ed25519",
    )
    assert set(calls.keys("limited")) == {"p256"}
    assert set(calls.keys("second")) == {"other"}


@pytest.mark.parametrize("digest", [False, True], ids=["message", "digest"])
def test_every_mechanism_verifies(calls: Calls, digest: bool) -> None:
    message = os.urandom(1000)
    done = set()
    for key in calls.keys("signer").values():
        for mech in key.mechanisms:
            spec = MECHANISMS[mech]
            if digest and spec.hash is None:
                continue
            data = spec.hash.digest(message) if digest and spec.hash else message
            sig = calls.ok("signer", key.uri.decode(), mech, data, digest)
            verify(key.spki, mech, message, sig)
            done.add(mech)
    assert len(done) == (8 if digest else 9)


def _openssl_verify(tmp: Path, spki: bytes, mech: str, message: bytes, sig: bytes) -> None:
    pub = tmp / "pub.der"
    pub.write_bytes(spki)
    (tmp / "msg").write_bytes(message)
    (tmp / "sig").write_bytes(sig)
    if mech == "ed25519":
        argv = [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-keyform",
            "DER",
            "-inkey",
            str(pub),
            "-rawin",
            "-in",
            str(tmp / "msg"),
            "-sigfile",
            str(tmp / "sig"),
        ]
    else:
        digest = "-" + mech.rsplit("-", 1)[1]
        argv = [
            "openssl",
            "dgst",
            digest,
            "-keyform",
            "DER",
            "-verify",
            str(pub),
            "-signature",
            str(tmp / "sig"),
        ]
        if mech.startswith("rsa-pss"):
            argv += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
        argv.append(str(tmp / "msg"))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Verified" in proc.stdout + proc.stderr, proc


@pytest.mark.parametrize(
    ("label", "mech"),
    [
        ("rsa", "rsa-pkcs1-sha384"),
        ("rsa", "rsa-pss-sha512"),
        ("p256", "ecdsa-sha256"),
        ("p256", "ecdsa-sha384"),
        ("ed25519", "ed25519"),
    ],
)
def test_openssl_verifies(calls: Calls, tmp_path: Path, label: str, mech: str) -> None:
    key = calls.keys("signer")[label]
    wire = next(m for m in MECHANISMS.values() if m.name == mech).wire
    message = b"verified by openssl\n" * 50
    sig = calls.ok("signer", key.uri.decode(), wire, message)
    _openssl_verify(tmp_path, key.spki, mech, message, sig)


def test_services_are_denied_keys_they_were_not_given(calls: Calls) -> None:
    main = calls.keys("signer")
    other = calls.keys("second")["other"]
    status, msg, _ = calls.failed(
        "limited", main["rsa"].uri.decode(), TsMechanism.TS_MECH_RSA_PSS_SHA256
    )
    assert status is TsStatus.TS_KEY_NOT_PERMITTED, msg
    status, _, _ = calls.failed(
        "second", main["p256"].uri.decode(), TsMechanism.TS_MECH_ECDSA_SHA256
    )
    assert status is TsStatus.TS_UNKNOWN_KEY
    status, _, _ = calls.failed("signer", other.uri.decode(), TsMechanism.TS_MECH_ECDSA_SHA256)
    assert status is TsStatus.TS_UNKNOWN_KEY
    # A short URI is resolved among the keys the service may use.
    assert calls.ok("limited", "pkcs11:object=p256", TsMechanism.TS_MECH_ECDSA_SHA256, b"m")
    assert calls.ok("second", "pkcs11:id=%11", TsMechanism.TS_MECH_ECDSA_SHA256, b"m")


def test_wrong_pin_missing_module_missing_pin_each_fail_clearly(calls: Calls) -> None:
    status, msg, ckr = calls.failed(
        "wrongpin", "pkcs11:object=spare", TsMechanism.TS_MECH_ECDSA_SHA256
    )
    assert (status, ckr) == (TsStatus.TS_PIN_ERROR, "CKR_PIN_INCORRECT"), msg
    assert "rejected the configured PIN" in msg
    res = calls.list("wrongpin")
    assert isinstance(res.outcome, TsListKeysOutcomeFailure)
    assert res.outcome.status is TsStatus.TS_PIN_ERROR

    status, msg, _ = calls.failed("nomodule", "pkcs11:object=x", TsMechanism.TS_MECH_ECDSA_SHA256)
    assert status is TsStatus.TS_TOKEN_UNAVAILABLE
    assert "/nonexistent/libp11-missing.so" in msg

    status, msg, _ = calls.failed("nopin", "pkcs11:object=spare", TsMechanism.TS_MECH_ECDSA_SHA256)
    assert status is TsStatus.TS_PIN_ERROR
    assert "keyring:gpytest-no-such-key" in msg

    # ...and everyone else keeps working.
    assert calls.ok("signer", "pkcs11:object=ed25519", TsMechanism.TS_MECH_ED25519, b"m")
    assert calls.ok("second", "pkcs11:object=other", TsMechanism.TS_MECH_ECDSA_SHA256, b"m")


def test_lost_session_is_reopened(calls: Calls) -> None:
    assert calls.ok("signer", "pkcs11:object=rsa", TsMechanism.TS_MECH_RSA_PSS_SHA256, b"m")
    worker = next(iter(calls.backend._workers.values()))

    def kill() -> int:
        # Close our session behind the worker's back, as a token reset would.
        n = 0
        for st in worker._s.tokens.values():
            if st.session is not None:
                st.session.close()
                n += 1
        return n

    assert calls.loop.run_until_complete(worker.run(kill)) >= 1
    assert calls.ok("signer", "pkcs11:object=rsa", TsMechanism.TS_MECH_RSA_PSS_SHA256, b"m")
    assert calls.ok("second", "pkcs11:object=other", TsMechanism.TS_MECH_ECDSA_SHA256, b"m")


def test_no_pin_or_private_key_in_replies_or_logs(
    calls: Calls, hsm: SoftHsm, log_capture: list[logging.LogRecord]
) -> None:
    # Exercise everything once more so the capture holds every kind of line.
    for key in calls.keys("signer").values():
        for mech in key.mechanisms:
            calls.sign("signer", key.uri.decode(), mech, b"m")
    calls.failed("wrongpin", "pkcs11:object=spare", TsMechanism.TS_MECH_ECDSA_SHA256)
    calls.failed(
        "signer", "pkcs11:object=rsa?pin-value=" + MAIN.pin, TsMechanism.TS_MECH_RSA_PSS_SHA256
    )
    lines = "\n".join(
        r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in log_capture
    )
    assert lines.count("extractable (CKA_EXTRACTABLE=TRUE)") == 1
    assert "object=soft" in lines
    blob = (
        lines.encode()
        + b"".join(_bytes_in(r) for r in calls.replies)
        + repr(calls.replies).encode()
    )
    secrets = [MAIN.pin, SECOND.pin, SPARE.pin, "gpy-Wrong-PIN-0000"]
    for s in secrets:
        assert s.encode() not in blob, s
    scalar = hsm.soft_private_scalar
    assert scalar not in blob and scalar.hex().encode() not in blob


def _bytes_in(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, tuple):
        return b"".join(_bytes_in(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return b"".join(_bytes_in(getattr(value, f)) for f in value.__dataclass_fields__)
    return b""

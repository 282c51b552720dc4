"""Mechanism planning (combined vs daemon-side hashing), DigestInfo, ECDSA
encoding, and the pure key helpers (curves, EC points, SPKI, key URIs)."""

from __future__ import annotations

import hashlib

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gssproxy_py.pkcs11.adapter import ckr_name
from gssproxy_py.pkcs11.errors import CkrError, Refusal, failure_from_ckr
from gssproxy_py.pkcs11.keys import (
    Curve,
    KeyKind,
    PublicParts,
    TokenIdentity,
    curve_from_params,
    key_uri,
    spki_der,
    unwrap_ec_point,
)
from gssproxy_py.pkcs11.mechanisms import (
    MECHANISMS,
    Ckm,
    HashAlg,
    Mgf,
    by_name,
    finish_signature,
    mechanisms_for_key,
    plan_signature,
)
from gssproxy_py.pkcs11.uri import parse_uri
from gssproxy_py.proto.token_sign import TsMechanism, TsStatus

ALL = frozenset(int(m) for m in Ckm)
RAW_ONLY = frozenset({Ckm.RSA_PKCS, Ckm.RSA_PKCS_PSS, Ckm.ECDSA, Ckm.EDDSA})


def test_ckm_values_agree_with_python_pkcs11() -> None:
    for m in Ckm:
        assert int(pkcs11.Mechanism[m.name]) == m.value, m
    for g in Mgf:
        assert int(pkcs11.MGF[g.name.removeprefix("MGF1_")]) == g.value
    assert int(pkcs11.KeyType.EC_EDWARDS) == KeyKind.EC_EDWARDS
    assert int(pkcs11.KeyType.EC) == KeyKind.EC
    assert int(pkcs11.KeyType.RSA) == KeyKind.RSA


def test_digest_info_prefixes() -> None:
    # RFC 8017 §9.2 note 1
    assert HashAlg.SHA256.digest_info_prefix.hex() == "3031300d060960864801650304020105000420"
    assert HashAlg.SHA384.digest_info_prefix.hex() == "3041300d060960864801650304020205000430"
    assert HashAlg.SHA512.digest_info_prefix.hex() == "3051300d060960864801650304020305000440"


def test_names() -> None:
    assert [m.name for m in MECHANISMS.values()] == [
        "rsa-pkcs1-sha256",
        "rsa-pkcs1-sha384",
        "rsa-pkcs1-sha512",
        "rsa-pss-sha256",
        "rsa-pss-sha384",
        "rsa-pss-sha512",
        "ecdsa-sha256",
        "ecdsa-sha384",
        "ed25519",
    ]
    assert by_name("RSA-PSS-SHA256").wire is TsMechanism.TS_MECH_RSA_PSS_SHA256
    with pytest.raises(KeyError):
        by_name("ecdsa-sha512")


def test_mechanisms_for_key() -> None:
    assert len(mechanisms_for_key(KeyKind.RSA, Curve.NONE, 2048)) == 6
    assert mechanisms_for_key(KeyKind.RSA, Curve.NONE, 512) == ()
    assert mechanisms_for_key(KeyKind.EC, Curve.P384, 384) == (
        TsMechanism.TS_MECH_ECDSA_SHA256,
        TsMechanism.TS_MECH_ECDSA_SHA384,
    )
    assert mechanisms_for_key(KeyKind.EC, Curve.P521, 521) == ()
    assert mechanisms_for_key(KeyKind.EC_EDWARDS, Curve.ED25519, 255) == (
        TsMechanism.TS_MECH_ED25519,
    )
    assert mechanisms_for_key(KeyKind.EC_EDWARDS, Curve.ED448, 448) == ()
    assert mechanisms_for_key(KeyKind.OTHER, Curve.NONE, 0) == ()


def _plan(
    mech: TsMechanism, kind: KeyKind, curve: Curve, data: bytes, digest: bool, have: frozenset[int]
):  # type: ignore[no-untyped-def]
    bits = 2048 if kind is KeyKind.RSA else max(curve.value, 0)
    return plan_signature(
        MECHANISMS[mech],
        kind=kind,
        curve=curve,
        bits=bits,
        data=data,
        is_digest=digest,
        token_mechanisms=have,
    )


def test_rsa_plans() -> None:
    p = _plan(TsMechanism.TS_MECH_RSA_PKCS1_SHA384, KeyKind.RSA, Curve.NONE, b"m", False, ALL)
    assert (p.mechanism, p.data, p.param) == (Ckm.SHA384_RSA_PKCS, b"m", None)
    p = _plan(TsMechanism.TS_MECH_RSA_PKCS1_SHA384, KeyKind.RSA, Curve.NONE, b"m", False, RAW_ONLY)
    assert p.mechanism is Ckm.RSA_PKCS
    assert p.data == HashAlg.SHA384.digest_info_prefix + hashlib.sha384(b"m").digest()
    d = hashlib.sha512(b"m").digest()
    p = _plan(TsMechanism.TS_MECH_RSA_PSS_SHA512, KeyKind.RSA, Curve.NONE, d, True, ALL)
    assert p.mechanism is Ckm.RSA_PKCS_PSS and p.data == d
    assert p.param is not None
    assert (p.param.hash_mechanism, p.param.mgf, p.param.salt_length) == (
        Ckm.SHA512,
        Mgf.MGF1_SHA512,
        64,
    )
    p = _plan(TsMechanism.TS_MECH_RSA_PSS_SHA256, KeyKind.RSA, Curve.NONE, b"m", False, ALL)
    assert p.mechanism is Ckm.SHA256_RSA_PKCS_PSS and p.data == b"m"
    assert p.param is not None and p.param.salt_length == 32


def test_ecdsa_plans_hash_in_the_daemon_without_combined_mechanism() -> None:
    p = _plan(TsMechanism.TS_MECH_ECDSA_SHA256, KeyKind.EC, Curve.P256, b"m", False, RAW_ONLY)
    assert p.mechanism is Ckm.ECDSA and p.data == hashlib.sha256(b"m").digest()
    p = _plan(TsMechanism.TS_MECH_ECDSA_SHA256, KeyKind.EC, Curve.P256, b"m", False, ALL)
    assert p.mechanism is Ckm.ECDSA_SHA256 and p.data == b"m"
    # SHA-384 on P-256: the leftmost 256 bits (FIPS 186-4 §6.4)
    p = _plan(TsMechanism.TS_MECH_ECDSA_SHA384, KeyKind.EC, Curve.P256, b"m", False, RAW_ONLY)
    assert p.data == hashlib.sha384(b"m").digest()[:32]
    # SHA-256 on P-384: shorter than the order, used whole
    p = _plan(TsMechanism.TS_MECH_ECDSA_SHA256, KeyKind.EC, Curve.P384, b"m", False, RAW_ONLY)
    assert p.data == hashlib.sha256(b"m").digest()


@pytest.mark.parametrize(
    ("mech", "kind", "curve", "data", "digest", "have", "status"),
    [
        (TsMechanism.TS_MECH_ED25519, KeyKind.RSA, Curve.NONE, b"m", False, ALL, "BAD_MECHANISM"),
        (
            TsMechanism.TS_MECH_ECDSA_SHA256,
            KeyKind.EC,
            Curve.P521,
            b"m",
            False,
            ALL,
            "BAD_MECHANISM",
        ),
        (
            TsMechanism.TS_MECH_ECDSA_SHA256,
            KeyKind.EC_EDWARDS,
            Curve.ED25519,
            b"m",
            False,
            ALL,
            "BAD_MECHANISM",
        ),
        (
            TsMechanism.TS_MECH_ED25519,
            KeyKind.EC_EDWARDS,
            Curve.ED25519,
            b"d" * 32,
            True,
            ALL,
            "BAD_INPUT",
        ),
        (
            TsMechanism.TS_MECH_RSA_PSS_SHA256,
            KeyKind.RSA,
            Curve.NONE,
            b"d" * 48,
            True,
            ALL,
            "BAD_INPUT",
        ),
        (
            TsMechanism.TS_MECH_ECDSA_SHA256,
            KeyKind.EC,
            Curve.P256,
            b"m",
            False,
            frozenset(),
            "BAD_MECHANISM",
        ),
        (
            TsMechanism.TS_MECH_ED25519,
            KeyKind.EC_EDWARDS,
            Curve.ED25519,
            b"m",
            False,
            frozenset(),
            "BAD_MECHANISM",
        ),
    ],
)
def test_plan_refusals(mech, kind, curve, data, digest, have, status) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Refusal) as e:
        _plan(mech, kind, curve, data, digest, have)
    assert e.value.status is TsStatus[f"TS_{status}"]


def test_ecdsa_signature_becomes_der() -> None:
    p = _plan(TsMechanism.TS_MECH_ECDSA_SHA256, KeyKind.EC, Curve.P256, b"m", False, RAW_ONLY)
    raw = (5).to_bytes(32, "big") + (7).to_bytes(32, "big")
    assert decode_dss_signature(finish_signature(p, raw)) == (5, 7)
    with pytest.raises(ValueError):
        finish_signature(p, raw[:-1])
    p = _plan(TsMechanism.TS_MECH_ED25519, KeyKind.EC_EDWARDS, Curve.ED25519, b"m", False, ALL)
    assert finish_signature(p, b"x" * 64) == b"x" * 64


# -- keys ------------------------------------------------------------------------


def test_curves_and_points() -> None:
    assert curve_from_params(bytes.fromhex("06082a8648ce3d030107")) is Curve.P256
    assert curve_from_params(bytes.fromhex("06052b81040022")) is Curve.P384
    assert curve_from_params(b"\x13\x0cedwards25519") is Curve.ED25519
    assert curve_from_params(bytes.fromhex("06032b6570")) is Curve.ED25519
    assert curve_from_params(b"\x06\x01\x00") is Curve.UNKNOWN
    assert curve_from_params(None) is Curve.UNKNOWN
    point = b"\x04" + b"\x01" * 64
    assert unwrap_ec_point(bytes([4, 65]) + point, Curve.P256) == point
    assert unwrap_ec_point(point, Curve.P256) == point  # stored bare
    p384 = b"\x04" + b"\x02" * 96
    assert unwrap_ec_point(bytes([4, 97]) + p384, Curve.P384) == p384
    assert unwrap_ec_point(b"\x04\x20" + b"\x03" * 32, Curve.ED25519) == b"\x03" * 32
    assert unwrap_ec_point(b"\x03" * 32, Curve.ED25519) == b"\x03" * 32
    assert unwrap_ec_point(b"\x04\x05abc", Curve.P256) is None


def _der(pub: object) -> bytes:
    return pub.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_spki() -> None:
    r = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    n = r.public_numbers()
    parts = PublicParts(KeyKind.RSA, n.n.to_bytes(128, "big"), n.e.to_bytes(3, "big"))
    assert spki_der(parts) == _der(r)
    e = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = e.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    parts = PublicParts(
        KeyKind.EC, ec_params=bytes.fromhex("06082a8648ce3d030107"), ec_point=b"\x04\x41" + point
    )
    assert spki_der(parts) == _der(e)
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = ed.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    parts = PublicParts(KeyKind.EC_EDWARDS, ec_params=b"\x13\x0cedwards25519", ec_point=raw)
    assert spki_der(parts) == _der(ed)
    assert (
        spki_der(PublicParts(KeyKind.EC, ec_params=bytes.fromhex("06082a8648ce3d030107"))) is None
    )
    assert spki_der(PublicParts(KeyKind.RSA)) is None
    bad = PublicParts(
        KeyKind.EC, ec_params=bytes.fromhex("06082a8648ce3d030107"), ec_point=b"\x04" * 65
    )
    assert spki_der(bad) is None  # not on the curve


def test_key_uri_round_trips_and_matches_its_key() -> None:
    token = TokenIdentity("my token;1", "SoftHSM project", "SoftHSM v2", "ab12")
    text = key_uri(token, "k=1", b"\x00\xff")
    uri = parse_uri(text)
    assert (uri.token, uri.manufacturer, uri.model, uri.serial) == (
        "my token;1",
        "SoftHSM project",
        "SoftHSM v2",
        "ab12",
    )
    assert (uri.object, uri.id) == ("k=1", b"\x00\xff")
    assert "id" not in parse_uri(key_uri(token, "", b"")).to_string().split(";")[-2]


def test_ckr_names_and_failures() -> None:
    e = pkcs11.exceptions
    assert ckr_name(e.PinIncorrect()) == "CKR_PIN_INCORRECT"
    assert ckr_name(e.TokenNotRecognised()) == "CKR_TOKEN_NOT_RECOGNIZED"
    assert ckr_name(e.FunctionCancelled()) == "CKR_FUNCTION_CANCELED"
    assert ckr_name(e.PKCS11Error("dlopen failed")) == ""
    # every exception class python-pkcs11 has maps to a name (or is python-level)
    python_level = {
        "PKCS11Error",
        "NoSuchKey",
        "NoSuchToken",
        "MultipleObjectsReturned",
        "MultipleTokensReturned",
        "AlreadyInitialized",
        "ParseError",
    }
    for name in dir(e):
        cls = getattr(e, name)
        if isinstance(cls, type) and issubclass(cls, e.PKCS11Error) and name not in python_level:
            assert ckr_name(cls()), name
    f = failure_from_ckr(CkrError("CKR_PIN_LOCKED", "C_Login"), "logging in")
    assert f.status is TsStatus.TS_PIN_ERROR and f.ckr == "CKR_PIN_LOCKED"
    f = failure_from_ckr(CkrError("CKR_DEVICE_REMOVED", "C_Sign"), "signing")
    assert f.status is TsStatus.TS_TOKEN_UNAVAILABLE
    f = failure_from_ckr(CkrError("CKR_DEVICE_ERROR", "C_Sign"), "signing")
    assert f.status is TsStatus.TS_TOKEN_ERROR and "C_Sign failed" in f.message
    f = failure_from_ckr(CkrError("CKR_KEY_TYPE_INCONSISTENT", "C_SignInit"), "signing")
    assert isinstance(f, Refusal) and f.status is TsStatus.TS_BAD_MECHANISM
    with pytest.raises(ValueError):
        Refusal(TsStatus.TS_OK, "no")

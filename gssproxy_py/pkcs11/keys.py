"""What the daemon knows about a key on a token: its kind, curve and size,
its SubjectPublicKeyInfo, its certificate, and the URI that names it.

Everything here is pure: it works on attribute values already read from
the token (by `adapter.py`), so it can be tested without one. Curves are
recognised from the DER of CKA_EC_PARAMS by exact comparison with a small
table; tokens write Edwards curves either as an OID or as the
PrintableString "edwards25519" (SoftHSM stores the latter), and both are
accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gssproxy_py.pkcs11.uri import ObjectType, Pkcs11Uri, format_value

__all__ = [
    "Curve",
    "KeyKind",
    "KeyRecord",
    "PublicParts",
    "TokenIdentity",
    "curve_from_params",
    "key_uri",
    "spki_der",
    "unwrap_ec_point",
]


class KeyKind(IntEnum):
    """CKA_KEY_TYPE values we sign with (anything else is OTHER)."""

    RSA = 0x0
    EC = 0x3
    EC_EDWARDS = 0x40
    OTHER = -1


class Curve(IntEnum):
    """Named curves we can describe; the value is the size in bits."""

    NONE = 0
    P256 = 256
    P384 = 384
    P521 = 521
    ED25519 = 255
    ED448 = 448
    UNKNOWN = -1

    @property
    def display(self) -> str:
        return _CURVE_NAMES[self]

    @property
    def order_bytes(self) -> int:
        """Bytes of the group order (ECDSA digest truncation)."""
        return (self.value + 7) // 8 if self.value > 0 else 0


_CURVE_NAMES: Final = {
    Curve.NONE: "",
    Curve.P256: "P-256",
    Curve.P384: "P-384",
    Curve.P521: "P-521",
    Curve.ED25519: "Ed25519",
    Curve.ED448: "Ed448",
    Curve.UNKNOWN: "unknown",
}

# DER of CKA_EC_PARAMS (ECParameters / namedCurve) for the curves we know.
_CURVES_BY_PARAMS: Final = {
    bytes.fromhex("06082a8648ce3d030107"): Curve.P256,  # 1.2.840.10045.3.1.7
    bytes.fromhex("06052b81040022"): Curve.P384,  # 1.3.132.0.34
    bytes.fromhex("06052b81040023"): Curve.P521,  # 1.3.132.0.35
    bytes.fromhex("06032b6570"): Curve.ED25519,  # 1.3.101.112
    bytes.fromhex("06032b6571"): Curve.ED448,  # 1.3.101.113
    b"\x13\x0cedwards25519": Curve.ED25519,
    b"\x13\x0aedwards448": Curve.ED448,
}

_EC_CURVES: Final[dict[Curve, ec.EllipticCurve]] = {
    Curve.P256: ec.SECP256R1(),
    Curve.P384: ec.SECP384R1(),
    Curve.P521: ec.SECP521R1(),
}
_EDWARDS_POINT_LEN: Final = {Curve.ED25519: 32, Curve.ED448: 57}


def curve_from_params(params: bytes | None) -> Curve:
    if params is None:
        return Curve.UNKNOWN
    return _CURVES_BY_PARAMS.get(bytes(params), Curve.UNKNOWN)


def _der_octet_string(data: bytes) -> bytes | None:
    """The content of a DER OCTET STRING spanning all of `data`, or None."""
    if len(data) < 2 or data[0] != 0x04:
        return None
    n = data[1]
    if n < 0x80:
        return data[2:] if len(data) == 2 + n else None
    width = n & 0x7F
    if width not in (1, 2) or len(data) < 2 + width:
        return None
    length = int.from_bytes(data[2 : 2 + width], "big")
    return data[2 + width :] if len(data) == 2 + width + length else None


def unwrap_ec_point(point: bytes, curve: Curve) -> bytes | None:
    """The raw point from CKA_EC_POINT, which PKCS#11 says is a DER OCTET
    STRING but some tokens store bare; None if it fits neither form."""
    if curve in _EDWARDS_POINT_LEN:
        want = _EDWARDS_POINT_LEN[curve]
        inner = _der_octet_string(point)
        if inner is not None and len(inner) == want:
            return inner
        return point if len(point) == want else None
    size = curve.order_bytes
    # Uncompressed (04 || X || Y) or compressed (02/03 || X).
    sizes = (1 + 2 * size, 1 + size)
    inner = _der_octet_string(point)
    if inner is not None and len(inner) in sizes:
        return inner
    return point if len(point) in sizes else None


@dataclass(frozen=True, slots=True)
class PublicParts:
    """The public half of a key as attributes give it (any may be missing)."""

    kind: KeyKind
    modulus: bytes | None = None
    public_exponent: bytes | None = None
    ec_params: bytes | None = None
    ec_point: bytes | None = None


def spki_der(parts: PublicParts) -> bytes | None:
    """SubjectPublicKeyInfo DER, or None if the attributes are incomplete or
    describe a key we cannot express."""
    pub: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    pub_448: ed448.Ed448PublicKey | None = None
    try:
        if parts.kind is KeyKind.RSA:
            if not parts.modulus or not parts.public_exponent:
                return None
            n = int.from_bytes(parts.modulus, "big")
            e = int.from_bytes(parts.public_exponent, "big")
            pub = rsa.RSAPublicNumbers(e, n).public_key()
        elif parts.kind in (KeyKind.EC, KeyKind.EC_EDWARDS):
            curve = curve_from_params(parts.ec_params)
            if parts.ec_point is None:
                return None
            raw = unwrap_ec_point(parts.ec_point, curve)
            if raw is None:
                return None
            if curve is Curve.ED25519:
                pub = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            elif curve is Curve.ED448:
                pub_448 = ed448.Ed448PublicKey.from_public_bytes(raw)
                return pub_448.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            elif curve in _EC_CURVES:
                pub = ec.EllipticCurvePublicKey.from_encoded_point(_EC_CURVES[curve], raw)
            else:
                return None
        else:
            return None
    except ValueError:
        return None
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    """What names a token across sessions and re-insertion (not the slot id,
    which may change when the token comes back)."""

    label: str
    manufacturer: str
    model: str
    serial: str

    def uri(self) -> str:
        return (
            f"pkcs11:model={format_value(self.model)}"
            f";manufacturer={format_value(self.manufacturer)}"
            f";serial={format_value(self.serial)}"
            f";token={format_value(self.label)}"
        )


def key_uri(token: TokenIdentity, label: str, key_id: bytes) -> str:
    """The URI by which clients name a private key: the token's identity,
    then id and label when the key has them, and type=private."""
    parts = [token.uri()]
    if key_id:
        parts.append(f"id={format_value(key_id, every_byte=True)}")
    if label:
        parts.append(f"object={format_value(label)}")
    parts.append("type=private")
    return ";".join(parts)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A private key as listed: where it is, what it is, what it may do."""

    token: TokenIdentity
    label: str
    key_id: bytes
    kind: KeyKind
    curve: Curve
    bits: int
    spki: bytes | None
    certificate: bytes | None
    extractable: bool
    sensitive: bool

    @property
    def uri(self) -> str:
        return key_uri(self.token, self.label, self.key_id)

    def selected_by(self, uri: Pkcs11Uri) -> bool:
        """Whether `uri`'s object attributes select this key (token
        attributes are checked when the token is chosen)."""
        return uri.matches_object(
            label=self.label, key_id=self.key_id, object_type=ObjectType.PRIVATE
        )

"""Signature mechanisms: names, which keys they suit, and how each becomes
a PKCS#11 call.

For every mechanism there is a combined PKCS#11 mechanism that hashes on
the token (CKM_SHA256_RSA_PKCS, CKM_ECDSA_SHA256...) and a raw one that
takes a digest (CKM_RSA_PKCS over a DigestInfo, CKM_RSA_PKCS_PSS,
CKM_ECDSA). A message is sent to the combined mechanism when the token lists
it; otherwise, and always for a precomputed digest, the daemon hashes and
uses the raw one. SoftHSM 2.6.1 has the combined RSA mechanisms but only raw
CKM_ECDSA, so ECDSA is hashed here there. Ed25519 is pure EdDSA (CKM_EDDSA
over the message) and cannot sign a digest.

Outputs are what openssl and cryptography verify: RSA signatures as the
token returns them, ECDSA converted from PKCS#11's r‖s to DER, Ed25519 raw
64 bytes. RSA-PSS uses MGF1 with the message hash and a salt as long as the
hash (what `openssl dgst -sigopt rsa_pss_saltlen:digest` and the usual
verifiers expect).

The names (`rsa-pkcs1-sha256`...) are the CLI's and the docs', kept with the
wire numbers in `vocab/token_sign.py`, which the clients import instead of
this module (and its `cryptography`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gssproxy_py.pkcs11.errors import Refusal
from gssproxy_py.pkcs11.keys import Curve, KeyKind
from gssproxy_py.proto.token_sign import TsMechanism, TsStatus
from gssproxy_py.vocab.token_sign import mechanism_from_name, mechanism_name

__all__ = [
    "MECHANISMS",
    "Ckm",
    "Family",
    "HashAlg",
    "MechanismSpec",
    "PssParams",
    "SignPlan",
    "by_name",
    "finish_signature",
    "mechanisms_for_key",
    "plan_signature",
]


class Ckm(IntEnum):
    """The CKM_* values we use (PKCS#11 v2.40 §6)."""

    RSA_PKCS = 0x1
    RSA_PKCS_PSS = 0xD
    SHA256_RSA_PKCS = 0x40
    SHA384_RSA_PKCS = 0x41
    SHA512_RSA_PKCS = 0x42
    SHA256_RSA_PKCS_PSS = 0x43
    SHA384_RSA_PKCS_PSS = 0x44
    SHA512_RSA_PKCS_PSS = 0x45
    SHA256 = 0x250
    SHA384 = 0x260
    SHA512 = 0x270
    ECDSA = 0x1041
    ECDSA_SHA256 = 0x1044
    ECDSA_SHA384 = 0x1045
    ECDSA_SHA512 = 0x1046
    EDDSA = 0x1057


class Mgf(IntEnum):
    """CKG_MGF1_* values."""

    MGF1_SHA256 = 0x2
    MGF1_SHA384 = 0x3
    MGF1_SHA512 = 0x4


class HashAlg(IntEnum):
    """Hashes the mechanisms use; the value is the digest length."""

    SHA256 = 32
    SHA384 = 48
    SHA512 = 64

    @property
    def hashlib_name(self) -> str:
        return self.name.lower()

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()

    @property
    def ckm(self) -> Ckm:
        return Ckm[self.name]

    @property
    def mgf(self) -> Mgf:
        return Mgf[f"MGF1_{self.name}"]

    @property
    def digest_info_prefix(self) -> bytes:
        """DER of DigestInfo up to the digest (RFC 8017 §9.2, note 1)."""
        return _DIGEST_INFO_PREFIX[self]


def _digest_info_prefix(oid_last: int, size: int) -> bytes:
    # SEQUENCE { SEQUENCE { OID 2.16.840.1.101.3.4.2.<n>, NULL }, OCTET STRING }
    alg = bytes([0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, oid_last, 0x05, 0x00])
    alg_seq = bytes([0x30, len(alg)]) + alg
    body_len = len(alg_seq) + 2 + size
    return bytes([0x30, body_len]) + alg_seq + bytes([0x04, size])


_DIGEST_INFO_PREFIX: Final = {
    HashAlg.SHA256: _digest_info_prefix(1, 32),
    HashAlg.SHA384: _digest_info_prefix(2, 48),
    HashAlg.SHA512: _digest_info_prefix(3, 64),
}


class Family(IntEnum):
    RSA_PKCS1 = 1
    RSA_PSS = 2
    ECDSA = 3
    EDDSA = 4


@dataclass(frozen=True, slots=True)
class MechanismSpec:
    wire: TsMechanism
    family: Family
    hash: HashAlg | None
    combined: Ckm | None  # the hash-on-token mechanism, if PKCS#11 has one

    @property
    def name(self) -> str:
        """The name people write (vocab/token_sign.py)."""
        return mechanism_name(self.wire)

    @property
    def raw(self) -> Ckm:
        return _RAW[self.family]


_RAW: Final = {
    Family.RSA_PKCS1: Ckm.RSA_PKCS,
    Family.RSA_PSS: Ckm.RSA_PKCS_PSS,
    Family.ECDSA: Ckm.ECDSA,
    Family.EDDSA: Ckm.EDDSA,
}

MECHANISMS: Final = {
    m.wire: m
    for m in (
        MechanismSpec(
            TsMechanism.TS_MECH_RSA_PKCS1_SHA256,
            Family.RSA_PKCS1,
            HashAlg.SHA256,
            Ckm.SHA256_RSA_PKCS,
        ),
        MechanismSpec(
            TsMechanism.TS_MECH_RSA_PKCS1_SHA384,
            Family.RSA_PKCS1,
            HashAlg.SHA384,
            Ckm.SHA384_RSA_PKCS,
        ),
        MechanismSpec(
            TsMechanism.TS_MECH_RSA_PKCS1_SHA512,
            Family.RSA_PKCS1,
            HashAlg.SHA512,
            Ckm.SHA512_RSA_PKCS,
        ),
        MechanismSpec(
            TsMechanism.TS_MECH_RSA_PSS_SHA256,
            Family.RSA_PSS,
            HashAlg.SHA256,
            Ckm.SHA256_RSA_PKCS_PSS,
        ),
        MechanismSpec(
            TsMechanism.TS_MECH_RSA_PSS_SHA384,
            Family.RSA_PSS,
            HashAlg.SHA384,
            Ckm.SHA384_RSA_PKCS_PSS,
        ),
        MechanismSpec(
            TsMechanism.TS_MECH_RSA_PSS_SHA512,
            Family.RSA_PSS,
            HashAlg.SHA512,
            Ckm.SHA512_RSA_PKCS_PSS,
        ),
        MechanismSpec(
            TsMechanism.TS_MECH_ECDSA_SHA256,
            Family.ECDSA,
            HashAlg.SHA256,
            Ckm.ECDSA_SHA256,
        ),
        MechanismSpec(
            TsMechanism.TS_MECH_ECDSA_SHA384,
            Family.ECDSA,
            HashAlg.SHA384,
            Ckm.ECDSA_SHA384,
        ),
        MechanismSpec(TsMechanism.TS_MECH_ED25519, Family.EDDSA, None, None),
    )
}


# ECDSA with these curves only: the ones the protocol promises.
_ECDSA_CURVES: Final = frozenset({Curve.P256, Curve.P384})
# Smallest RSA modulus we sign with; below this PSS with SHA-512 cannot fit
# and the key is not worth protecting.
_MIN_RSA_BITS: Final = 1024


def by_name(name: str) -> MechanismSpec:
    """The mechanism called `name` (case-insensitive); KeyError if none."""
    try:
        return MECHANISMS[mechanism_from_name(name)]
    except ValueError:
        raise KeyError(name) from None


def _suits(spec: MechanismSpec, kind: KeyKind, curve: Curve, bits: int) -> bool:
    if spec.family in (Family.RSA_PKCS1, Family.RSA_PSS):
        return kind is KeyKind.RSA and bits >= _MIN_RSA_BITS
    if spec.family is Family.ECDSA:
        return kind is KeyKind.EC and curve in _ECDSA_CURVES
    return kind is KeyKind.EC_EDWARDS and curve is Curve.ED25519


def mechanisms_for_key(kind: KeyKind, curve: Curve, bits: int) -> tuple[TsMechanism, ...]:
    """Every mechanism SIGN accepts with such a key, in wire order."""
    return tuple(w for w, s in sorted(MECHANISMS.items()) if _suits(s, kind, curve, bits))


@dataclass(frozen=True, slots=True)
class PssParams:
    """CK_RSA_PKCS_PSS_PARAMS."""

    hash_mechanism: Ckm
    mgf: Mgf
    salt_length: int


@dataclass(frozen=True, slots=True)
class SignPlan:
    """One C_Sign: the mechanism, its parameter, the bytes to sign, and how
    to turn the token's output into the signature the client gets."""

    mechanism: Ckm
    param: PssParams | None
    data: bytes
    family: Family
    curve: Curve


def plan_signature(
    spec: MechanismSpec,
    *,
    kind: KeyKind,
    curve: Curve,
    bits: int,
    data: bytes,
    is_digest: bool,
    token_mechanisms: frozenset[int],
) -> SignPlan:
    """Decide the PKCS#11 call for signing `data` (a message, or a digest if
    `is_digest`) with `spec`; Refusal if the key or input cannot do it."""
    if not _suits(spec, kind, curve, bits):
        raise Refusal(
            TsStatus.TS_BAD_MECHANISM,
            f"{spec.name} cannot be used with a {_describe(kind, curve, bits)} key",
        )
    if spec.hash is None:  # pure EdDSA
        if is_digest:
            raise Refusal(
                TsStatus.TS_BAD_INPUT,
                f"{spec.name} signs the message itself; it cannot sign a precomputed digest",
            )
        if Ckm.EDDSA not in token_mechanisms:
            raise Refusal(TsStatus.TS_BAD_MECHANISM, "the token does not offer CKM_EDDSA")
        return SignPlan(Ckm.EDDSA, None, data, spec.family, curve)
    h = spec.hash
    pss = PssParams(h.ckm, h.mgf, h.value) if spec.family is Family.RSA_PSS else None
    if is_digest:
        if len(data) != h.value:
            raise Refusal(
                TsStatus.TS_BAD_INPUT,
                f"{spec.name} needs a {h.value}-byte {h.name} digest, got {len(data)} bytes",
            )
        digest = data
    elif spec.combined is not None and spec.combined in token_mechanisms:
        return SignPlan(spec.combined, pss, data, spec.family, curve)
    else:
        digest = h.digest(data)
    if spec.raw not in token_mechanisms:
        raise Refusal(
            TsStatus.TS_BAD_MECHANISM,
            f"the token offers neither CKM_{spec.raw.name} nor a combined mechanism "
            f"for {spec.name}",
        )
    if spec.family is Family.RSA_PKCS1:
        return SignPlan(Ckm.RSA_PKCS, None, h.digest_info_prefix + digest, spec.family, curve)
    if spec.family is Family.ECDSA:
        # FIPS 186-4 §6.4: use the leftmost bits of the hash when it is longer
        # than the group order; done here because not every token does it.
        digest = digest[: curve.order_bytes]
    return SignPlan(spec.raw, pss, digest, spec.family, curve)


def finish_signature(plan: SignPlan, raw: bytes) -> bytes:
    """The signature as the client gets it: DER for ECDSA, as is otherwise."""
    if plan.family is not Family.ECDSA:
        return raw
    size = plan.curve.order_bytes
    if len(raw) != 2 * size:
        raise ValueError(f"ECDSA signature of {len(raw)} bytes for a {size * 8}-bit curve")
    r = int.from_bytes(raw[:size], "big")
    s = int.from_bytes(raw[size:], "big")
    return encode_dss_signature(r, s)


def _describe(kind: KeyKind, curve: Curve, bits: int) -> str:
    if kind is KeyKind.RSA:
        return f"{bits}-bit RSA"
    if kind in (KeyKind.EC, KeyKind.EC_EDWARDS):
        return f"{curve.display} EC" if curve is not Curve.UNKNOWN else "EC (unknown curve)"
    return "non-signing"

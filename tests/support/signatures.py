"""Checking TOKEN_SIGN signatures in tests, independently of the daemon (cryptography)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from gssproxy_py.pkcs11.mechanisms import MECHANISMS, Family
from gssproxy_py.proto.token_sign import TsMechanism

#: by digest length, which is what HashAlg's values are
HASHES: dict[int, hashes.HashAlgorithm] = {
    32: hashes.SHA256(),
    48: hashes.SHA384(),
    64: hashes.SHA512(),
}


def verify(spki: bytes, mech: TsMechanism, message: bytes, sig: bytes) -> None:
    """Raise cryptography's InvalidSignature unless `sig` is `mech` over `message`
    by the key whose SubjectPublicKeyInfo is `spki` (PSS: salt as long as the hash)."""
    pub: Any = serialization.load_der_public_key(spki)
    spec = MECHANISMS[mech]
    if spec.family is Family.EDDSA:
        pub.verify(sig, message)
        return
    assert spec.hash is not None
    h = HASHES[spec.hash.value]
    if spec.family is Family.ECDSA:
        pub.verify(sig, message, ec.ECDSA(h))
    elif spec.family is Family.RSA_PSS:
        pub.verify(sig, message, padding.PSS(padding.MGF1(h), spec.hash.value), h)
    else:
        pub.verify(sig, message, padding.PKCS1v15(), h)

"""TOKEN_SIGN (program 0x2F5E5001) words both sides use: mechanism names.

A signature mechanism travels as a `ts_mechanism` number (`idl/token_sign.x`);
people write it as a name (`rsa-pss-sha256`): in `gssproxy-py-sign --mech`,
in the key listing and in the docs. This table is the one mapping between
the two. What each mechanism means on a token (PKCS#11 mechanisms, hashing,
which keys suit it) is the daemon's business, in `pkcs11/mechanisms.py`,
which takes its names from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from gssproxy_py.proto.token_sign import TsMechanism

__all__ = ["MECHANISM_NAMES", "mechanism_from_name", "mechanism_name"]

#: Every `ts_mechanism`, in wire order, with the name people write.
MECHANISM_NAMES: Final[Mapping[TsMechanism, str]] = MappingProxyType(
    {
        TsMechanism.TS_MECH_RSA_PKCS1_SHA256: "rsa-pkcs1-sha256",
        TsMechanism.TS_MECH_RSA_PKCS1_SHA384: "rsa-pkcs1-sha384",
        TsMechanism.TS_MECH_RSA_PKCS1_SHA512: "rsa-pkcs1-sha512",
        TsMechanism.TS_MECH_RSA_PSS_SHA256: "rsa-pss-sha256",
        TsMechanism.TS_MECH_RSA_PSS_SHA384: "rsa-pss-sha384",
        TsMechanism.TS_MECH_RSA_PSS_SHA512: "rsa-pss-sha512",
        TsMechanism.TS_MECH_ECDSA_SHA256: "ecdsa-sha256",
        TsMechanism.TS_MECH_ECDSA_SHA384: "ecdsa-sha384",
        TsMechanism.TS_MECH_ED25519: "ed25519",
    }
)
_BY_NAME: Final = {name: mech for mech, name in MECHANISM_NAMES.items()}


def mechanism_name(mechanism: TsMechanism) -> str:
    """`TS_MECH_RSA_PSS_SHA256` → `rsa-pss-sha256`."""
    return MECHANISM_NAMES[mechanism]


def mechanism_from_name(name: str) -> TsMechanism:
    """`rsa-pss-sha256` (any case) → TS_MECH_RSA_PSS_SHA256; ValueError if unknown."""
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        known = ", ".join(MECHANISM_NAMES.values())
        raise ValueError(f"unknown mechanism {name!r}; known: {known}") from None

"""`gssx_OID` values: the codec and the OIDs both sides name.

A `gssx_OID` is the OID's DER encoding without tag and length (empty means
GSS_C_NO_OID). `encode_oid` / `decode_oid` convert from/to dotted text for
tests, logs, the CLI's JSON and the few OIDs we only know in dotted form; the
daemon itself only compares bytes. Both raise `OidError` (a ValueError) on
anything that is not an OID; there is no other error behaviour.
"""

from __future__ import annotations

from typing import Final

from gssproxy_py.errors import GssProxyError

__all__ = [
    "IAKERB",
    "KRB5",
    "KRB5_FAMILY",
    "KRB5_GET_CRED_IMPERSONATOR",
    "KRB5_MS",
    "KRB5_OLD",
    "NT_ANONYMOUS",
    "NT_EXPORT_NAME",
    "NT_HOSTBASED_SERVICE",
    "NT_KRB5_PRINCIPAL",
    "NT_MACHINE_UID_NAME",
    "NT_STRING_UID_NAME",
    "NT_USER_NAME",
    "OidError",
    "decode_oid",
    "encode_oid",
]


class OidError(GssProxyError, ValueError):
    """Text or bytes that are not an OID."""


def encode_oid(dotted: str) -> bytes:
    """DER contents of a dotted OID ("1.2.840.113554.1.2.2" -> 2a864886f712010202)."""
    try:
        arcs = [int(a) for a in dotted.strip().split(".")]
    except ValueError:
        raise OidError(f"not a dotted OID: {dotted!r}") from None
    if len(arcs) < 2 or any(a < 0 for a in arcs) or arcs[0] > 2:
        raise OidError(f"not a dotted OID: {dotted!r}")
    if arcs[0] < 2 and arcs[1] >= 40:
        raise OidError(f"second arc of {dotted!r} must be below 40")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        group = [arc & 0x7F]
        arc >>= 7
        while arc:
            group.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(group))
    return bytes(out)


def decode_oid(der: bytes) -> str:
    """Dotted text of DER contents bytes; OidError on a malformed encoding."""
    if not der:
        raise OidError("empty OID")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in der:
        if fresh and byte == 0x80:
            raise OidError("non-minimal OID arc")
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    if not fresh:
        raise OidError("truncated OID arc")
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


KRB5: Final = encode_oid("1.2.840.113554.1.2.2")
KRB5_OLD: Final = encode_oid("1.3.5.1.5.2")
KRB5_MS: Final = encode_oid("1.2.840.48018.1.2.2")
IAKERB: Final = encode_oid("1.3.6.1.5.2.5")
#: Mechanisms the interposer hands to us; we serve all of them with MIT krb5.
KRB5_FAMILY: Final = frozenset({KRB5, KRB5_OLD, KRB5_MS, IAKERB})

NT_USER_NAME: Final = encode_oid("1.2.840.113554.1.2.1.1")
NT_MACHINE_UID_NAME: Final = encode_oid("1.2.840.113554.1.2.1.2")
NT_STRING_UID_NAME: Final = encode_oid("1.2.840.113554.1.2.1.3")
NT_HOSTBASED_SERVICE: Final = encode_oid("1.2.840.113554.1.2.1.4")
NT_ANONYMOUS: Final = encode_oid("1.3.6.1.5.6.3")
NT_EXPORT_NAME: Final = encode_oid("1.3.6.1.5.6.4")
NT_KRB5_PRINCIPAL: Final = encode_oid("1.2.840.113554.1.2.2.1")

#: gss_inquire_cred_by_oid: the principal that obtained an S4U2Self cred.
KRB5_GET_CRED_IMPERSONATOR: Final = encode_oid("1.2.840.113554.1.2.2.5.14")

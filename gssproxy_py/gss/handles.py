"""Sealed credential handles: AES-256-GCM blobs bound to a service, a uid and an expiry.

The daemon keeps no per-client state. It hands an exported credential back
to the client sealed, and opens it again when the client presents it. Unlike
the C gssproxy (which encrypts with the first usable key of the service's
keytab, or an ephemeral key, and binds the blob to nothing), the seal here
uses a dedicated key from `gssproxy_py.gss.keyfile` and authenticates who the
handle was issued to. A blob issued to uid 1000 of service "nfs-client" does
not open for uid 1001 or for service "other", even when both share the key.

Blob layout (big-endian)::

    offset  size
    0       4     magic b"GPY1"
    4       4     key id (u32)
    8       8     not_after (u64 Unix seconds; 0 = no expiry), in the clear
    16      12    random nonce
    28      n+16  AES-256-GCM ciphertext of the plaintext, then the tag

The AAD is the 16-byte header (magic, key id, not_after) followed by the
service name (u32 length + UTF-8) and the uid (u32). So the expiry can be read
without the key but cannot be changed, and the service and uid never travel
in the blob. With random 96-bit nonces one key should seal well under 2**32
handles; rotating keys (`keyfile.rotate`) keeps far below that.
"""

from __future__ import annotations

import os
import struct
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gssproxy_py.errors import LocalError, PeerError
from gssproxy_py.gss.keyfile import HandleKeys

__all__ = [
    "MAGIC",
    "HandleExpiredError",
    "HandleMalformedError",
    "HandleRejected",
    "HandleSealError",
    "HandleTamperedError",
    "HandleUnknownKeyError",
    "open_handle",
    "seal",
]

MAGIC = b"GPY1"
_HEADER = struct.Struct(">4sIQ")
_NONCE_LEN = 12
_TAG_LEN = 16
_MIN_LEN = _HEADER.size + _NONCE_LEN + _TAG_LEN
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF


class HandleRejected(PeerError):  # noqa: N818 -- the name the handlers are written against
    """A presented handle does not open. Handlers treat it as "no credential sent".

    `reason` is a stable string for logs: ``malformed``, ``unknown_key``,
    ``wrong_binding_or_tampered`` or ``expired``.
    """

    reason: ClassVar[str] = "rejected"


class HandleMalformedError(HandleRejected):
    """Too short or wrong magic: not a blob we could have produced."""

    reason = "malformed"


class HandleUnknownKeyError(HandleRejected):
    """Sealed under a key we do not hold: from another host, or aged out by rotation."""

    reason = "unknown_key"

    def __init__(self, key_id: int) -> None:
        self.key_id = key_id
        super().__init__(f"handle sealed under unknown key id 0x{key_id:08x}")


class HandleTamperedError(HandleRejected):
    """The GCM tag did not verify.

    GCM cannot say why: a modified blob, and an intact blob presented by
    another uid or to another service (so the AAD differs), fail identically.
    """

    reason = "wrong_binding_or_tampered"


class HandleExpiredError(HandleRejected):
    """Authentic, but past its not_after time."""

    reason = "expired"

    def __init__(self, not_after: int, now: int) -> None:
        self.not_after = not_after
        self.now = now
        super().__init__(f"handle expired at {not_after} (now {now})")


class HandleSealError(LocalError):
    """`seal` was called with arguments that cannot be encoded (a caller bug)."""


def _aad(header: bytes, service: str, uid: int) -> bytes:
    svc = service.encode("utf-8")
    # Length-prefixing the service keeps (service, uid) pairs from colliding.
    return b"".join((header, struct.pack(">I", len(svc)), svc, struct.pack(">I", uid)))


def _check_uid(uid: int) -> None:
    if not 0 <= uid <= _U32_MAX:
        raise HandleSealError(f"uid {uid} is not a u32")


def seal(
    keys: HandleKeys,
    plaintext: bytes,
    *,
    service: str,
    uid: int,
    not_after: int | None = None,
) -> bytes:
    """Encrypt `plaintext` under the current key, bound to `service`, `uid`, `not_after`."""
    _check_uid(uid)
    if not_after is not None and not 1 <= not_after <= _U64_MAX:
        # 0 is the on-wire "no expiry", so it cannot also mean "expired in 1970".
        raise HandleSealError(f"not_after {not_after} outside 1..2**64-1")
    key = keys.current
    header = _HEADER.pack(MAGIC, key.key_id, not_after or 0)
    nonce = os.urandom(_NONCE_LEN)
    sealed = AESGCM(key.secret).encrypt(nonce, plaintext, _aad(header, service, uid))
    return header + nonce + sealed


def open_handle(keys: HandleKeys, blob: bytes, *, service: str, uid: int, now: int) -> bytes:
    """Decrypt a blob from `seal`, for the same `service` and `uid`, at time `now`.

    Raises a `HandleRejected` subclass when the blob does not open.
    """
    if len(blob) < _MIN_LEN:
        raise HandleMalformedError(f"handle is {len(blob)} bytes, shorter than {_MIN_LEN}")
    magic, key_id, not_after = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise HandleMalformedError("handle does not start with the GPY1 magic")
    key = keys.find(key_id)
    if key is None:
        raise HandleUnknownKeyError(key_id)
    if not 0 <= uid <= _U32_MAX:
        # No blob can be bound to such a uid, so nothing could verify.
        raise HandleTamperedError(f"uid {uid} is not a u32")
    header = blob[: _HEADER.size]
    nonce = blob[_HEADER.size : _HEADER.size + _NONCE_LEN]
    try:
        plaintext = AESGCM(key.secret).decrypt(
            nonce, blob[_HEADER.size + _NONCE_LEN :], _aad(header, service, uid)
        )
    except InvalidTag:
        raise HandleTamperedError(
            "handle did not authenticate (tampered, or issued to another uid/service)"
        ) from None
    # Checked only after authentication, so a forged expiry reads as tampering.
    if not_after and now > not_after:
        raise HandleExpiredError(not_after, now)
    return plaintext

"""The kernel's ``linux_lucid_v1`` context blob: building it, and parsing it as knfsd does.

When a client asks for ``exported_context_type = linux_lucid_v1`` (the
kernel does for every nfsd RPCSEC_GSS accept), the established context is
exported with ``gssapi.raw.ext_krb5.krb5_export_lucid_sec_context(ctx, 1)``.
The result is reduced to the blob the kernel's ``gss_import_v2_context``
reads (the layout of gssproxy's ``gp_format_linux_lucid_v1``, svcgssd's
"krb5_rfc4121_buffer"). All fields are in host byte order::

    u32 flags     0x1 INITIATOR | 0x2 CFX (protocol 1) | 0x4 ACCEPTOR_SUBKEY
    u32 endtime
    u64 seq_send
    u32 enctype   acceptor subkey's if present, else the context key's
    key bytes     exactly the enctype's key length

`format_linux_lucid_v1` accepts anything shaped like python-gssapi's
``Krb5LucidContextV1`` (see `LucidContextV1Like`), so it can be tested
without a real context. `parse_linux_lucid_v1` is used by tests and the
kernel emulator.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from gssproxy_py.errors import LocalError, PeerError

__all__ = [
    "ENCTYPE_KEY_LENGTHS",
    "FLAG_ACCEPTOR_SUBKEY",
    "FLAG_CFX",
    "FLAG_INITIATOR",
    "MAX_LUCID_LEN",
    "CfxKeyDataLike",
    "CfxKeys",
    "LinuxLucidV1",
    "LucidContextV1",
    "LucidContextV1Like",
    "LucidFormatError",
    "LucidParseError",
    "Rfc1964KeyDataLike",
    "Rfc1964Keys",
    "format_linux_lucid_v1",
    "parse_linux_lucid_v1",
]

FLAG_INITIATOR = 0x1
FLAG_CFX = 0x2
FLAG_ACCEPTOR_SUBKEY = 0x4
_KNOWN_FLAGS = FLAG_INITIATOR | FLAG_CFX | FLAG_ACCEPTOR_SUBKEY

# The kernel copies at most GSSX_max_output_handle_sz bytes of the token.
MAX_LUCID_LEN = 128

# Kerberos enctypes a 6.x kernel can import (per build options), and their key sizes.
ENCTYPE_KEY_LENGTHS: dict[int, int] = {
    17: 16,  # aes128-cts-hmac-sha1-96
    18: 32,  # aes256-cts-hmac-sha1-96
    19: 16,  # aes128-cts-hmac-sha256-128
    20: 32,  # aes256-cts-hmac-sha384-192
    25: 16,  # camellia128-cts-cmac
    26: 32,  # camellia256-cts-cmac
}

# '=': native byte order, standard sizes, no padding, which is the kernel's view.
_FIXED = struct.Struct("=IIQI")
_SEQ_LIMIT = 2**31  # the kernel keeps seq_send in an atomic_t and rejects larger values
_U32_MAX = 0xFFFFFFFF


class LucidFormatError(LocalError):
    """The exported context cannot be expressed as a linux_lucid_v1 blob the kernel accepts."""


class LucidParseError(PeerError):
    """A linux_lucid_v1 blob the kernel would refuse."""


class Rfc1964KeyDataLike(Protocol):
    """The fields of python-gssapi's ``Rfc1964KeyData`` that are needed here."""

    @property
    def key_type(self) -> int: ...

    @property
    def key(self) -> bytes: ...


class CfxKeyDataLike(Protocol):
    """The fields of python-gssapi's ``CfxKeyData``."""

    @property
    def ctx_key_type(self) -> int: ...

    @property
    def ctx_key(self) -> bytes: ...

    @property
    def acceptor_subkey_type(self) -> int | None: ...

    @property
    def acceptor_subkey(self) -> bytes | None: ...


class LucidContextV1Like(Protocol):
    """The fields of python-gssapi's ``Krb5LucidContextV1`` (all Optional there)."""

    @property
    def version(self) -> int | None: ...

    @property
    def is_initiator(self) -> bool | None: ...

    @property
    def endtime(self) -> int | None: ...

    @property
    def send_seq(self) -> int | None: ...

    @property
    def protocol(self) -> int | None: ...

    @property
    def rfc1964_kd(self) -> Rfc1964KeyDataLike | None: ...

    @property
    def cfx_kd(self) -> CfxKeyDataLike | None: ...


@dataclass(frozen=True, slots=True, repr=False)
class Rfc1964Keys:
    """Stand-in for python-gssapi's ``Rfc1964KeyData`` (tests, emulators)."""

    key_type: int
    key: bytes
    sign_alg: int = 0
    seal_alg: int = 0

    def __repr__(self) -> str:
        return f"Rfc1964Keys(key_type={self.key_type}, key=<{len(self.key)} bytes>)"


@dataclass(frozen=True, slots=True, repr=False)
class CfxKeys:
    """Stand-in for python-gssapi's ``CfxKeyData`` (tests, emulators)."""

    ctx_key_type: int
    ctx_key: bytes
    acceptor_subkey_type: int | None = None
    acceptor_subkey: bytes | None = None

    def __repr__(self) -> str:
        sub = "None" if self.acceptor_subkey is None else f"<{len(self.acceptor_subkey)} bytes>"
        return (
            f"CfxKeys(ctx_key_type={self.ctx_key_type}, ctx_key=<{len(self.ctx_key)} bytes>, "
            f"acceptor_subkey_type={self.acceptor_subkey_type}, acceptor_subkey={sub})"
        )


@dataclass(frozen=True, slots=True)
class LucidContextV1:
    """Stand-in for python-gssapi's ``Krb5LucidContextV1`` (tests, emulators)."""

    version: int | None = 1
    is_initiator: bool | None = False
    endtime: int | None = 0
    send_seq: int | None = 0
    recv_seq: int | None = 0
    protocol: int | None = 1
    rfc1964_kd: Rfc1964KeyDataLike | None = None
    cfx_kd: CfxKeyDataLike | None = None


@dataclass(frozen=True, slots=True, repr=False)
class LinuxLucidV1:
    """A parsed linux_lucid_v1 blob. The key is session key material: kept out of repr."""

    flags: int
    endtime: int
    seq_send: int
    enctype: int
    key: bytes

    @property
    def is_initiator(self) -> bool:
        return bool(self.flags & FLAG_INITIATOR)

    @property
    def cfx(self) -> bool:
        return bool(self.flags & FLAG_CFX)

    @property
    def acceptor_subkey(self) -> bool:
        return bool(self.flags & FLAG_ACCEPTOR_SUBKEY)

    def __repr__(self) -> str:
        return (
            f"LinuxLucidV1(flags=0x{self.flags:x}, endtime={self.endtime}, "
            f"seq_send={self.seq_send}, enctype={self.enctype}, key=<{len(self.key)} bytes>)"
        )


def _select_key(lucid: LucidContextV1Like, protocol: int) -> tuple[int, int, bytes]:
    """(extra flags, enctype, key) for the key the kernel must use."""
    if protocol == 0:
        rfc = lucid.rfc1964_kd
        if rfc is None:
            raise LucidFormatError("protocol 0 (RFC 1964) context without rfc1964 key data")
        return 0, rfc.key_type, rfc.key
    cfx = lucid.cfx_kd
    if cfx is None:
        raise LucidFormatError("protocol 1 (RFC 4121) context without cfx key data")
    sub_type, sub_key = cfx.acceptor_subkey_type, cfx.acceptor_subkey
    if (sub_type is None) != (sub_key is None):
        raise LucidFormatError("acceptor subkey type and key must be both present or both absent")
    if sub_type is not None and sub_key is not None:
        return FLAG_CFX | FLAG_ACCEPTOR_SUBKEY, sub_type, sub_key
    return FLAG_CFX, cfx.ctx_key_type, cfx.ctx_key


def format_linux_lucid_v1(lucid: LucidContextV1Like) -> bytes:
    """Build the kernel's lucid blob from an exported lucid v1 context.

    Refuses (`LucidFormatError`) a version other than 1, a protocol other
    than 0 or 1, missing fields, a send sequence number of 2**31 or more
    (the kernel would refuse it), a key whose length does not match a known
    enctype, and a blob over 128 bytes. Enctypes outside
    `ENCTYPE_KEY_LENGTHS` are passed through for the kernel to judge.
    """
    if lucid.version != 1:
        raise LucidFormatError(f"lucid context version {lucid.version}, only 1 is supported")
    protocol = lucid.protocol
    if protocol not in (0, 1):
        raise LucidFormatError(f"lucid protocol {protocol}, only 0 and 1 are supported")
    endtime, seq_send = lucid.endtime, lucid.send_seq
    if endtime is None or seq_send is None or lucid.is_initiator is None:
        raise LucidFormatError("lucid context lacks endtime, send_seq or initiator flag")
    if not 0 <= endtime <= _U32_MAX:
        raise LucidFormatError(f"endtime {endtime} is not a u32")
    if not 0 <= seq_send < _SEQ_LIMIT:
        raise LucidFormatError(f"send sequence number {seq_send} is not below 2**31")
    key_flags, enctype, key = _select_key(lucid, protocol)
    if not 0 <= enctype <= _U32_MAX:
        raise LucidFormatError(f"enctype {enctype} is not a u32")
    if not key:
        raise LucidFormatError("empty session key")
    expected = ENCTYPE_KEY_LENGTHS.get(enctype)
    if expected is not None and len(key) != expected:
        raise LucidFormatError(f"enctype {enctype} needs a {expected}-byte key, got {len(key)}")
    flags = key_flags | (FLAG_INITIATOR if lucid.is_initiator else 0)
    blob = _FIXED.pack(flags, endtime, seq_send, enctype) + bytes(key)
    if len(blob) > MAX_LUCID_LEN:
        raise LucidFormatError(f"lucid blob of {len(blob)} bytes exceeds {MAX_LUCID_LEN}")
    return blob


def parse_linux_lucid_v1(blob: bytes) -> LinuxLucidV1:
    """Parse a lucid blob with the kernel's rules (`LucidParseError` where it would fail).

    One check goes beyond the kernel, which ignores unknown flag bits: they
    are refused here, because only a bug of ours could have set them.
    """
    if len(blob) > MAX_LUCID_LEN:
        raise LucidParseError(f"lucid blob of {len(blob)} bytes exceeds {MAX_LUCID_LEN}")
    if len(blob) < _FIXED.size:
        raise LucidParseError(f"lucid blob of {len(blob)} bytes is shorter than its header")
    flags, endtime, seq_send, enctype = _FIXED.unpack_from(blob)
    if flags & ~_KNOWN_FLAGS:
        raise LucidParseError(f"unknown lucid flag bits 0x{flags & ~_KNOWN_FLAGS:x}")
    if seq_send >= _SEQ_LIMIT:
        raise LucidParseError(f"seq_send {seq_send} does not fit the kernel's atomic_t")
    keylen = ENCTYPE_KEY_LENGTHS.get(enctype)
    if keylen is None:
        raise LucidParseError(f"enctype {enctype} is not supported by the kernel")
    key = blob[_FIXED.size :]
    if len(key) != keylen:
        raise LucidParseError(f"enctype {enctype} needs {keylen} key bytes, blob has {len(key)}")
    return LinuxLucidV1(flags, endtime, seq_send, enctype, bytes(key))

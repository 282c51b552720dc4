"""p11-kit RPC framing and field codec (protocol version 0), strict and pure.

The stream starts with one version byte each way; then every message is a
frame: three big-endian uint32 (transaction code, options length, body
length), the options (the client's transport name, ignored) and the body.
A body is a uint32 call id, the call's signature string as a byte array,
and the fields in signature order.

Reading is as strict as `xdr/runtime.py`: every length and count is checked
against the bytes left (counting the smallest encoding of one item) and a
bound before anything is allocated, nested attribute arrays are capped at
`MAX_ATTRIBUTE_DEPTH`, and `ProtocolError` is the only exception a reader
raises. A `ProtocolError` means the stream can no longer be trusted: the
connection is closed, as p11-kit's own server does.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gssproxy_py.errors import PeerError
from gssproxy_py.p11kit.attributes import (
    Attribute,
    AttrValue,
    ValueClass,
    value_class,
    value_length,
)

__all__ = [
    "Absent",
    "Frame",
    "FrameReader",
    "Mechanism",
    "OaepParams",
    "ProtocolError",
    "PssParams",
    "Reader",
    "Writer",
    "encode_frame",
]

#: The highest protocol version we speak: 0 (p11-kit 0.24). Newer clients get
#: min(theirs, ours) and speak version 0.
PROTOCOL_VERSION: Final = 0
HEADER_SIZE: Final = 12
#: The biggest body we accept; p11-kit's own bodies stay far below (a
#: certificate or an RSA-4096 signature is a few KiB).
DEFAULT_MAX_BODY: Final = 1 << 20
MAX_OPTIONS: Final = 4096
#: p11-kit rejects byte-array lengths at or above this.
BYTE_ARRAY_LIMIT: Final = 0x7FFFFFFF
NULL_LENGTH: Final = 0xFFFFFFFF
#: Nesting of attribute arrays (CKA_WRAP_TEMPLATE inside a template ...).
MAX_ATTRIBUTE_DEPTH: Final = 4
#: Attributes in one template, ulongs in one array.
MAX_ITEMS: Final = 4096

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEADER = struct.Struct(">III")


class ProtocolError(PeerError):
    """A malformed frame or body: the connection cannot go on."""


@dataclass(frozen=True, slots=True)
class Frame:
    code: int
    body: bytes


class FrameReader:
    """Splits the client's byte stream into its version byte and frames."""

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self._buf = bytearray()
        self._max_body = max_body
        self.version: int | None = None

    @property
    def pending(self) -> bool:
        """Bytes of an incomplete frame are buffered."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Frames completed by `data`; `version` is set once the first byte came."""
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        if self.version is None:
            if not buf:
                return frames
            self.version = buf[0]
            pos = 1
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            code, olen, dlen = _HEADER.unpack_from(buf, pos)
            if code == 0:
                raise ProtocolError("frame with transaction code 0")
            if olen > MAX_OPTIONS:
                raise ProtocolError(f"frame options of {olen} bytes (limit {MAX_OPTIONS})")
            if dlen > self._max_body:
                raise ProtocolError(f"frame body of {dlen} bytes (limit {self._max_body})")
            total = HEADER_SIZE + olen + dlen
            if end - pos < total:
                break
            start = pos + HEADER_SIZE + olen
            frames.append(Frame(code, bytes(buf[start : start + dlen])))
            pos += total
        if pos:
            del buf[:pos]
        return frames


def lone_frame(data: bytes, max_body: int = DEFAULT_MAX_BODY) -> tuple[int, bytes] | None:
    """(code, body) when `data` is exactly one acceptable frame: the usual
    read of a consumer that waits for each reply, which the worker takes
    whole when its `FrameReader` has the version and nothing buffered.
    None otherwise: then `feed` it (which also says what is wrong with a
    bad frame)."""
    if len(data) < HEADER_SIZE:
        return None
    code, olen, dlen = _HEADER.unpack_from(data)
    if code == 0 or olen > MAX_OPTIONS or dlen > max_body or len(data) != HEADER_SIZE + olen + dlen:
        return None
    return code, data[HEADER_SIZE + olen :]


def encode_frame(code: int, body: bytes) -> bytes:
    """A server frame: no options."""
    return _HEADER.pack(code, 0, len(body)) + body


@dataclass(frozen=True, slots=True)
class Absent:
    """An output array not sent, only its length: the answer to a size query
    or to a buffer that was too small."""

    length: int


@dataclass(frozen=True, slots=True)
class PssParams:
    """CK_RSA_PKCS_PSS_PARAMS."""

    hash_alg: int
    mgf: int
    salt_length: int


@dataclass(frozen=True, slots=True)
class OaepParams:
    """CK_RSA_PKCS_OAEP_PARAMS."""

    hash_alg: int
    mgf: int
    source: int
    source_data: bytes | None


CKM_RSA_PKCS_PSS: Final = 0xD
CKM_RSA_PKCS_OAEP: Final = 0x9
#: 0.25.2 and later send this type for a NULL mechanism pointer.
NULL_MECHANISM: Final = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Mechanism:
    """CK_MECHANISM: the type and its parameter (None when NULL)."""

    type: int
    param: PssParams | OaepParams | bytes | None = None


class Reader:
    """Reads fields from one body; every read checked against what is left."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self._data = data
        self._pos = pos
        self._end = len(data)

    def _need(self, n: int, what: str) -> int:
        pos = self._pos
        if self._end - pos < n:
            raise ProtocolError(f"truncated {what}: need {n} bytes, {self._end - pos} left")
        self._pos = pos + n
        return pos

    def at_end(self) -> bool:
        return self._pos == self._end

    def byte(self) -> int:
        return self._data[self._need(1, "byte")]

    def flag(self) -> bool:
        b = self.byte()
        if b > 1:
            raise ProtocolError(f"boolean byte {b}")
        return b == 1

    def u32(self) -> int:
        return int(_U32.unpack_from(self._data, self._need(4, "uint32"))[0])

    def ulong(self) -> int:
        return int(_U64.unpack_from(self._data, self._need(8, "ulong"))[0])

    def byte_array(self) -> bytes | None:
        """uint32 length (0xffffffff: NULL) and the bytes."""
        n = self.u32()
        if n == NULL_LENGTH:
            return None
        if n >= BYTE_ARRAY_LIMIT:
            raise ProtocolError(f"byte array of {n} bytes")
        pos = self._need(n, "byte array")
        return self._data[pos : pos + n]

    def signature(self) -> str:
        raw = self.byte_array()
        if raw is None or not raw.isascii():
            raise ProtocolError("missing or non-ASCII signature string")
        return raw.decode("ascii")

    def input_bytes(self) -> bytes | None:
        """`ay`: present flag, then the array; absent means NULL (its length
        is read and ignored). A present NULL array also means NULL."""
        if self.flag():
            return self.byte_array()
        self.u32()
        return None

    def room(self) -> int | None:
        """`fy`: the caller's output room; None for a size query (NULL buffer).
        0xffffffff (0.25+: a non-NULL buffer of length 0) is 0."""
        n = self.u32()
        if n == 0:
            return None
        return 0 if n == NULL_LENGTH else n

    def ulong_room(self) -> int:
        """`fu`: room for an output ulong array (0 = size query)."""
        return self.u32()

    def ulong_array(self) -> tuple[int, ...] | None:
        """`au` as input: present flag, count, values."""
        present = self.flag()
        n = self.u32()
        if not present:
            return None
        self._check_count(n, 8, "ulong array")
        return tuple(self.ulong() for _ in range(n))

    def _check_count(self, n: int, min_item: int, what: str) -> None:
        if n > MAX_ITEMS:
            raise ProtocolError(f"{what} of {n} items (limit {MAX_ITEMS})")
        if n * min_item > self._end - self._pos:
            raise ProtocolError(f"{what} of {n} items in {self._end - self._pos} bytes")

    def attribute_rooms(self) -> tuple[tuple[int, int], ...]:
        """`fA`: the (type, room) pairs of a C_GetAttributeValue template."""
        n = self.u32()
        self._check_count(n, 8, "attribute template")
        return tuple((self.u32(), self.u32()) for _ in range(n))

    def attributes(self, depth: int = 0) -> tuple[Attribute, ...]:
        """`aA`: an attribute array with values."""
        if depth > MAX_ATTRIBUTE_DEPTH:
            raise ProtocolError(f"attribute arrays nested deeper than {MAX_ATTRIBUTE_DEPTH}")
        n = self.u32()
        self._check_count(n, 5, "attribute array")
        return tuple(self._attribute(depth) for _ in range(n))

    def _attribute(self, depth: int) -> Attribute:
        attr_type = self.u32()
        if not self.flag():
            return Attribute(attr_type, None)
        self.u32()  # the C length; every value class carries its own
        return Attribute(attr_type, self._value(attr_type, depth))

    def _value(self, attr_type: int, depth: int) -> AttrValue | None:
        cls = value_class(attr_type)
        if cls is ValueClass.BOOL:
            return self.byte() != 0
        if cls is ValueClass.ULONG:
            return self.ulong()
        if cls is ValueClass.ATTRIBUTES:
            return self.attributes(depth + 1)
        if cls is ValueClass.MECHANISMS:
            n = self.u32()
            self._check_count(n, 8, "mechanism array")
            return tuple(self.ulong() for _ in range(n))
        raw = self.byte_array()
        if cls is ValueClass.DATE and raw is not None and len(raw) not in (0, 8):
            raise ProtocolError(f"date of {len(raw)} bytes")
        return raw

    def mechanism(self) -> Mechanism | None:
        """`M`: the type, then its parameter as the type dictates."""
        mech_type = self.u32()
        if mech_type == NULL_MECHANISM:
            return None
        if mech_type == CKM_RSA_PKCS_PSS:
            return Mechanism(mech_type, PssParams(self.ulong(), self.ulong(), self.ulong()))
        if mech_type == CKM_RSA_PKCS_OAEP:
            return Mechanism(
                mech_type,
                OaepParams(self.ulong(), self.ulong(), self.ulong(), self.byte_array()),
            )
        return Mechanism(mech_type, self.byte_array())

    def string(self) -> bytes:
        """`z` or `s`: a byte array that must be there."""
        raw = self.byte_array()
        if raw is None:
            raise ProtocolError("NULL string")
        return raw


class Writer:
    """Builds one body: call id, signature, fields."""

    __slots__ = ("_parts",)

    def __init__(self, call_id: int, signature: str) -> None:
        sig = signature.encode("ascii")
        self._parts: list[bytes] = [_U32.pack(call_id), _U32.pack(len(sig)), sig]

    def body(self) -> bytes:
        return b"".join(self._parts)

    def byte(self, value: int) -> None:
        self._parts.append(bytes((value,)))

    def ulong(self, value: int) -> None:
        self._parts.append(_U64.pack(value & 0xFFFFFFFFFFFFFFFF))

    def version(self, value: tuple[int, int]) -> None:
        self._parts.append(bytes(value))

    def byte_array(self, value: bytes | None) -> None:
        if value is None:
            self._parts.append(_U32.pack(NULL_LENGTH))
        else:
            self._parts += (_U32.pack(len(value)), value)

    def fixed_string(self, text: str, size: int) -> None:
        """`s`: space-padded to the struct field's size (cut if longer)."""
        raw = text.encode("utf-8")[:size]
        self.byte_array(raw + b" " * (size - len(raw)))

    def output_bytes(self, value: bytes | Absent) -> None:
        """`ay`: present and the bytes, or absent and the length."""
        if isinstance(value, Absent):
            self._parts += (b"\x00", _U32.pack(value.length))
        else:
            self._parts += (b"\x01", _U32.pack(len(value)), value)

    def ulong_array(self, value: Sequence[int] | Absent) -> None:
        """`au`: present, count, values; or absent and the count."""
        if isinstance(value, Absent):
            self._parts += (b"\x00", _U32.pack(value.length))
            return
        self._parts += (b"\x01", _U32.pack(len(value)))
        self._parts += [_U64.pack(v) for v in value]

    def attributes(self, attrs: Sequence[AttributeOut]) -> None:
        """`aA` as a C_GetAttributeValue answer."""
        self._parts.append(_U32.pack(len(attrs)))
        for a in attrs:
            self._parts.append(_U32.pack(a.type))
            if a.length is None:
                self._parts.append(b"\x00")
                continue
            self._parts += (b"\x01", _U32.pack(a.length))
            self._value(a.type, a.value)

    def _value(self, attr_type: int, value: AttrValue | None) -> None:
        """A value of its class; None is the class's encoding of a NULL
        pointer (the answer to a length query)."""
        cls = value_class(attr_type)
        if cls is ValueClass.BOOL:
            self.byte(1 if value else 0)
        elif cls is ValueClass.ULONG:
            self.ulong(value if isinstance(value, int) else 0)
        elif cls is ValueClass.ATTRIBUTES:
            nested = value if isinstance(value, tuple) else ()
            self._parts.append(_U32.pack(len(nested)))
            for a in nested:
                assert isinstance(a, Attribute)
                self._parts.append(_U32.pack(a.type))
                if a.value is None:
                    self._parts.append(b"\x00")
                    continue
                self._parts += (b"\x01", _U32.pack(value_length(a.type, a.value)))
                self._value(a.type, a.value)
        elif cls is ValueClass.MECHANISMS:
            mechs = value if isinstance(value, tuple) else ()
            self._parts.append(_U32.pack(len(mechs)))
            self._parts += [_U64.pack(int(m)) for m in mechs]  # type: ignore[arg-type]
        else:
            self.byte_array(value if isinstance(value, bytes) else None)


@dataclass(frozen=True, slots=True)
class AttributeOut:
    """One attribute of a C_GetAttributeValue answer: `length` None means
    unavailable ((CK_ULONG)-1); `value` None with a length is a length-only
    answer (the caller passed no buffer)."""

    type: int
    length: int | None
    value: AttrValue | None = None

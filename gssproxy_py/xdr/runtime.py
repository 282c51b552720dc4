"""Strict XDR decoding and checked encoding (RFC 4506) for the generated stubs.

Why not xdrlib3's `Unpacker`/`Packer` for everything: xdrlib3 trusts every
length it reads, ignores padding, accepts any non-zero bool, silently
truncates a fixed opaque, raises bare `EOFError`/`struct.error`, and goes
through a `BytesIO` (or a slice) for every primitive. A daemon reading from
untrusted peers needs the opposite, on its hot path, so `Decoder` and
`Encoder` own their buffer and position and read and write the integers and
opaques themselves with precompiled `struct`s. xdrlib3 is used only through
its public API, for what it does right and no IDL file of ours needs yet:
`float` and `double` (one `Unpacker`/`Packer` per value; cost does not
matter there). Nothing here subclasses xdrlib3 or touches its private state.

Every read is checked *before* anything is allocated:

* a length or count must fit both its declared (or default) maximum and the
  bytes that remain, counting the smallest encoding of one item;
* padding must be zero, a bool must be 0 or 1, enums are checked by the
  generated code against their known values;
* nesting depth is bounded for recursive types, and `decode_bytes` refuses
  trailing bytes.

`XdrError` is the only exception a `Decoder` method raises, so a caller that
decodes part of a message by hand (the RPC header in `rpc/messages.py`)
needs no other `except`. `decode_bytes` translates anything else at its
boundary too, so that a bug in generated code still surfaces as `XdrError`.
The encoder raises `XdrEncodeError` for a value that does not fit its type.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import xdrlib3

from gssproxy_py.errors import XdrEncodeError, XdrError

T = TypeVar("T")
E = TypeVar("E")

#: Default cap on the element count of an unbounded array (`T<>`).
DEFAULT_MAX_ITEMS = 1 << 16
#: Default cap on the nesting of recursive types.
DEFAULT_MAX_DEPTH = 64

_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF
_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_ZEROS = (b"", b"\0", b"\0\0", b"\0\0\0")

# Bound methods of precompiled structs: the hot paths call these directly.
_UNPACK_U32 = struct.Struct(">I").unpack_from
_UNPACK_I32 = struct.Struct(">i").unpack_from
_UNPACK_U64 = struct.Struct(">Q").unpack_from
_UNPACK_I64 = struct.Struct(">q").unpack_from
_PACK_U32 = struct.Struct(">I").pack
_PACK_I32 = struct.Struct(">i").pack
_PACK_U64 = struct.Struct(">Q").pack
_PACK_I64 = struct.Struct(">q").pack
_TRUE = _PACK_U32(1)
_FALSE = _PACK_U32(0)


def _pad_len(n: int) -> int:
    return (4 - n % 4) % 4


class Decoder:
    """A bounds-checked XDR reader over one complete message."""

    __slots__ = ("_buf", "_depth", "_end", "_pos", "max_depth", "max_items")

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        raw = data if type(data) is bytes else bytes(data)
        self._buf = raw
        self._pos = 0
        self._end = len(raw)
        self.max_items = max_items
        self.max_depth = max_depth
        self._depth = 0

    # -- positions -----------------------------------------------------------
    def get_position(self) -> int:
        """Offset of the next byte to read."""
        return self._pos

    def set_position(self, position: int) -> None:
        """Move to `position` (0 to the end of the message)."""
        if not 0 <= position <= self._end:
            raise XdrError(f"position {position} is outside the {self._end}-byte message")
        self._pos = position

    def get_buffer(self) -> bytes:
        """The whole message."""
        return self._buf

    def remaining(self) -> int:
        return self._end - self._pos

    def _truncated(self, n: int) -> XdrError:
        pos = self._pos
        return XdrError(f"truncated: need {n} bytes at offset {pos}, {self._end - pos} left")

    def done(self) -> None:
        left = self._end - self._pos
        if left:
            raise XdrError(f"{left} trailing bytes after the message")

    # -- nesting -------------------------------------------------------------
    def enter(self) -> None:
        self._depth += 1
        if self._depth > self.max_depth:
            raise XdrError(f"nesting deeper than {self.max_depth}")

    def leave(self) -> None:
        self._depth -= 1

    # -- integers --------------------------------------------------------------
    def uint32(self) -> int:
        pos = self._pos
        if pos + 4 > self._end:
            raise self._truncated(4)
        self._pos = pos + 4
        v: int = _UNPACK_U32(self._buf, pos)[0]
        return v

    def int32(self) -> int:
        pos = self._pos
        if pos + 4 > self._end:
            raise self._truncated(4)
        self._pos = pos + 4
        v: int = _UNPACK_I32(self._buf, pos)[0]
        return v

    def uint64(self) -> int:
        pos = self._pos
        if pos + 8 > self._end:
            raise self._truncated(8)
        self._pos = pos + 8
        v: int = _UNPACK_U64(self._buf, pos)[0]
        return v

    def int64(self) -> int:
        pos = self._pos
        if pos + 8 > self._end:
            raise self._truncated(8)
        self._pos = pos + 8
        v: int = _UNPACK_I64(self._buf, pos)[0]
        return v

    def _word(self, n: int) -> bytes:
        pos = self._pos
        if pos + n > self._end:
            raise self._truncated(n)
        self._pos = pos + n
        return self._buf[pos : pos + n]

    def float32(self) -> float:
        return xdrlib3.Unpacker(self._word(4)).unpack_float()

    def float64(self) -> float:
        return xdrlib3.Unpacker(self._word(8)).unpack_double()

    def boolean(self) -> bool:
        v = self.uint32()
        if v > 1:
            raise XdrError(f"bool must be 0 or 1, got {v}")
        return v == 1

    def optional_flag(self) -> bool:
        """The discriminant of optional data (`T *x`)."""
        v = self.uint32()
        if v > 1:
            raise XdrError(f"bool must be 0 or 1, got {v}")
        return v == 1

    def enum(self, valid: frozenset[int], name: str) -> int:
        v = self.int32()
        if v not in valid:
            raise XdrError(f"{v} is not a value of enum {name}")
        return v

    def enum_member(self, members: Mapping[int, E], name: str) -> E:
        """Read an enum and return its member; an unknown value is an error."""
        v = self.int32()
        try:
            return members[v]
        except KeyError:
            raise XdrError(f"{v} is not a value of enum {name}") from None

    # -- opaque data -------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        pad = (4 - n % 4) % 4
        pos = self._pos
        end = pos + n
        if end + pad > self._end:
            raise self._truncated(n + pad)
        data = self._buf
        if pad and data[end : end + pad] != _PAD[n % 4]:
            raise XdrError(f"non-zero padding at offset {end}")
        self._pos = end + pad
        out: bytes = data[pos:end]
        return out

    def opaque_fixed(self, n: int) -> bytes:
        return self._take(n)

    def opaque_var(self, max_len: int | None = None) -> bytes:
        pos = self._pos
        if pos + 4 > self._end:
            raise self._truncated(4)
        n: int = _UNPACK_U32(self._buf, pos)[0]
        self._pos = pos + 4
        if max_len is not None and n > max_len:
            raise XdrError(f"opaque length {n} exceeds its bound {max_len}")
        return self._take(n)

    def string_var(self, max_len: int | None = None) -> bytes:
        return self.opaque_var(max_len)

    # -- arrays ------------------------------------------------------------------
    def array_count(self, max_len: int | None, min_item_size: int) -> int:
        """Read and vet the count of a variable-length array before any item."""
        n = self.uint32()
        limit = self.max_items if max_len is None else max_len
        if n > limit:
            raise XdrError(f"array count {n} exceeds its bound {limit}")
        if n * min_item_size > self._end - self._pos:
            raise XdrError(f"array count {n} cannot fit in {self.remaining()} bytes")
        return n

    def fixed_count(self, n: int, min_item_size: int) -> int:
        if n * min_item_size > self.remaining():
            raise XdrError(f"fixed array of {n} cannot fit in {self.remaining()} bytes")
        return n

    def array(
        self, item: Callable[[Decoder], T], max_len: int | None, min_item_size: int
    ) -> tuple[T, ...]:
        n = self.array_count(max_len, min_item_size)
        return tuple([item(self) for _ in range(n)])


class Encoder:
    """An XDR writer that refuses values that do not fit their type.

    xdrlib3 would silently truncate a fixed opaque; here that is a bug of ours
    (`XdrEncodeError`), never a quiet change of what goes on the wire. The
    buffer is one growing bytearray, appended to with precompiled structs.
    """

    __slots__ = ("_out",)

    def __init__(self) -> None:
        self._out = bytearray()

    def get_buffer(self) -> bytes:
        return bytes(self._out)

    def uint32(self, v: int) -> None:
        if not 0 <= v <= _U32_MAX:
            raise XdrEncodeError(f"{v} does not fit unsigned int")
        self._out += _PACK_U32(v)

    def int32(self, v: int) -> None:
        if not _I32_MIN <= v <= _I32_MAX:
            raise XdrEncodeError(f"{v} does not fit int")
        self._out += _PACK_I32(v)

    def uint64(self, v: int) -> None:
        if not 0 <= v <= _U64_MAX:
            raise XdrEncodeError(f"{v} does not fit unsigned hyper")
        self._out += _PACK_U64(v)

    def int64(self, v: int) -> None:
        if not _I64_MIN <= v <= _I64_MAX:
            raise XdrEncodeError(f"{v} does not fit hyper")
        self._out += _PACK_I64(v)

    def float32(self, v: float) -> None:
        packer = xdrlib3.Packer()
        try:
            packer.pack_float(v)
        except (xdrlib3.ConversionError, OverflowError) as e:
            raise XdrEncodeError(f"{v!r} does not fit float") from e
        self._out += packer.get_buffer()

    def float64(self, v: float) -> None:
        packer = xdrlib3.Packer()
        packer.pack_double(v)
        self._out += packer.get_buffer()

    def boolean(self, v: bool) -> None:
        self._out += _TRUE if v else _FALSE

    def enum(self, v: int) -> None:
        self.int32(int(v))

    def opaque_fixed(self, n: int, v: bytes) -> None:
        if len(v) != n:
            raise XdrEncodeError(f"fixed opaque needs {n} bytes, got {len(v)}")
        out = self._out
        out += v
        out += _ZEROS[-n % 4]

    def opaque_var(self, v: bytes, max_len: int | None = None) -> None:
        n = len(v)
        if max_len is not None and n > max_len:
            raise XdrEncodeError(f"opaque of {n} bytes exceeds its bound {max_len}")
        out = self._out
        out += _PACK_U32(n)
        out += v
        out += _ZEROS[-n % 4]

    def string_var(self, v: bytes, max_len: int | None = None) -> None:
        self.opaque_var(v, max_len)

    def array_count(self, n: int, max_len: int | None) -> None:
        if max_len is not None and n > max_len:
            raise XdrEncodeError(f"array of {n} exceeds its bound {max_len}")
        self.uint32(n)

    def fixed_count(self, n: int, got: int) -> None:
        if n != got:
            raise XdrEncodeError(f"fixed array needs {n} items, got {got}")

    def array(
        self, items: Sequence[T], item: Callable[[Encoder, T], None], max_len: int | None
    ) -> None:
        self.array_count(len(items), max_len)
        for x in items:
            item(self, x)


def decode_bytes(
    decode: Callable[[Decoder], T],
    data: bytes | bytearray | memoryview,
    *,
    max_items: int = DEFAULT_MAX_ITEMS,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> T:
    """Decode one complete value; trailing bytes are an error.

    This is the boundary where any stray primitive error becomes `XdrError`,
    so a decoder bug can never surface as EOFError or struct.error.
    """
    dec = Decoder(data, max_items=max_items, max_depth=max_depth)
    try:
        value = decode(dec)
        dec.done()
    except XdrError:
        raise
    except (EOFError, struct.error, IndexError, ValueError, OverflowError, KeyError) as e:
        raise XdrError(f"malformed XDR: {e}") from None
    except (MemoryError, RecursionError) as e:
        raise XdrError(f"XDR input too complex: {type(e).__name__}") from None
    return value


def encode_bytes(encode: Callable[[Encoder, T], None], value: T) -> bytes:
    enc = Encoder()
    try:
        encode(enc, value)
    except XdrEncodeError:
        raise
    except (struct.error, xdrlib3.Error, TypeError, ValueError, AttributeError) as e:
        raise XdrEncodeError(f"cannot encode {type(value).__name__}: {e}") from e
    return enc.get_buffer()

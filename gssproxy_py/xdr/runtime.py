"""Strict XDR decoding and checked encoding over xdrlib3's primitives.

xdrlib3 trusts every length it reads, ignores padding, accepts any non-zero bool
and raises bare `EOFError`/`struct.error`. A daemon reading from untrusted peers
needs the opposite, so every read here is checked *before* anything is allocated:

* a length or count must fit both its declared (or default) maximum and the
  bytes that remain, counting the smallest encoding of one item;
* padding must be zero, a bool must be 0 or 1, enums are checked by the
  generated code against their known values;
* nesting depth is bounded for recursive types, and `decode_bytes` refuses
  trailing bytes.

`XdrError` is the only exception that leaves `decode_bytes`; anything else the
primitives could raise is translated at that one boundary.
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
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def _pad_len(n: int) -> int:
    return (4 - n % 4) % 4


class Decoder(xdrlib3.Unpacker):
    """A bounds-checked XDR reader over one complete message."""

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        raw = bytes(data)
        super().__init__(raw)
        self._data = raw
        self._end = len(raw)
        self.max_items = max_items
        self.max_depth = max_depth
        self._depth = 0

    # -- positions -----------------------------------------------------------
    def remaining(self) -> int:
        return self._end - self.get_position()

    def _need(self, n: int) -> None:
        if n > self._end - self.get_position():
            raise XdrError(
                f"truncated: need {n} bytes at offset {self.get_position()}, "
                f"{self._end - self.get_position()} left"
            )

    def done(self) -> None:
        left = self.remaining()
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
        self._need(4)
        return self.unpack_uint()

    def int32(self) -> int:
        self._need(4)
        return self.unpack_int()

    def uint64(self) -> int:
        self._need(8)
        return self.unpack_uhyper()

    def int64(self) -> int:
        self._need(8)
        return self.unpack_hyper()

    def float32(self) -> float:
        self._need(4)
        return self.unpack_float()

    def float64(self) -> float:
        self._need(8)
        return self.unpack_double()

    def boolean(self) -> bool:
        self._need(4)
        v = self.unpack_uint()
        if v > 1:
            raise XdrError(f"bool must be 0 or 1, got {v}")
        return v == 1

    def optional_flag(self) -> bool:
        """The discriminant of optional data (`T *x`)."""
        return self.boolean()

    def enum(self, valid: frozenset[int], name: str) -> int:
        self._need(4)
        v = self.unpack_int()
        if v not in valid:
            raise XdrError(f"{v} is not a value of enum {name}")
        return v

    def enum_member(self, members: Mapping[int, E], name: str) -> E:
        """Read an enum and return its member; an unknown value is an error."""
        self._need(4)
        v = self.unpack_int()
        try:
            return members[v]
        except KeyError:
            raise XdrError(f"{v} is not a value of enum {name}") from None

    # -- opaque data -------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        pad = _pad_len(n)
        self._need(n + pad)
        pos = self.get_position()
        end = pos + n
        data = self._data
        if pad and data[end : end + pad] != _PAD[n % 4]:
            raise XdrError(f"non-zero padding at offset {end}")
        self.set_position(end + pad)
        return data[pos:end]

    def opaque_fixed(self, n: int) -> bytes:
        return self._take(n)

    def opaque_var(self, max_len: int | None = None) -> bytes:
        self._need(4)
        n = self.unpack_uint()
        if max_len is not None and n > max_len:
            raise XdrError(f"opaque length {n} exceeds its bound {max_len}")
        return self._take(n)

    def string_var(self, max_len: int | None = None) -> bytes:
        return self.opaque_var(max_len)

    # -- arrays ------------------------------------------------------------------
    def array_count(self, max_len: int | None, min_item_size: int) -> int:
        """Read and vet the count of a variable-length array before any item."""
        self._need(4)
        n = self.unpack_uint()
        limit = self.max_items if max_len is None else max_len
        if n > limit:
            raise XdrError(f"array count {n} exceeds its bound {limit}")
        if n * min_item_size > self.remaining():
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


class Encoder(xdrlib3.Packer):
    """An XDR writer that refuses values that do not fit their type.

    xdrlib3 would silently truncate a fixed opaque; here that is a bug of ours
    (`XdrEncodeError`), never a quiet change of what goes on the wire.
    """

    def uint32(self, v: int) -> None:
        if not 0 <= v <= _U32_MAX:
            raise XdrEncodeError(f"{v} does not fit unsigned int")
        self.pack_uint(v)

    def int32(self, v: int) -> None:
        if not -(1 << 31) <= v < (1 << 31):
            raise XdrEncodeError(f"{v} does not fit int")
        self.pack_int(v)

    def uint64(self, v: int) -> None:
        if not 0 <= v <= _U64_MAX:
            raise XdrEncodeError(f"{v} does not fit unsigned hyper")
        self.pack_uhyper(v)

    def int64(self, v: int) -> None:
        if not -(1 << 63) <= v < (1 << 63):
            raise XdrEncodeError(f"{v} does not fit hyper")
        self.pack_hyper(v)

    def float32(self, v: float) -> None:
        try:
            self.pack_float(v)
        except xdrlib3.ConversionError as e:
            raise XdrEncodeError(f"{v!r} does not fit float") from e

    def float64(self, v: float) -> None:
        self.pack_double(v)

    def boolean(self, v: bool) -> None:
        self.pack_bool(v)

    def enum(self, v: int) -> None:
        self.int32(int(v))

    def opaque_fixed(self, n: int, v: bytes) -> None:
        if len(v) != n:
            raise XdrEncodeError(f"fixed opaque needs {n} bytes, got {len(v)}")
        self.pack_fopaque(n, v)

    def opaque_var(self, v: bytes, max_len: int | None = None) -> None:
        if max_len is not None and len(v) > max_len:
            raise XdrEncodeError(f"opaque of {len(v)} bytes exceeds its bound {max_len}")
        self.pack_opaque(v)

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
    except (EOFError, struct.error, IndexError, ValueError, OverflowError, xdrlib3.Error) as e:
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

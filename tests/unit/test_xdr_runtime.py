"""The strict runtime: every check happens before allocation, and only XdrError escapes."""

from __future__ import annotations

import contextlib
import struct

import pytest
import xdrlib3
from hypothesis import given
from hypothesis import strategies as st

from gssproxy_py.errors import PeerError, XdrEncodeError, XdrError
from gssproxy_py.xdr import Decoder, Encoder, decode_bytes, encode_bytes


def u32(*v: int) -> bytes:
    return b"".join(struct.pack(">I", x) for x in v)


def test_xdr_error_is_the_peers_fault() -> None:
    assert issubclass(XdrError, PeerError)


def test_opaque_length_checked_against_remaining_before_allocating() -> None:
    d = Decoder(u32(0xFFFFFFF0) + b"abc")
    with pytest.raises(XdrError, match="truncated"):
        d.opaque_var()


def test_opaque_bound() -> None:
    with pytest.raises(XdrError, match="exceeds its bound 2"):
        Decoder(u32(3) + b"abc\0").opaque_var(2)


def test_padding_must_be_zero() -> None:
    assert Decoder(u32(1) + b"a\0\0\0").opaque_var() == b"a"
    with pytest.raises(XdrError, match="non-zero padding"):
        Decoder(u32(1) + b"a\0\0\1").opaque_var()


def test_bool_only_zero_or_one() -> None:
    assert Decoder(u32(1)).boolean() is True
    with pytest.raises(XdrError, match="bool must be 0 or 1, got 2"):
        Decoder(u32(2)).boolean()


def test_array_count_vs_remaining_bytes() -> None:
    # a count of 2**32-1 with 8 bytes left is refused before any item is read
    d = Decoder(u32(0xFFFFFFFF) + b"\0" * 8)
    with pytest.raises(XdrError, match="exceeds its bound"):
        d.array_count(None, 4)
    d = Decoder(u32(3) + b"\0" * 8, max_items=10)
    with pytest.raises(XdrError, match="cannot fit"):
        d.array_count(None, 4)


def test_trailing_bytes() -> None:
    with pytest.raises(XdrError, match="1 trailing bytes"):
        decode_bytes(lambda d: d.uint32(), u32(1) + b"x")


def test_enum_member() -> None:
    members = {1: "one"}
    assert Decoder(u32(1)).enum_member(members, "e") == "one"
    with pytest.raises(XdrError, match="2 is not a value of enum e"):
        Decoder(u32(2)).enum_member(members, "e")


def test_depth() -> None:
    d = Decoder(b"", max_depth=2)
    d.enter()
    d.enter()
    with pytest.raises(XdrError, match="nesting deeper than 2"):
        d.enter()


@given(st.binary(max_size=64))
def test_primitive_errors_never_escape(data: bytes) -> None:
    def read_everything(d: Decoder) -> object:
        return (d.uint64(), d.opaque_var(), d.boolean(), d.string_var(3), d.float64())

    with contextlib.suppress(XdrError):
        decode_bytes(read_everything, data)


def test_stray_primitive_errors_become_xdr_error() -> None:
    def buggy(d: Decoder) -> object:
        raise EOFError

    with pytest.raises(XdrError):
        decode_bytes(buggy, b"")
    with pytest.raises(XdrError):
        decode_bytes(lambda d: [0][1], b"")


def test_encoder_refuses_what_does_not_fit() -> None:
    e = Encoder()
    for bad in (
        lambda: e.uint32(-1),
        lambda: e.int32(2**31),
        lambda: e.uint64(2**64),
        lambda: e.opaque_fixed(2, b"abc"),
        lambda: e.opaque_var(b"abc", 2),
        lambda: e.array_count(5, 4),
        lambda: e.fixed_count(3, 2),
    ):
        with pytest.raises(XdrEncodeError):
            bad()
    assert encode_bytes(lambda e, v: e.opaque_var(v), b"ab") == u32(2) + b"ab\0\0"


def test_xdrlib3_only_through_its_public_api() -> None:
    # The codec owns its buffer and position: no subclass writing xdrlib3's
    # name-mangled attributes.
    assert not issubclass(Decoder, xdrlib3.Unpacker)
    assert not issubclass(Encoder, xdrlib3.Packer)


@given(st.floats(width=32, allow_nan=False), st.floats(allow_nan=False))
def test_float_and_double_round_trip(single: float, double: float) -> None:
    def enc(e: Encoder, v: tuple[float, float]) -> None:
        e.float32(v[0])
        e.float64(v[1])

    wire = encode_bytes(enc, (single, double))
    assert wire == struct.pack(">fd", single, double)
    assert decode_bytes(lambda d: (d.float32(), d.float64()), wire) == (single, double)


def test_float_errors() -> None:
    with pytest.raises(XdrEncodeError, match="does not fit float"):
        Encoder().float32(1e40)
    with pytest.raises(XdrError, match="truncated"):
        Decoder(b"\0\0\0").float32()
    with pytest.raises(XdrError, match="truncated"):
        Decoder(b"\0" * 7).float64()


def test_positions() -> None:
    d = Decoder(u32(1, 2))
    assert d.uint32() == 1 and d.get_position() == 4 and d.get_buffer() == u32(1, 2)
    d.set_position(8)
    d.done()
    with pytest.raises(XdrError, match="outside the 8-byte message"):
        d.set_position(9)


# Every reading method of a bare Decoder, with arguments that exercise its checks.
READERS = [
    lambda d: d.uint32(),
    lambda d: d.int32(),
    lambda d: d.uint64(),
    lambda d: d.int64(),
    lambda d: d.float32(),
    lambda d: d.float64(),
    lambda d: d.boolean(),
    lambda d: d.optional_flag(),
    lambda d: d.enum(frozenset({0, 1}), "e"),
    lambda d: d.enum_member({0: "zero"}, "e"),
    lambda d: d.opaque_fixed(5),
    lambda d: d.opaque_var(),
    lambda d: d.opaque_var(3),
    lambda d: d.string_var(),
    lambda d: d.array_count(None, 4),
    lambda d: d.fixed_count(3, 4),
    lambda d: d.array(lambda d: d.opaque_var(), 2, 4),
    lambda d: d.done(),
]


@given(st.binary(max_size=40), st.lists(st.integers(0, len(READERS) - 1), max_size=12))
def test_a_bare_decoder_raises_only_xdr_error(data: bytes, calls: list[int]) -> None:
    """XdrError is the only exception a Decoder method raises, also outside
    decode_bytes (rpc/messages.py reads the call header by hand)."""
    d = Decoder(data)
    with contextlib.suppress(XdrError):
        for i in calls:
            READERS[i](d)

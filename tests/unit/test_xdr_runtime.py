"""The strict runtime: every check happens before allocation, and only XdrError escapes."""

from __future__ import annotations

import contextlib
import struct

import pytest
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

"""p11-kit framing and field codec: frames split anywhere, every bound
checked before allocation, attribute values round-trip by value class,
nesting capped."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gssproxy_py.p11kit.attributes import (
    Attribute,
    AttrValue,
    ValueClass,
    value_class,
    value_length,
)
from gssproxy_py.p11kit.wire import (
    MAX_ATTRIBUTE_DEPTH,
    AttributeOut,
    FrameReader,
    Mechanism,
    OaepParams,
    ProtocolError,
    PssParams,
    Reader,
    Writer,
    encode_frame,
    lone_frame,
)
from tests.support.p11kit_client import Request


def _frame(code: int, body: bytes, options: bytes = b"client") -> bytes:
    return struct.pack(">III", code, len(options), len(body)) + options + body


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5), st.data())
def test_frames_split_anywhere(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"\x02" + b"".join(_frame(0x10 + i, b) for i, b in enumerate(bodies))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = FrameReader()
    got = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got += reader.feed(stream[prev:cut])
        prev = cut
    assert reader.version == 2
    assert [(f.code, f.body) for f in got] == [(0x10 + i, b) for i, b in enumerate(bodies)]
    assert not reader.pending


@given(
    st.one_of(
        st.builds(_frame, st.integers(0, 3), st.binary(max_size=30), st.binary(max_size=8)),
        st.binary(max_size=40),
    ),
    st.binary(max_size=3),
    st.booleans(),
)
def test_lone_frame_agrees_with_feed(data: bytes, pending: bytes, started: bool) -> None:
    """`lone_frame` (the worker's shortcut for a read holding one request,
    taken when its reader has the version and nothing buffered) takes only
    what `feed` would turn into exactly that one frame."""
    reader = FrameReader()
    if started:
        reader.feed(b"\x00" + pending)
    whole = lone_frame(data)
    if whole is None or not started or pending:
        return
    assert [(f.code, f.body) for f in reader.feed(data)] == [whole]
    assert not reader.pending


@pytest.mark.parametrize(
    "header",
    [
        struct.pack(">III", 0, 0, 0),  # code 0
        struct.pack(">III", 0x10, 1 << 20, 0),  # options too long
        struct.pack(">III", 0x10, 0, (1 << 20) + 1),  # body too long
    ],
)
def test_bad_frame_headers(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameReader().feed(b"\x00" + header)


def test_server_frame_has_no_options() -> None:
    assert encode_frame(0x11, b"abcd") == bytes.fromhex("000000110000000000000004") + b"abcd"


@pytest.mark.parametrize(
    "raw",
    [
        bytes.fromhex("7fffffff"),  # byte array at p11-kit's limit
        bytes.fromhex("00000010") + b"short",  # longer than what is left
    ],
)
def test_byte_array_bounds(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        Reader(raw).byte_array()


def test_counts_checked_against_bytes_left() -> None:
    # 1000 attributes claimed in 10 bytes: refused before reading any
    with pytest.raises(ProtocolError, match="items"):
        Reader(struct.pack(">I", 1000) + b"\0" * 10).attributes()
    with pytest.raises(ProtocolError):
        Reader(b"\x01" + struct.pack(">I", 1 << 30)).ulong_array()
    with pytest.raises(ProtocolError):
        Reader(struct.pack(">I", 1 << 20)).attribute_rooms()


def _nested(depth: int) -> bytes:
    # CKA_WRAP_TEMPLATE inside CKA_WRAP_TEMPLATE ... `depth` times
    inner = struct.pack(">I", 0)
    for _ in range(depth):
        inner = (
            struct.pack(">I", 1)
            + struct.pack(">I", 0x40000211)
            + b"\x01"
            + struct.pack(">I", 24)
            + inner
        )
    return inner


def test_attribute_nesting_is_capped() -> None:
    Reader(_nested(MAX_ATTRIBUTE_DEPTH)).attributes()
    with pytest.raises(ProtocolError, match="nested"):
        Reader(_nested(MAX_ATTRIBUTE_DEPTH + 1)).attributes()
    with pytest.raises(ProtocolError):
        Reader(_nested(100_000 // 13)).attributes()  # no RecursionError


def test_boolean_bytes_are_strict() -> None:
    with pytest.raises(ProtocolError):
        Reader(b"\x02").flag()


def _value(attr_type: int) -> st.SearchStrategy[AttrValue]:
    cls = value_class(attr_type)
    if cls is ValueClass.BOOL:
        return st.booleans()
    if cls is ValueClass.ULONG:
        return st.integers(0, 2**64 - 1)
    if cls is ValueClass.MECHANISMS:
        return st.lists(st.integers(0, 2**64 - 1), max_size=4).map(tuple)
    if cls is ValueClass.DATE:
        return st.sampled_from([b"", b"20261206"])
    if cls is ValueClass.ATTRIBUTES:
        return st.lists(
            st.builds(Attribute, st.sampled_from([0x0, 0x3, 0x108]), st.none()), max_size=3
        ).map(tuple)
    return st.binary(max_size=64)


ATTR_TYPES = [0x0, 0x1, 0x3, 0x11, 0x100, 0x102, 0x110, 0x129, 0x40000211, 0x40000600, 0x80000001]


@st.composite
def _attribute(draw: st.DrawFn) -> Attribute:
    t = draw(st.sampled_from(ATTR_TYPES))
    return Attribute(t, draw(st.none() | _value(t)))


@settings(max_examples=200)
@given(st.lists(_attribute(), max_size=8))
def test_attribute_arrays_round_trip(attrs: list[Attribute]) -> None:
    w = Writer(1, "")
    w.attributes(
        [
            AttributeOut(
                a.type, None if a.value is None else value_length(a.type, a.value), a.value
            )
            for a in attrs
        ]
    )
    body = w.body()
    r = Reader(body, 8)
    assert list(r.attributes()) == attrs
    assert r.at_end()


@pytest.mark.parametrize(
    "mech",
    [
        Mechanism(0x1041),
        Mechanism(0xD, PssParams(0x250, 0x2, 32)),
        Mechanism(0x9, OaepParams(0x220, 0x1, 1, None)),
        Mechanism(0x9, OaepParams(0x220, 0x1, 1, b"label")),
        Mechanism(0x1082, b"\x00" * 16),
    ],
)
def test_mechanisms_round_trip(mech: Mechanism) -> None:
    body = Request(42, "M").m(mech).body()
    r = Reader(body, 4 + 4 + 1)
    assert r.mechanism() == mech and r.at_end()


def test_null_mechanism_is_none() -> None:
    assert Reader(struct.pack(">I", 0xFFFFFFFF)).mechanism() is None


def test_room_forms() -> None:
    assert Reader(struct.pack(">I", 0)).room() is None  # size query
    assert Reader(struct.pack(">I", 0xFFFFFFFF)).room() == 0  # 0.25+: non-NULL, length 0
    assert Reader(struct.pack(">I", 512)).room() == 512

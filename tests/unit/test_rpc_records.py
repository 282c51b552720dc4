"""Record marking: reassembly from any split of the stream, limits, framing."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gssproxy_py.errors import PeerError
from gssproxy_py.rpc.records import LAST_FRAGMENT, RecordReader, RecordTooLargeError, frame


def fragments(record: bytes, cuts: list[int]) -> bytes:
    """`record` as fragments cut at `cuts` (repeats make empty fragments)."""
    bounds = [0, *sorted(min(c, len(record)) for c in cuts), len(record)]
    out = b""
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        last = i == len(bounds) - 2
        out += struct.pack(">I", (LAST_FRAGMENT if last else 0) | (b - a)) + record[a:b]
    return out


def feed_in_chunks(reader: RecordReader, stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(min(c, len(stream)) for c in cuts), len(stream)]
    got: list[bytes] = []
    for a, b in itertools.pairwise(bounds):
        got += reader.feed(stream[a:b])
    return got


@st.composite
def fragmented_stream(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    records = draw(st.lists(st.binary(max_size=200), max_size=8))
    stream = b""
    for record in records:
        cuts = draw(st.lists(st.integers(0, len(record)), max_size=4))
        stream += fragments(record, cuts)
    return records, stream


@settings(max_examples=300, deadline=None)
@given(fragmented_stream(), st.data())
def test_any_split_of_a_multi_fragment_stream_gives_back_the_records(
    case: tuple[list[bytes], bytes], data: st.DataObject
) -> None:
    records, stream = case
    chunk_cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    reader = RecordReader(max_record_size=200)
    assert feed_in_chunks(reader, stream, chunk_cuts) == records
    assert not reader.pending


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=100), min_size=1, max_size=5))
def test_one_byte_at_a_time(records: list[bytes]) -> None:
    stream = b"".join(frame(r) for r in records)
    reader = RecordReader()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
    assert got == records


def test_frame_writes_one_last_fragment() -> None:
    assert frame(b"abcd") == b"\x80\x00\x00\x04abcd"
    assert frame(b"") == b"\x80\x00\x00\x00"
    assert frame(memoryview(b"xy")) == b"\x80\x00\x00\x02xy"


def test_zero_length_fragments() -> None:
    reader = RecordReader()
    # Two empty non-last fragments, a body fragment, an empty last fragment.
    stream = b"\0\0\0\0" * 2 + b"\0\0\0\x03abc" + b"\x80\0\0\0"
    assert reader.feed(stream) == [b"abc"]
    # An empty record is a record (the caller decides it is not a valid call).
    assert reader.feed(b"\x80\0\0\0") == [b""]
    assert not reader.pending


def test_pending_tracks_partial_records() -> None:
    reader = RecordReader()
    assert not reader.pending
    assert reader.feed(b"\x80\0") == []
    assert reader.pending
    assert reader.feed(b"\0\x02a") == []
    assert reader.pending
    assert reader.feed(b"b") == [b"ab"]
    assert not reader.pending
    reader.feed(b"\0\0\0\x01z")  # a complete non-last fragment is still pending
    assert reader.pending


def test_record_at_the_limit_is_accepted() -> None:
    reader = RecordReader(max_record_size=8)
    assert reader.feed(fragments(b"12345678", [3, 5])) == [b"12345678"]


def test_oversize_header_is_refused_before_its_body() -> None:
    reader = RecordReader(max_record_size=1024)
    with pytest.raises(RecordTooLargeError) as info:
        reader.feed(struct.pack(">I", LAST_FRAGMENT | 1025))  # no body sent at all
    assert isinstance(info.value, PeerError)
    assert info.value.announced == 1025
    assert info.value.limit == 1024


def test_oversize_sum_of_fragments_is_refused_at_the_fragment_that_exceeds() -> None:
    reader = RecordReader(max_record_size=10)
    assert reader.feed(struct.pack(">I", 6) + b"x" * 6) == []
    with pytest.raises(RecordTooLargeError) as info:
        reader.feed(struct.pack(">I", LAST_FRAGMENT | 5))
    assert info.value.announced == 11


def test_a_huge_announced_length_does_not_allocate() -> None:
    reader = RecordReader()
    with pytest.raises(RecordTooLargeError):
        reader.feed(b"\xff\xff\xff\xff")


def test_reader_is_spent_after_an_oversize_record() -> None:
    reader = RecordReader(max_record_size=4)
    with pytest.raises(RecordTooLargeError):
        reader.feed(b"\x80\0\0\x05")
    with pytest.raises(RecordTooLargeError):
        reader.feed(frame(b"ok"))


def test_records_before_an_oversize_one_in_the_same_chunk_are_lost_with_it() -> None:
    # The whole chunk is refused: the connection is about to be closed anyway.
    reader = RecordReader(max_record_size=4)
    with pytest.raises(RecordTooLargeError):
        reader.feed(frame(b"ok") + b"\x80\0\0\x05")


def test_negative_limit_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_record_size"):
        RecordReader(max_record_size=-1)


def test_large_record_fed_in_small_chunks() -> None:
    record = bytes(range(256)) * 4096  # 1 MiB
    stream = frame(record)
    reader = RecordReader()
    got: list[bytes] = []
    for i in range(0, len(stream), 1000):
        got += reader.feed(memoryview(stream)[i : i + 1000])
    assert got == [record]

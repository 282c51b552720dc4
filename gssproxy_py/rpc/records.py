"""ONC RPC record marking over a byte stream (RFC 5531 §11), without I/O.

On a stream transport every RPC message is a *record*: one or more fragments,
each behind a 4-byte big-endian header whose top bit says "last fragment" and
whose low 31 bits give the fragment's length.

`RecordReader` turns whatever chunks a socket delivers into whole records.
It accepts records split into several fragments (gssproxy closes the
connection on those; RFC 5531 allows them, so we take them) and any split of
the stream into chunks. A record whose fragments add up to more than the
limit is refused as soon as the header announcing the excess arrives, before
its body is buffered, so a peer cannot make us hold more than the limit.

`frame` writes the other direction, always as one last fragment: the
interposer plugin reads a single fragment and cannot reassemble more.
"""

from __future__ import annotations

import struct

from gssproxy_py.errors import PeerError

#: The top bit of a fragment header: this fragment ends the record.
LAST_FRAGMENT = 0x80000000
#: The low 31 bits of a fragment header: the fragment's length.
FRAGMENT_LENGTH_MASK = 0x7FFFFFFF
#: gssproxy's MAX_RPC_SIZE, also the interposer's and our default limit.
DEFAULT_MAX_RECORD_SIZE = 1024 * 1024

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


class RecordTooLargeError(PeerError):
    """A record (the sum of its fragments) would exceed the reader's limit."""

    def __init__(self, announced: int, limit: int) -> None:
        self.announced = announced
        self.limit = limit
        super().__init__(f"record of at least {announced} bytes exceeds the limit of {limit}")


class RecordReader:
    """Reassembles records from a stream fed in arbitrary chunks.

    Every byte fed is copied at most twice (into the record buffer, then out
    as the finished record), so the cost is linear in the input whatever the
    chunking. After `RecordTooLargeError` the reader is spent: the stream can no
    longer be resynchronised, and every later `feed` raises again.
    """

    __slots__ = ("_fragment_left", "_header", "_is_last", "_max", "_record", "_spent")

    def __init__(self, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> None:
        if max_record_size < 0:
            raise ValueError("max_record_size must be >= 0")
        self._max = max_record_size
        self._header = bytearray()  # a header split across chunks, < 4 bytes
        self._record = bytearray()  # fragment bodies of the record being read
        self._fragment_left: int | None = None  # None: a header comes next
        self._is_last = False
        self._spent: RecordTooLargeError | None = None

    @property
    def max_record_size(self) -> int:
        return self._max

    @property
    def pending(self) -> bool:
        """True if part of a record has been fed but not yet returned.

        At end of stream this means the peer stopped mid-record.
        """
        return bool(self._header or self._record or self._fragment_left is not None)

    @property
    def buffered(self) -> int:
        """Bytes of the record being read held here (its fragments so far)."""
        return len(self._header) + len(self._record)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next chunk of the stream; return the records it completed.

        Raises `RecordTooLargeError` when a fragment header announces more than
        the limit allows for the record it belongs to; records completed
        earlier in the same chunk are dropped with it, since the stream is
        beyond repair and the connection is about to close.
        """
        if self._spent is not None:
            raise self._spent
        view = memoryview(data).cast("B")
        records: list[bytes] = []
        pos = 0
        if self._fragment_left is None and not self._header and not self._record:
            pos = self._whole_records(view, records)
        self._reassemble(view, pos, records)
        return records

    def _whole_records(self, view: memoryview, records: list[bytes]) -> int:
        """At a record boundary (the usual case): slice whole single-fragment
        records out of the chunk without the reassembly buffer. Returns where
        the rest of the chunk starts."""
        pos, end = 0, len(view)
        while end - pos >= HEADER_SIZE:
            (word,) = _HEADER.unpack_from(view, pos)
            length = word & FRAGMENT_LENGTH_MASK
            if not word & LAST_FRAGMENT or pos + HEADER_SIZE + length > end:
                break
            if length > self._max:
                self._spent = RecordTooLargeError(length, self._max)
                raise self._spent
            start = pos + HEADER_SIZE
            records.append(bytes(view[start : start + length]))
            pos = start + length
        return pos

    def _reassemble(self, view: memoryview, pos: int, records: list[bytes]) -> None:
        """Feed view[pos:] through the reassembly buffer, fragment by fragment."""
        end = len(view)
        while pos < end:
            # A local, not the attribute twice: mypy (and so mypyc) keeps the
            # attribute narrowed to None across _take_header's assignment.
            left = self._fragment_left
            if left is None:
                pos, left = self._take_header(view, pos)
                if left is None:
                    return  # the header continues in the next chunk
            take = min(left, end - pos)
            if take:
                self._record += view[pos : pos + take]
                pos += take
                left -= take
            self._fragment_left = left
            if left == 0:
                self._fragment_left = None
                if self._is_last:
                    records.append(bytes(self._record))
                    self._record.clear()

    def _take_header(self, view: memoryview, pos: int) -> tuple[int, int | None]:
        """Read (the rest of) a fragment header; once whole, start its fragment.

        Returns where the chunk goes on and the fragment's length, None while
        the header is still incomplete.
        """
        take = min(HEADER_SIZE - len(self._header), len(view) - pos)
        self._header += view[pos : pos + take]
        pos += take
        if len(self._header) < HEADER_SIZE:
            return pos, None
        (word,) = _HEADER.unpack(self._header)
        self._header.clear()
        length = word & FRAGMENT_LENGTH_MASK
        total = len(self._record) + length
        if total > self._max:
            self._spent = RecordTooLargeError(total, self._max)
            raise self._spent
        self._fragment_left = length
        self._is_last = bool(word & LAST_FRAGMENT)
        return pos, length


def frame(record: bytes | bytearray | memoryview) -> bytes:
    """`record` as one last fragment: header and body in a single buffer, so a
    reply goes out with one write and never interleaves with another."""
    length = len(memoryview(record).cast("B"))
    if length > FRAGMENT_LENGTH_MASK:
        raise ValueError(f"a record of {length} bytes does not fit one fragment")
    return _HEADER.pack(LAST_FRAGMENT | length) + bytes(record)

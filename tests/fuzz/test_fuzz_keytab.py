"""Fuzz target: random and mutated bytes into the keytab reader.

`keytabs.parse_entries` may only raise `KeytabFormatError`, and never keeps
more entries than the bytes can hold. `make fuzz` raises FUZZ_EXAMPLES.
"""

from __future__ import annotations

import contextlib
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gssproxy_py.gss.keytabs import KeytabFormatError, parse_entries

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _entry(principal: list[bytes], realm: bytes, kvno: int, key: bytes) -> bytes:
    body = struct.pack(">H", len(principal)) + struct.pack(">H", len(realm)) + realm
    for part in principal:
        body += struct.pack(">H", len(part)) + part
    body += struct.pack(">IIBH", 1, 0, kvno & 0xFF, 18) + struct.pack(">H", len(key)) + key
    body += struct.pack(">I", kvno)
    return struct.pack(">i", len(body)) + body


_part = st.binary(min_size=1, max_size=12)
_keytab = st.builds(
    lambda entries: b"\x05\x02" + b"".join(entries),
    st.lists(
        st.builds(
            _entry,
            st.lists(_part, min_size=1, max_size=3),
            _part,
            st.integers(0, 2**32 - 1),
            st.binary(max_size=40),
        ),
        max_size=4,
    ),
)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    with contextlib.suppress(KeytabFormatError):
        parse_entries(data)


@FUZZ
@given(_keytab, st.data())
def test_mutated_keytabs(image: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(image)))
    cut = data.draw(st.booleans())
    junk = data.draw(st.binary(max_size=8))
    mutated = image[:at] + junk if cut else image[:at] + junk + image[at + len(junk) :]
    try:
        entries = parse_entries(mutated)
    except KeytabFormatError:
        return
    assert len(entries) <= len(mutated) // 4

"""vocab/oids.py: the one OID codec (DER contents <-> dotted), against python-gssapi,
with one error behaviour (OidError, a ValueError) for text and bytes alike."""

from __future__ import annotations

import gssapi.raw as graw
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gssproxy_py.vocab import oids
from gssproxy_py.vocab.oids import OidError, decode_oid, encode_oid


@pytest.mark.parametrize(
    "dotted",
    [
        "1.2.840.113554.1.2.2",
        "1.3.5.1.5.2",
        "1.2.840.48018.1.2.2",
        "1.3.6.1.5.2.5",
        "2.16.840.1.113730.3.8.15.1",
        "1.3.6.1.5.6.4",
    ],
)
def test_matches_gssapi(dotted: str) -> None:
    assert oids.encode_oid(dotted) == bytes(graw.OID.from_int_seq(dotted))  # type: ignore[call-overload]
    assert oids.decode_oid(oids.encode_oid(dotted)) == dotted


def test_known_values() -> None:
    assert oids.KRB5.hex() == "2a864886f712010202"
    assert oids.encode_oid("2.16.840.1.113730.3.8.15.1").hex() == "6086480186f84203080f01"
    assert bytes(graw.NameType.kerberos_principal) == oids.NT_KRB5_PRINCIPAL  # type: ignore[call-overload]
    assert bytes(graw.NameType.hostbased_service) == oids.NT_HOSTBASED_SERVICE  # type: ignore[call-overload]


@given(
    st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=8), st.integers(0, 39)
)
def test_roundtrip(rest: list[int], second: int) -> None:
    dotted = ".".join(str(a) for a in [1, second, *rest])
    assert oids.decode_oid(oids.encode_oid(dotted)) == dotted


@pytest.mark.parametrize("bad", [b"", b"\x2a\x86", b"\x2a\x80\x01", b"\x80"])
def test_malformed(bad: bytes) -> None:
    with pytest.raises(OidError):
        oids.decode_oid(bad)
    assert issubclass(OidError, ValueError)


@pytest.mark.parametrize(
    ("dotted", "hexed"),
    [
        ("1.2.840.113554.1.2.2", "2a864886f712010202"),
        ("1.3.5.1.5.2", "2b05010502"),
        ("2.16.840.1.113730.3.8.15.1", "6086480186f84203080f01"),
        ("1.3.6.1.5.2.5", "2b0601050205"),
        ("0.0", "00"),
        ("2.999", "8837"),
    ],
)
def test_oid_codec(dotted: str, hexed: str) -> None:
    assert encode_oid(dotted).hex() == hexed
    assert decode_oid(bytes.fromhex(hexed)) == dotted


@given(
    arcs=st.lists(st.integers(0, 1 << 40), min_size=0, max_size=8),
    first=st.integers(0, 2),
    second=st.integers(0, 39),
)
def test_oid_codec_round_trip(arcs: list[int], first: int, second: int) -> None:
    dotted = ".".join(map(str, [first, second, *arcs]))
    assert decode_oid(encode_oid(dotted)) == dotted


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x.y", "not a dotted OID"),
        ("1", "not a dotted OID"),
        ("3.1", "not a dotted OID"),
        ("1.-1", "not a dotted OID"),  # the daemon's old codec took this as 0.39
        ("1.40", "must be below 40"),
    ],
)
def test_not_dotted(text: str, fragment: str) -> None:
    with pytest.raises(OidError, match=fragment):
        encode_oid(text)

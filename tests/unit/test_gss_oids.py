"""Unit tests for gss/oids.py (DER contents <-> dotted) against python-gssapi."""

from __future__ import annotations

import gssapi.raw as graw
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gssproxy_py.gss import oids


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


@pytest.mark.parametrize("bad", [b"", b"\x2a\x86", b"\x2a\x80\x01"])
def test_malformed(bad: bytes) -> None:
    with pytest.raises(ValueError):
        oids.decode_oid(bad)

"""Unit tests for gss/krb5_token.py: the ticket's server in a krb5 AP-REQ token.

The real tokens are the interposer's recorded ones
(tests/conformance/data/interposer-accept.txt); that the bytes decide the
target MIT names is tests/integration/test_gss_procedures.py's.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gssproxy_py.gss.krb5_token import ticket_server
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.xdr.runtime import decode_bytes
from tests.conformance.test_direct_path import HEADER, RECORDED

TOKENS = [
    decode_bytes(gp.decode_gssx_arg_accept_sec_context, r[HEADER:]).input_token
    for r in RECORDED
    if int.from_bytes(r[20:24], "big") == gp.GSSX_ACCEPT_SEC_CONTEXT
]
#: The ticket's realm [1] and sname [2] fields, DER, of host/localhost@EXAMPLE.TEST
SERVER = bytes.fromhex("a10e1b0c") + b"EXAMPLE.TEST" + bytes.fromhex("a21c301aa003020103a1133011")
SERVER += b"\x1b\x04host\x1b\x09localhost"


def test_the_recorded_tokens_name_their_ticket_server() -> None:
    assert len(TOKENS) == 2
    assert TOKENS[0][4:17] == bytes.fromhex("06092a864886f712010202") + b"\x01\x00"
    assert [ticket_server(t) for t in TOKENS] == [SERVER, SERVER]


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t[:-1],  # one byte missing
        lambda t: t + b"\0",  # one byte left over
        lambda t: t[:14] + b"\x03" + t[15:],  # another OID (1.2.840.113554.1.2.3)
        lambda t: t[:15] + b"\x02\x00" + t[17:],  # TOK_ID of an AP-REP
        lambda t: b"\x61" + t[1:],  # not RFC 2743's framing
    ],
)
def test_anything_else_is_none(change: object) -> None:
    assert callable(change)
    assert ticket_server(change(TOKENS[0])) is None


@given(st.binary(max_size=64))
def test_random_bytes_are_none(data: bytes) -> None:
    assert ticket_server(data) is None


@given(st.integers(0, len(TOKENS[0]) - 1), st.integers(0, 255))
def test_a_changed_byte_gives_none_or_a_slice_of_the_token(at: int, value: int) -> None:
    token = bytearray(TOKENS[0])
    token[at] = value
    server = ticket_server(bytes(token))
    assert server is None or server in bytes(token)

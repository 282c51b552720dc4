"""Call parsing, reply building and routing, against hand-assembled bytes."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gssproxy_py.errors import PeerError, XdrEncodeError
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM
from gssproxy_py.proto.rpc_msg import AuthStat
from gssproxy_py.rpc.dispatch import CallInfo, ProgramService
from gssproxy_py.rpc.messages import (
    CallHeader,
    NotACallError,
    OversizedReplyError,
    Routed,
    UndecodableCallError,
    describe_reply,
    encode_reply,
    parse_call,
    reply_auth_error,
    reply_garbage_args,
    reply_proc_unavail,
    reply_prog_mismatch,
    reply_prog_unavail,
    reply_rpc_mismatch,
    reply_success,
    reply_system_err,
    route,
)
from gssproxy_py.xdr.program import Procedure, Program, Version
from gssproxy_py.xdr.runtime import Decoder, Encoder

TEST_PROG = 0x20000042


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def call(
    xid: int = 0x1A2B3C4C,
    *,
    prog: int = TEST_PROG,
    vers: int = 1,
    proc: int = 1,
    mtype: int = 0,
    rpcvers: int = 2,
    cred: tuple[int, bytes] = (0, b""),
    verf: tuple[int, bytes] = (0, b""),
    args: bytes = b"",
) -> bytes:
    def auth(flavor: int, body: bytes) -> bytes:
        return u32(flavor, len(body)) + body + b"\0" * (-len(body) % 4)

    return u32(xid, mtype, rpcvers, prog, vers, proc) + auth(*cred) + auth(*verf) + args


def accepted(xid: int, stat: int, tail: bytes = b"") -> bytes:
    # xid, REPLY, MSG_ACCEPTED, verifier AUTH_NONE/0, accept_stat
    return u32(xid, 1, 0, 0, 0, stat) + tail


def denied(xid: int, reject_stat: int, tail: bytes) -> bytes:
    return u32(xid, 1, 1, reject_stat) + tail


async def echo(info: CallInfo, arg: Any) -> Any:
    return arg


def _opaque_proc(number: int, name: str) -> Procedure:
    def dec(d: Decoder) -> bytes:
        return d.opaque_var(64)

    def enc(e: Encoder, v: bytes) -> None:
        e.opaque_var(v, 64)

    return Procedure(number, name, bytes, bytes, dec, enc, dec, enc)


PROGRAM = Program(
    TEST_PROG,
    "TESTPROG",
    {
        1: Version(1, "V1", {1: _opaque_proc(1, "ECHO"), 2: _opaque_proc(2, "UNWIRED")}),
        3: Version(3, "V3", {1: _opaque_proc(1, "ECHO")}),
    },
)
SERVICE = ProgramService(PROGRAM, {(1, 1): echo, (3, 1): echo})
SERVICES = {TEST_PROG: SERVICE}

ECHO_ARGS = u32(3) + b"abc\0"


# -- reply builders: exact bytes ------------------------------------------------


def test_reply_builders_bytes() -> None:
    x = 0xDEADBEEF
    assert reply_success(x, b"RES!") == accepted(x, 0, b"RES!")
    assert reply_prog_unavail(x) == accepted(x, 1)
    assert reply_prog_mismatch(x, 1, 3) == accepted(x, 2, u32(1, 3))
    assert reply_proc_unavail(x) == accepted(x, 3)
    assert reply_garbage_args(x) == accepted(x, 4)
    assert reply_system_err(x) == accepted(x, 5)
    assert reply_rpc_mismatch(x, 2, 2) == denied(x, 0, u32(2, 2))
    assert reply_rpc_mismatch(x) == denied(x, 0, u32(2, 2))
    assert reply_auth_error(x, AuthStat.AUTH_FAILED) == denied(x, 1, u32(7))


# -- parse_call -----------------------------------------------------------------


def test_parse_kernel_null_ping() -> None:
    ping = bytes.fromhex("1a2b3c4c000000000000000200061af0000000010000000000000000")
    ping += bytes(12)
    header = parse_call(ping)
    assert isinstance(header, CallHeader)
    fields = (header.xid, header.rpcvers, header.prog, header.vers, header.proc)
    assert fields == (0x1A2B3C4C, 2, 400112, 1, 0)
    assert (header.cred_flavor, header.verf_flavor, bytes(header.args)) == (0, 0, b"")


def test_parse_call_args_are_the_bytes_after_the_header() -> None:
    record = call(cred=(0, b"xyz"), verf=(6, b"12345678"), args=b"ARGS")
    header = parse_call(record)
    assert bytes(header.args) == b"ARGS"
    assert header.verf_flavor == 6


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\0\0\0", id="short-xid"),
        pytest.param(u32(1), id="no-mtype"),
        pytest.param(u32(1, 2), id="unknown-mtype"),
        pytest.param(u32(1, 0, 2, TEST_PROG, 1, 1, 0), id="truncated-cred"),
        pytest.param(call(cred=(0, b"x" * 401)), id="cred-body-over-400"),
        pytest.param(call()[:-1], id="truncated-verf"),
        pytest.param(u32(1, 0, 2, TEST_PROG, 1, 1, 0, 1) + b"a\0\0\x01" + u32(0, 0), id="bad-pad"),
    ],
)
def test_undecodable_headers(record: bytes) -> None:
    with pytest.raises(UndecodableCallError) as info:
        parse_call(record)
    assert isinstance(info.value, PeerError)
    with pytest.raises(UndecodableCallError):
        route(record, SERVICES)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_route_never_raises_anything_but_undecodable(record: bytes) -> None:
    try:
        result = route(record, SERVICES)
    except UndecodableCallError:
        return
    assert isinstance(result, bytes | Routed)


# -- route: the RPC error table, in order ------------------------------------------


def test_reply_message_is_garbage_args() -> None:
    assert route(u32(7, 1, 0, 0, 0, 0), SERVICES) == accepted(7, 4)
    # A REPLY is refused by its type alone; the rest need not decode.
    assert route(u32(7, 1), SERVICES) == accepted(7, 4)


def test_rpc_version_mismatch() -> None:
    assert route(call(9, rpcvers=3), SERVICES) == denied(9, 0, u32(2, 2))


def test_rpc_version_is_checked_before_the_program() -> None:
    assert route(call(9, rpcvers=1, prog=1), SERVICES) == denied(9, 0, u32(2, 2))


def test_unknown_program() -> None:
    assert route(call(10, prog=100003), SERVICES) == accepted(10, 1)


def test_version_mismatch_reports_the_served_range() -> None:
    assert route(call(11, vers=2), SERVICES) == accepted(11, 2, u32(1, 3))


def test_unknown_procedure() -> None:
    assert route(call(12, proc=99), SERVICES) == accepted(12, 3)
    assert route(call(12, vers=3, proc=2), SERVICES) == accepted(12, 3)


def test_procedure_is_checked_before_auth() -> None:
    assert route(call(12, proc=99, cred=(1, b"")), SERVICES) == accepted(12, 3)


@pytest.mark.parametrize("flavor", [1, 2, 3, 6, 400])
def test_cred_flavor_other_than_none_is_auth_failed(flavor: int) -> None:
    record = call(13, cred=(flavor, b"\0" * 20), args=ECHO_ARGS)
    assert route(record, SERVICES) == denied(13, 1, u32(7))


def test_verifier_flavor_is_not_checked() -> None:
    assert isinstance(route(call(14, verf=(1, b"1234"), args=ECHO_ARGS), SERVICES), Routed)


def test_null_procedure_is_success_even_without_a_table_entry() -> None:
    assert route(call(15, proc=0), SERVICES) == accepted(15, 0)
    gss = {400112: ProgramService(GSSPROXY_PROGRAM, {})}
    assert route(call(15, prog=400112, proc=0), gss) == accepted(15, 0)


def test_null_procedure_with_arguments_is_garbage() -> None:
    assert route(call(16, proc=0, args=b"\0\0\0\0"), SERVICES) == accepted(16, 4)


def test_null_procedure_still_needs_auth_none() -> None:
    assert route(call(16, proc=0, cred=(1, b"")), SERVICES) == denied(16, 1, u32(7))


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(b"", id="missing"),
        pytest.param(u32(3) + b"abc", id="truncated-pad"),
        pytest.param(ECHO_ARGS + b"\0\0\0\0", id="trailing"),
        pytest.param(u32(65) + b"x" * 68, id="over-bound"),
    ],
)
def test_arguments_that_do_not_decode_are_garbage(args: bytes) -> None:
    assert route(call(17, args=args), SERVICES) == accepted(17, 4)


def test_garbage_arguments_win_over_a_missing_handler() -> None:
    assert route(call(18, proc=2, args=b"\0"), SERVICES) == accepted(18, 4)


def test_procedure_without_handler_is_proc_unavail() -> None:
    assert route(call(18, proc=2, args=ECHO_ARGS), SERVICES) == accepted(18, 3)


def test_gss_proxy_table_without_handlers() -> None:
    gss = {400112: ProgramService(GSSPROXY_PROGRAM, {})}
    assert route(call(19, prog=400112, proc=16), gss) == accepted(19, 3)
    assert route(call(19, prog=400112, vers=2), gss) == accepted(19, 2, u32(1, 1))
    # INDICATE_MECHS with an empty call_ctx: well-formed, but nothing serves it.
    ctx = u32(0, 0, 0)  # locale<>, serialized_call_ctx, options<>
    assert route(call(19, prog=400112, proc=1, args=ctx), gss) == accepted(19, 3)
    assert route(call(19, prog=400112, proc=1, args=b"\0"), gss) == accepted(19, 4)


def test_routed_call_carries_the_decoded_argument() -> None:
    routed = route(call(20, args=ECHO_ARGS), SERVICES)
    assert isinstance(routed, Routed)
    assert routed.arg == b"abc"
    assert routed.call.xid == 20
    assert routed.procedure.name == "ECHO"
    assert routed.handler is echo


# -- encode_reply -----------------------------------------------------------------


def _routed(xid: int = 21) -> Routed:
    routed = route(call(xid, args=ECHO_ARGS), SERVICES)
    assert isinstance(routed, Routed)
    return routed


def test_encode_reply_success() -> None:
    assert encode_reply(_routed(), b"hi", max_record_size=1 << 20) == accepted(
        21, 0, u32(2) + b"hi\0\0"
    )


def test_encode_reply_refuses_a_result_of_the_wrong_shape() -> None:
    with pytest.raises(XdrEncodeError):
        encode_reply(_routed(), b"x" * 65, max_record_size=1 << 20)
    with pytest.raises(XdrEncodeError):
        encode_reply(_routed(), 12, max_record_size=1 << 20)


def test_encode_reply_refuses_a_reply_over_the_record_limit() -> None:
    size = len(accepted(21, 0, u32(2) + b"hi\0\0"))
    assert encode_reply(_routed(), b"hi", max_record_size=size)
    with pytest.raises(OversizedReplyError):
        encode_reply(_routed(), b"hi", max_record_size=size - 1)


# Small words reach the interesting branches (msg_type, flavors, short auth bodies).
WORD = st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1))


@given(st.binary(max_size=120), st.lists(WORD, max_size=12))
def test_header_readers_let_only_their_own_errors_out(tail: bytes, words: list[int]) -> None:
    """parse_call raises NotACallError or UndecodableCallError, describe_reply
    returns a phrase, whatever the bytes (short auth bodies, odd flavors,
    replies, truncation)."""
    record = u32(*words) + tail
    with contextlib.suppress(NotACallError, UndecodableCallError):
        parse_call(record)
    assert isinstance(describe_reply(record), str)

"""Generated dataclasses to and from JSON (client/values.py).

The property: for every argument and result type of every GSS-Proxy procedure,
value -> JSON text -> value is the identity, and the value read back from JSON
survives XDR encoding and decoding unchanged. Values come from the
compiler-model strategies in tests/support, so every field kind is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gssproxy_py.client.values import (
    EnumType,
    JsonValueError,
    OptionalType,
    Prim,
    SeqType,
    StructType,
    UnionType,
    default_of,
    printable_text,
    struct_fields,
    value_from_json,
    value_to_json,
)
from gssproxy_py.errors import LocalError
from gssproxy_py.proto import gss_proxy as g
from gssproxy_py.proto import rpc_msg
from gssproxy_py.xdr import decode_bytes, encode_bytes
from gssproxy_py.xdrgen import load
from tests.support.xdr_strategies import Strategies

ROOT = Path(__file__).resolve().parents[2]
V1 = g.GSSPROXY_PROGRAM.versions[1]
PROCS = [p for p in V1.procedures.values() if p.arg_type is not None]
KRB5 = bytes.fromhex("2a864886f712010202")

_STRATS: list[Strategies] = []


def strategies() -> Strategies:
    if not _STRATS:
        _STRATS.append(Strategies(load(str(ROOT / "idl" / "gss_proxy.x")), g))
    return _STRATS[0]


def snake(cls_name: str) -> str:
    """GssxArgAcquireCred -> gssx_arg_acquire_cred (the IDL name)."""
    out = ""
    for ch in cls_name:
        out += ("_" + ch.lower()) if ch.isupper() and out else ch.lower()
    return out


CASES = [(p, role) for p in PROCS for role in ("arg", "res")]


@pytest.mark.parametrize(("proc", "role"), CASES, ids=[f"{p.name}.{role}" for p, role in CASES])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_json_round_trip(proc: Any, role: str, data: st.DataObject) -> None:
    tp = proc.arg_type if role == "arg" else proc.res_type
    value = data.draw(strategies().named(snake(tp.__name__)))
    text = json.dumps(value_to_json(value))
    back = value_from_json(json.loads(text), tp)
    assert back == value
    encode = proc.encode_arg if role == "arg" else proc.encode_res
    decode = proc.decode_arg if role == "arg" else proc.decode_res
    assert decode_bytes(decode, encode_bytes(encode, back)) == value


@pytest.mark.parametrize("proc", PROCS, ids=[p.name for p in PROCS])
def test_empty_json_is_the_default_argument(proc: Any) -> None:
    arg = value_from_json({}, proc.arg_type)
    assert arg == default_of(proc.arg_type)
    assert value_from_json(None, proc.arg_type) == arg
    # and it encodes: the CLI sends exactly this when given no argument
    assert decode_bytes(proc.decode_arg, encode_bytes(proc.encode_arg, arg)) == arg


def test_descriptors_follow_aliases() -> None:
    fields = dict(struct_fields(g.GssxArgAcquireCred))
    assert fields["desired_mechs"] == SeqType(Prim(bytes, ("GssxOID",)))
    assert isinstance(fields["desired_name"], OptionalType)
    assert fields["desired_name"].inner == StructType(g.GssxName)
    assert fields["cred_usage"] == EnumType(g.GssxCredUsage)
    assert fields["time_req"] == Prim(int, ("GssxTime",))
    assert fields["add_cred_to_input_handle"] == Prim(bool)
    handle = dict(struct_fields(g.GssxArgReleaseHandle))["cred_handle"]
    assert isinstance(handle, UnionType)
    assert handle.name == "GssxHandle"
    assert handle.arms == (g.GssxHandleCredInfo, g.GssxHandleSecCtxInfo, g.GssxHandleExtensions)
    assert Prim(bytes, ("GssxOID",)).is_oid and not Prim(bytes, ("GssxBuffer",)).is_oid


def test_printing_shapes() -> None:
    status = g.GssxStatus(
        major_status=0xD0000,
        mech=KRB5,
        minor_status=2529639053,
        major_status_string=b"Unspecified GSS failure\0",
        minor_status_string=b"\xff\x00binary",
        server_ctx=b"",
        options=(g.GssxOption(b"localname\0", b"alice"),),
    )
    res = g.GssxResAcquireCred(status=status, output_cred_handle=None, options=())
    assert value_to_json(res) == {
        "status": {
            "major_status": 0xD0000,
            "mech": {"oid": "1.2.840.113554.1.2.2", "hex": "2a864886f712010202"},
            "minor_status": 2529639053,
            "major_status_string": "Unspecified GSS failure\0",
            "minor_status_string": {"hex": "ff0062696e617279"},
            "server_ctx": "",
            "options": [{"option": "localname\0", "value": "alice"}],
        },
        "output_cred_handle": None,
        "options": [],
    }
    elem = g.GssxCredElement(
        MN=default_of(g.GssxName),
        mech=b"",
        cred_usage=g.GssxCredUsage.GSSX_C_ACCEPT,
        initiator_time_rec=0,
        acceptor_time_rec=1 << 63,
        options=(),
    )
    shown = value_to_json(elem)
    assert shown["cred_usage"] == "GSSX_C_ACCEPT"
    assert shown["mech"] == ""  # GSS_C_NO_OID
    assert shown["acceptor_time_rec"] == 1 << 63
    handle = g.GssxHandleSecCtxInfo(default_of(g.GssxCtx))
    arg = g.GssxArgReleaseHandle(call_ctx=default_of(g.GssxCallCtx), cred_handle=handle)
    assert list(value_to_json(arg)["cred_handle"]) == ["GssxHandleSecCtxInfo"]
    assert value_to_json(None) is None


def test_json_output_is_valid_json_text() -> None:
    res = g.GssxResImportAndCanonName(
        status=default_of(g.GssxStatus),
        output_name=g.GssxName(b"alice@EXAMPLE.TEST", b"", b"\x04\x01\0\x0b", b"", (), ()),
        options=(g.GssxOption(b"localname\0", "ålice".encode()),),
    )
    text = json.dumps(value_to_json(res), ensure_ascii=False)
    assert "\\u0000" in text and "ålice" in text
    assert value_from_json(json.loads(text), g.GssxResImportAndCanonName) == res


def test_reading_shapes() -> None:
    arg = value_from_json(
        {
            "call_ctx": {"options": [{"option": {"cstr": "localname"}}]},
            "input_name": {"display_name": "alice", "name_type": {"oid": "1.2.840.113554.1.2.1.1"}},
            "mech": {"hex": "2a864886f712010202"},
        },
        g.GssxArgImportAndCanonName,
    )
    assert arg.call_ctx.options == (g.GssxOption(b"localname\0", b""),)
    assert arg.input_name.display_name == b"alice"
    assert arg.input_name.name_type == bytes.fromhex("2a864886f71201020101")
    assert arg.mech == KRB5
    acq = value_from_json(
        {
            "cred_usage": "gssx_c_both",
            "time_req": "0x10",
            "desired_mechs": [{"oid": "1.2.840.113554.1.2.2"}],
        },
        g.GssxArgAcquireCred,
    )
    assert acq.cred_usage is g.GssxCredUsage.GSSX_C_BOTH
    assert acq.time_req == 16
    assert acq.desired_mechs == (KRB5,)
    assert value_from_json({"cred_usage": 2}, g.GssxArgAcquireCred).cred_usage is (
        g.GssxCredUsage.GSSX_C_ACCEPT
    )
    both = value_from_json(
        {"mech": {"oid": "1.2.840.113554.1.2.2", "hex": KRB5.hex()}}, g.GssxStatus
    )
    assert both.mech == KRB5
    assert value_from_json({"mech": {"text": "x"}}, g.GssxStatus).mech == b"x"


def test_union_arms_by_class_or_field_name() -> None:
    by_class = value_from_json(
        {"cred_handle": {"GssxHandleCredInfo": {"cred_info": {"needs_release": True}}}},
        g.GssxArgReleaseHandle,
    )
    by_field = value_from_json(
        {"cred_handle": {"cred_info": {"needs_release": True}}}, g.GssxArgReleaseHandle
    )
    assert by_class == by_field
    assert isinstance(by_class.cred_handle, g.GssxHandleCredInfo)
    assert by_class.cred_handle.cred_info.needs_release is True
    ext = value_from_json(
        {"cred_handle": {"GssxHandleExtensions": {"handle_type": 0, "extensions": "x"}}},
        g.GssxArgReleaseHandle,
    )
    assert ext.cred_handle == g.GssxHandleExtensions(g.GssxHandleType.GSSX_C_HANDLE_SEC_CTX, b"x")


@pytest.mark.parametrize(
    ("data", "tp", "where", "what"),
    [
        ({"bogus": 1}, g.GssxArgIndicateMechs, "$", "no field 'bogus'"),
        ({"call_ctx": []}, g.GssxArgIndicateMechs, "$.call_ctx", "expected an object"),
        (
            {"call_ctx": {"options": [{"option": 5}]}},
            g.GssxArgIndicateMechs,
            "$.call_ctx.options[0].option",
            "expected a string",
        ),
        ({"mech": {"hex": "zz"}}, g.GssxStatus, "$.mech", "not hex"),
        ({"mech": {"oid": "1.99.3"}}, g.GssxStatus, "$.mech", "below 40"),
        ({"mech": {"oid": "x.y"}}, g.GssxStatus, "$.mech", "not a dotted OID"),
        (
            {"mech": {"oid": "1.2.840.113554.1.2.2", "hex": "00"}},
            g.GssxStatus,
            "$.mech",
            "disagree",
        ),
        ({"mech": {"hex": "00", "text": "a"}}, g.GssxStatus, "$.mech", "bytes are"),
        ({"major_status": True}, g.GssxStatus, "$.major_status", "expected an integer"),
        ({"major_status": "lots"}, g.GssxStatus, "$.major_status", "expected an integer"),
        ({"cred_usage": "sideways"}, g.GssxArgAcquireCred, "$.cred_usage", "GSSX_C_INITIATE"),
        ({"cred_usage": 9}, g.GssxArgAcquireCred, "$.cred_usage", "not a GssxCredUsage"),
        (
            {"add_cred_to_input_handle": 1},
            g.GssxArgAcquireCred,
            "$.add_cred_to_input_handle",
            "true or false",
        ),
        ({"desired_mechs": "x"}, g.GssxArgAcquireCred, "$.desired_mechs", "expected a list"),
        (
            {"cred_handle": {"a": {}, "b": {}}},
            g.GssxArgReleaseHandle,
            "$.cred_handle",
            "one of GssxHandleCredInfo",
        ),
        (
            {"cred_handle": {"nope": {}}},
            g.GssxArgReleaseHandle,
            "$.cred_handle",
            "'nope' is not an arm",
        ),
    ],
)
def test_reading_errors_say_where(data: Any, tp: type, where: str, what: str) -> None:
    with pytest.raises(JsonValueError) as ei:
        value_from_json(data, tp)
    assert ei.value.where == where
    assert what in str(ei.value)
    assert isinstance(ei.value, LocalError)


def test_rpc_msg_types_work_too() -> None:
    # The walk is generic: the RPC header's own types (with a field named
    # `stat_` and property discriminants) go through as well.
    msg = rpc_msg.RpcMsg(
        xid=5,
        body=rpc_msg.RpcMsgBodyRbody(
            rpc_msg.ReplyBodyRreply(rpc_msg.RejectedReplyStat(rpc_msg.AuthStat.AUTH_FAILED))
        ),
    )
    shown = value_to_json(msg)
    assert shown == {
        "xid": 5,
        "body": {
            "RpcMsgBodyRbody": {
                "rbody": {
                    "ReplyBodyRreply": {"rreply": {"RejectedReplyStat": {"stat_": "AUTH_FAILED"}}}
                }
            }
        },
    }
    assert value_from_json(shown, rpc_msg.RpcMsg) == msg


def test_malformed_oid_field_still_prints() -> None:
    st_ = value_to_json(g.GssxStatus(0, b"\x80\x01", 0, b"", b"", b"", ()))
    assert st_["mech"] == {"hex": "8001"}


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", ""),
        (b"abc", "abc"),
        (b"abc\0", "abc\0"),
        (b"a\0b", None),
        (b"abc\0\0", None),
        (b"\n", None),
        ("é".encode(), "é"),
        (b"\xff", None),
    ],
)
def test_printable_text(data: bytes, text: str | None) -> None:
    assert printable_text(data) == text


@given(st.binary(max_size=30))
def test_any_bytes_round_trip_through_json(data: bytes) -> None:
    status = g.GssxStatus(0, data, 0, data, b"", b"", ())
    assert value_from_json(json.loads(json.dumps(value_to_json(status))), g.GssxStatus) == status

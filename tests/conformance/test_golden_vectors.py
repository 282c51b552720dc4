"""Golden byte vectors (protocol-clients.md §5): the kernel's GSSX_ACCEPT_SEC_CONTEXT
call and a reply the kernel accepts, decoded with the generated stubs and re-encoded
byte for byte. The bytes are transcribed from the reference's hex dumps, not built
with our encoders."""

from __future__ import annotations

import struct

import pytest

from gssproxy_py.errors import XdrError
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.proto import rpc_msg as rm
from gssproxy_py.xdr import Decoder, decode_bytes, encode_bytes

# §5.2, record mark included; the token is the 13-byte placeholder.
KERNEL_ACCEPT_CALL = bytes.fromhex(
    "800000b8"
    "1a2b3c4d"
    "00000000"
    "00000002"
    "00061af0"
    "00000001"
    "00000009"
    "00000000"
    "00000000"
    "00000000"
    "00000000"
    "00000000"
    "00000000"
    "00000002"
    "00000016"
    "6578706f"
    "72746564"
    "5f636f6e"
    "74657874"
    "5f747970"
    "65000000"
    "0000000f"
    "6c696e75"
    "785f6c75"
    "6369645f"
    "76310000"
    "00000014"
    "6578706f"
    "72746564"
    "5f637265"
    "64735f74"
    "79706500"
    "0000000f"
    "6c696e75"
    "785f6372"
    "6564735f"
    "76310000"
    "00000000"
    "00000000"
    "0000000d"
    "600b0609"
    "2a864886"
    "f7120102"
    "02000000"
    "00000000"
    "00000000"
    "00000000"
)

KRB5_OID = bytes.fromhex("2a864886f712010202")
NT_PRINCIPAL = bytes.fromhex("2a864886f71201020201")


def _opaque(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)


def _kernel_reply() -> bytes:
    """§5.3 field by field, exactly as the reference lists it (x86 host order inside)."""
    lucid = struct.pack("<IIQI", 6, 0x65F00000, 0x12345678, 18) + bytes(range(32))
    assert len(lucid) == 52
    be = lambda fmt, *v: struct.pack(">" + fmt, *v)  # noqa: E731
    name = lambda disp: _opaque(disp) + _opaque(NT_PRINCIPAL) + be("IIII", 0, 0, 0, 0)  # noqa: E731
    out = be("IIIII", 0x1A2B3C4D, 1, 0, 0, 0) + be("I", 0)  # xid REPLY ACCEPTED verf(0,0) SUCCESS
    out += be("Q", 0) + _opaque(KRB5_OID) + be("Q", 0) + be("IIII", 0, 0, 0, 0)  # status
    out += be("I", 1) + _opaque(lucid) + be("II", 0, 0) + _opaque(KRB5_OID)
    out += name(b"alice@EXAMPLE.COM")
    out += name(b"nfs/server.example.com@EXAMPLE.COM")
    out += be("QQII", 0x8CA0, 0x1B2, 0, 1) + be("I", 0)
    out += be("I", 1) + _opaque(bytes.fromhex("6f0a3008a003020105a1030201"))
    out += be("I", 0) + be("I", 1) + _opaque(b"linux_creds_v1\0")
    out += _opaque(struct.pack("<IIII", 1000, 1000, 1, 10))
    return struct.pack(">I", 0x80000000 | len(out)) + out


def test_kernel_call_length_matches_the_reference() -> None:
    assert len(KERNEL_ACCEPT_CALL) == 4 + 184
    assert struct.unpack(">I", KERNEL_ACCEPT_CALL[:4])[0] == 0x80000000 | 184


def test_kernel_call_decodes_and_reencodes_byte_exact() -> None:
    body = KERNEL_ACCEPT_CALL[4:]
    d = Decoder(body)
    xid = d.uint32()
    msg = rm.decode_rpc_msg_body(d)
    assert isinstance(msg, rm.RpcMsgBodyCbody)
    cb = msg.cbody
    assert (xid, cb.rpcvers, cb.prog, cb.vers, cb.proc) == (0x1A2B3C4D, 2, 400112, 1, 9)
    assert cb.cred.flavor == rm.AUTH_NONE and cb.cred.body == b""
    header_len = d.get_position()
    arg = decode_bytes(gp.decode_gssx_arg_accept_sec_context, body[header_len:])
    opts = arg.call_ctx.options
    assert [(o.option, o.value) for o in opts] == [
        (b"exported_context_type\0", b"linux_lucid_v1\0"),
        (b"exported_creds_type\0", b"linux_creds_v1\0"),
    ]
    assert arg.context_handle is None and arg.cred_handle is None and arg.input_cb is None
    assert arg.input_token == bytes.fromhex("600b06092a864886f712010202")
    assert arg.ret_deleg_cred is False and arg.options == ()
    again = encode_bytes(rm.encode_rpc_msg, rm.RpcMsg(xid, msg)) + encode_bytes(
        gp.encode_gssx_arg_accept_sec_context, arg
    )
    assert again == body


def test_kernel_reply_decodes_and_reencodes_byte_exact() -> None:
    raw = _kernel_reply()
    assert len(raw) == 4 + 384  # the reference's total
    body = raw[4:]
    d = Decoder(body)
    xid = d.uint32()
    msg = rm.decode_rpc_msg_body(d)
    assert isinstance(msg, rm.RpcMsgBodyRbody) and isinstance(msg.rbody, rm.ReplyBodyAreply)
    assert isinstance(msg.rbody.areply.reply_data, rm.AcceptedReplyReplyDataResults)
    res = decode_bytes(gp.decode_gssx_res_accept_sec_context, body[d.get_position() :])
    assert res.status.major_status == 0 and res.status.mech == KRB5_OID
    ctx = res.context_handle
    assert ctx is not None and len(ctx.exported_context_token) == 52
    assert ctx.mech == KRB5_OID and ctx.src_name.display_name == b"alice@EXAMPLE.COM"
    assert ctx.open is True and ctx.locally_initiated is False
    assert res.delegated_cred_handle is None
    assert res.output_token is not None and len(res.output_token) == 13
    assert res.options[0].option == b"linux_creds_v1\0"
    assert struct.unpack("<IIII", res.options[0].value) == (1000, 1000, 1, 10)
    again = encode_bytes(rm.encode_rpc_msg, rm.RpcMsg(xid, msg)) + encode_bytes(
        gp.encode_gssx_res_accept_sec_context, res
    )
    assert again == body


def test_kernel_continue_init_quirk_is_garbage_not_a_crash() -> None:
    """§1.5: on CONTINUE_INIT the kernel sends gssx_ctx without its optional flag."""
    body = KERNEL_ACCEPT_CALL[4:]
    args = body[40:]
    call_ctx_len = 104
    handle = b"\x00" * 8  # the kernel's 8-byte context handle, in `state`
    empty_name = b"\0" * 24
    bare_ctx = (
        _opaque(b"")
        + _opaque(handle)
        + b"\0" * 4
        + _opaque(b"")
        + empty_name
        + empty_name
        + b"\0" * 16
        + b"\0" * 12
    )
    quirk = args[:call_ctx_len] + bare_ctx + args[call_ctx_len + 4 :]
    with pytest.raises(XdrError):
        decode_bytes(gp.decode_gssx_arg_accept_sec_context, quirk)

"""Codec cost per message: decode a kernel-style GSSX_ACCEPT_SEC_CONTEXT call with a
1 KiB token and encode a typical reply, in microseconds (best of several runs)."""

from __future__ import annotations

import os
import struct
import timeit

from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.xdr import decode_bytes, encode_bytes

KRB5 = bytes.fromhex("2a864886f712010202")


def _opaque(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)


def accept_call_args(token_len: int = 1024) -> bytes:
    call_ctx = (
        _opaque(b"")
        + _opaque(b"")
        + struct.pack(">I", 2)
        + _opaque(b"exported_context_type\0")
        + _opaque(b"linux_lucid_v1\0")
        + _opaque(b"exported_creds_type\0")
        + _opaque(b"linux_creds_v1\0")
    )
    token = os.urandom(token_len)
    return call_ctx + struct.pack(">II", 0, 0) + _opaque(token) + struct.pack(">III", 0, 0, 0)


def accept_reply() -> gp.GssxResAcceptSecContext:
    def name(s: bytes) -> gp.GssxName:
        return gp.GssxName(s, KRB5 + b"\x01", b"\x04\x01" + s, b"", (), ())

    ctx = gp.GssxCtx(
        exported_context_token=os.urandom(52),
        state=b"",
        needs_release=False,
        mech=KRB5,
        src_name=name(b"alice@EXAMPLE.TEST"),
        targ_name=name(b"nfs/localhost@EXAMPLE.TEST"),
        lifetime=36000,
        ctx_flags=0x1B2,
        locally_initiated=False,
        open=True,
        options=(),
    )
    status = gp.GssxStatus(0, KRB5, 0, b"", b"", b"", ())
    creds = gp.GssxOption(b"linux_creds_v1\0", struct.pack("<IIII", 1000, 1000, 1, 10))
    return gp.GssxResAcceptSecContext(status, ctx, os.urandom(156), None, (creds,))


def measure(repeat: int = 5, number: int = 2000) -> dict[str, float]:
    args = accept_call_args()
    reply = accept_reply()

    def dec() -> object:
        return decode_bytes(gp.decode_gssx_arg_accept_sec_context, args)

    def enc() -> bytes:
        return encode_bytes(gp.encode_gssx_res_accept_sec_context, reply)

    def both() -> object:
        return dec(), enc()

    out: dict[str, float] = {}
    for label, fn in (
        ("decode_call_us", dec),
        ("encode_reply_us", enc),
        ("decode_plus_encode_us", both),
    ):
        runs = timeit.repeat(fn, repeat=repeat, number=number)
        out[label] = min(runs) / number * 1e6
    return out


if __name__ == "__main__":
    for k, v in measure().items():
        print(f"{k:24s} {v:8.1f}")

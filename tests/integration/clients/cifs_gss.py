"""What cifs.upcall does with GSSAPI, in ctypes: one JSON line with the outcome.

    cifs_gss.py [TARGET]        (default cifs@localhost)

cifs.upcall (cifs-utils >= 7.0, `cifs_gss_get_req`) imports `cifs@HOST` as a
host-based service name, calls gss_init_sec_context with no credential, the
krb5 mech, req_flags 0, no channel bindings and no input token, and expects
a complete context at once; it then takes the session key with
gss_krb5_export_lucid_sec_context(version 1). python-gssapi cannot ask for
req_flags 0 (it substitutes its defaults), hence ctypes.

Prints {"ok": true, "token_len", "complete", "lucid_version", "initiate",
"protocol"} or {"ok": false, "step", "major", "minor", "error"}; exits 0
either way (the caller decides what it expected).
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

GSS = ctypes.CDLL("libgssapi_krb5.so.2")
U32 = ctypes.c_uint32
GSS_S_CONTINUE_NEEDED = 1
for _fn in (
    "gss_import_name",
    "gss_init_sec_context",
    "gss_krb5_export_lucid_sec_context",
    "gss_krb5_free_lucid_sec_context",
    "gss_display_status",
    "gss_release_buffer",
):
    getattr(GSS, _fn).restype = U32


class Buffer(ctypes.Structure):
    _fields_ = [("length", ctypes.c_size_t), ("value", ctypes.c_void_p)]


class Oid(ctypes.Structure):
    _fields_ = [("length", U32), ("elements", ctypes.c_void_p)]


class LucidV1Head(ctypes.Structure):
    """The leading fields of gss_krb5_lucid_context_v1_t."""

    _fields_ = [
        ("version", U32),
        ("initiate", U32),
        ("endtime", U32),
        ("send_seq", ctypes.c_uint64),
        ("recv_seq", ctypes.c_uint64),
        ("protocol", U32),
    ]


def status_text(code: int, kind: int) -> str:
    """gss_display_status for one code (kind 1 = GSS, 2 = mech), joined."""
    texts = []
    ctx = U32(0)
    minor = U32(0)
    while True:
        buf = Buffer()
        GSS.gss_display_status(
            ctypes.byref(minor),
            U32(code),
            ctypes.c_int(kind),
            None,
            ctypes.byref(ctx),
            ctypes.byref(buf),
        )
        if buf.value:
            texts.append(ctypes.string_at(buf.value, buf.length).decode("utf-8", "replace"))
            GSS.gss_release_buffer(ctypes.byref(minor), ctypes.byref(buf))
        if ctx.value == 0:
            return "; ".join(texts)


def failure(step: str, major: int, minor: int) -> dict[str, Any]:
    return {
        "ok": False,
        "step": step,
        "major": major,
        "minor": minor,
        "error": f"{status_text(major, 1)}: {status_text(minor, 2)}",
    }


def run(target: str) -> dict[str, Any]:
    minor = U32(0)
    raw = target.encode()
    name_buf = Buffer(len(raw), ctypes.cast(ctypes.c_char_p(raw), ctypes.c_void_p))
    name = ctypes.c_void_p()
    nt = ctypes.c_void_p.in_dll(GSS, "GSS_C_NT_HOSTBASED_SERVICE")
    major = GSS.gss_import_name(ctypes.byref(minor), ctypes.byref(name_buf), nt, ctypes.byref(name))
    if major:
        return failure("import_name", major, minor.value)
    krb5 = ctypes.c_void_p.in_dll(GSS, "gss_mech_krb5")
    ctx = ctypes.c_void_p()
    out = Buffer()
    ret_flags = U32(0)
    major = GSS.gss_init_sec_context(
        ctypes.byref(minor),
        None,
        ctypes.byref(ctx),
        name,
        krb5,
        U32(0),
        U32(0),
        None,
        None,
        None,
        ctypes.byref(out),
        ctypes.byref(ret_flags),
        None,
    )
    if major not in (0, GSS_S_CONTINUE_NEEDED):
        return failure("init_sec_context", major, minor.value)
    complete = major == 0
    token_len = out.length
    GSS.gss_release_buffer(ctypes.byref(minor), ctypes.byref(out))
    lucid = ctypes.c_void_p()
    major = GSS.gss_krb5_export_lucid_sec_context(
        ctypes.byref(minor), ctypes.byref(ctx), U32(1), ctypes.byref(lucid)
    )
    if major:
        return failure("export_lucid_sec_context", major, minor.value)
    head = LucidV1Head.from_address(lucid.value)
    reply = {
        "ok": True,
        "token_len": token_len,
        "complete": complete,
        "lucid_version": head.version,
        "initiate": head.initiate,
        "protocol": head.protocol,
    }
    GSS.gss_krb5_free_lucid_sec_context(ctypes.byref(minor), lucid)
    return reply


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "cifs@localhost")))

"""A stand-in for the Linux kernel's GSS-Proxy client (nfsd's RPCSEC_GSS upcall).

This is an independent implementation for tests: every byte is written and
read here with `struct`, following the kernel's net/sunrpc/auth_gss sources
(torvalds/linux gss_rpc_xdr.c, gss_rpc_upcall.c, gss_krb5_mech.c) step by
step, and it does not use gssproxy_py's XDR code. Each step names the kernel
function it follows. The reply is decoded with the kernel's limits, and
anything the kernel would refuse raises `KernelRejectError`.

Two deliberate departures, both stricter than the kernel:
* `dummy_dec_opt_array` and `dummy_dec_nameattr_array` ignore decode errors
  inside an element; here they raise (a short buffer is caught a few words
  later by the kernel anyway).
* after the whole result has been decoded, bytes left in the record raise
  (the kernel would just not look at them).
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

__all__ = [
    "ACCEPT_SEC_CONTEXT",
    "GARBAGE_ARGS",
    "KRB5_OID",
    "PROC_UNAVAIL",
    "AcceptResult",
    "KernelConnection",
    "KernelCtx",
    "KernelRejectError",
    "Lucid",
    "RpcAcceptError",
    "decode_accept_result",
    "decode_reply_header",
    "encode_accept_call",
    "encode_null_call",
    "nfsd_checks_complete",
    "parse_lucid",
]

PROGRAM = 400112  # GSSPROXY_PROGRAM
VERSION = 1  # GSSPROXY_VERS_1
NULL_PROC = 0
ACCEPT_SEC_CONTEXT = 9  # GSSX_ACCEPT_SEC_CONTEXT
LAST_FRAGMENT = 0x80000000

# RPC constants (RFC 5531)
CALL, REPLY = 0, 1
MSG_ACCEPTED = 0
AUTH_NULL = 0
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR = range(6)

# gss_rpc_xdr.h: the option names and values, sent with sizeof() so the NUL counts.
LUCID_OPTION = b"exported_context_type\0"
LUCID_VALUE = b"linux_lucid_v1\0"
CREDS_OPTION = b"exported_creds_type\0"
CREDS_VALUE = b"linux_creds_v1\0"

# gss_rpc_xdr.h / gss_rpc_upcall.c / sunrpc gss_api.h limits on the reply.
GSSX_max_output_handle_sz = 128
GSS_OID_MAX_LEN = 32
GSSX_max_princ_sz = 256
GSSX_max_output_token_sz = 1024
NGROUPS_MAX = 65536

KRB5_OID = bytes.fromhex("2a864886f712010202")  # 1.2.840.113554.1.2.2
INVALID_ID = 0xFFFFFFFF

# gss_krb5_mech.c: enctypes a 6.x kernel may import and their key lengths.
KERNEL_ENCTYPE_KEYLEN = {17: 16, 18: 32, 19: 16, 20: 32, 25: 16, 26: 32}
KRB5_CTX_FLAG_INITIATOR = 0x1
KRB5_CTX_FLAG_CFX = 0x2
KRB5_CTX_FLAG_ACCEPTOR_SUBKEY = 0x4


class KernelRejectError(Exception):
    """The kernel would fail the upcall (or nfsd would drop the context) here."""


class RpcAcceptError(KernelRejectError):
    """MSG_ACCEPTED with an accept_stat other than SUCCESS."""

    def __init__(self, xid: int, accept_stat: int) -> None:
        super().__init__(f"xid 0x{xid:08x}: accept_stat {accept_stat}")
        self.xid = xid
        self.accept_stat = accept_stat


# ---------------------------------------------------------------------------
# Encoding (gssx_enc_*)


def _u32(v: int) -> bytes:
    return struct.pack(">I", v)


def _hyper(v: int) -> bytes:  # xdr_encode_hyper
    return struct.pack(">Q", v)


def _bool(v: bool) -> bytes:  # gssx_enc_bool: xdr_one / xdr_zero
    return _u32(1 if v else 0)


def _buffer(data: bytes) -> bytes:
    """gssx_enc_buffer -> xdr_encode_opaque: length, bytes, zero pad to 4."""
    return _u32(len(data)) + data + b"\0" * (-len(data) % 4)


def _enc_call_ctx() -> bytes:
    """gssx_enc_call_ctx: empty locale and server_ctx, then always the same 2 options."""
    out = _buffer(b"")  # ctx->locale (len 0 in gssp_accept_sec_context_upcall)
    out += _buffer(b"")  # ctx->server_ctx
    out += _u32(2)  # ctx->options: the count is written as a bare 2
    out += _buffer(LUCID_OPTION) + _buffer(LUCID_VALUE)  # gssx_enc_option (lucid)
    out += _buffer(CREDS_OPTION) + _buffer(CREDS_VALUE)  # gssx_enc_option (creds)
    return out


def _enc_empty_name() -> bytes:
    """gssx_enc_name of a zeroed gssx_name: display_name, then 3 zero_netobj,
    dummy_enc_nameattr_array (count 0), dummy_enc_opt_array (count 0)."""
    return _buffer(b"") + _buffer(b"") + _buffer(b"") + _buffer(b"") + _u32(0) + _u32(0)


def _enc_ctx_quirk(handle: bytes) -> bytes:
    """gssx_enc_ctx for CONTINUE_INIT: the handle in .state, everything else zero.

    gssx_enc_accept_sec_context calls it with no leading TRUE discriminant.
    """
    out = _buffer(b"")  # ctx->exported_context_token
    out += _buffer(handle)  # ctx->state = data->in_handle
    out += _bool(False)  # ctx->need_release
    out += _buffer(b"")  # ctx->mech
    out += _enc_empty_name()  # ctx->src_name
    out += _enc_empty_name()  # ctx->targ_name
    out += _hyper(0) + _hyper(0)  # ctx->lifetime, ctx->ctx_flags (one 16-byte reserve)
    out += _bool(False) + _bool(False)  # ctx->locally_initiated, ctx->open
    out += _u32(0)  # ctx->options: dummy_enc_opt_array
    return out


def _rpc_call_header(xid: int, proc: int) -> bytes:
    """rpc_encode_header with the gssp client's AUTH_NULL cred and verifier."""
    return struct.pack(">10I", xid, CALL, 2, PROGRAM, VERSION, proc, AUTH_NULL, 0, AUTH_NULL, 0)


def _record(body: bytes) -> bytes:
    """xs_encode_stream_record_marker: a single last fragment."""
    return _u32(LAST_FRAGMENT | len(body)) + body


def encode_null_call(xid: int) -> bytes:
    """rpc_ping_noreply's NULL call (rpcproc_null_noreply): 4 + 40 bytes."""
    return _record(_rpc_call_header(xid, NULL_PROC))


def encode_accept_call(xid: int, token: bytes, *, continue_handle: bytes | None = None) -> bytes:
    """gssx_enc_accept_sec_context, record-marked.

    `continue_handle` non-None reproduces CONTINUE_INIT (the client's
    RPCSEC_GSS handle is not empty): the bare gssx_ctx quirk.
    """
    args = _enc_call_ctx()  # arg->call_ctx
    if continue_handle is not None:  # arg->context_handle
        args += _enc_ctx_quirk(continue_handle)
    else:
        args += _bool(False)
    args += _bool(False)  # arg->cred_handle: the kernel never sends one
    # gssx_enc_in_token: length word, then xdr_write_pages (zero padded)
    args += _u32(len(token)) + token + b"\0" * (-len(token) % 4)
    args += _bool(False)  # arg->input_cb
    args += _bool(False)  # arg->ret_deleg_cred
    args += _u32(0)  # arg->options: dummy_enc_opt_array
    return _record(_rpc_call_header(xid, ACCEPT_SEC_CONTEXT) + args)


# ---------------------------------------------------------------------------
# Decoding (gssx_dec_*)


class _Stream:
    """xdr_inline_decode over one reply body: consumes whole XDR words."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def inline_decode(self, nbytes: int) -> bytes:
        padded = nbytes + (-nbytes % 4)
        if self.pos + padded > len(self.data):
            raise KernelRejectError(
                f"-ENOSPC: {nbytes} bytes wanted at {self.pos}, {len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : self.pos + nbytes]
        self.pos += padded
        return out

    def u32(self) -> int:
        return int.from_bytes(self.inline_decode(4), "big")

    def hyper(self) -> int:  # xdr_decode_hyper
        return int.from_bytes(self.inline_decode(8), "big")

    def remaining(self) -> int:
        return len(self.data) - self.pos


def _dec_bool(s: _Stream) -> int:
    """gssx_dec_bool: any u32 (the kernel does not insist on 0 or 1)."""
    return s.u32()


def _dec_buffer(s: _Stream, limit: int, what: str) -> bytes | None:
    """gssx_dec_buffer: limit 0 means "not interested" (skipped, any size);
    otherwise a longer buffer is -ENOSPC."""
    length = s.u32()
    data = s.inline_decode(length)
    if limit == 0:
        return None
    if length > limit:
        raise KernelRejectError(f"-ENOSPC: {what} of {length} bytes exceeds {limit}")
    return data


def _dummy_dec_opt_array(s: _Stream) -> int:
    """dummy_dec_opt_array: count, then each gssx_dec_option thrown away."""
    count = s.u32()
    for _ in range(count):
        _dec_buffer(s, 0, "option")  # opt->option
        _dec_buffer(s, 0, "option value")  # opt->value
    return count


def _dec_status(s: _Stream) -> tuple[int, int]:
    """gssx_dec_status; the caller passes zeroed buffers, so all are skipped."""
    major = s.hyper()  # status->major_status
    _dec_buffer(s, 0, "status.mech")  # status->mech
    minor = s.hyper()  # status->minor_status
    _dec_buffer(s, 0, "major_status_string")
    _dec_buffer(s, 0, "minor_status_string")
    _dec_buffer(s, 0, "server_ctx")
    _dummy_dec_opt_array(s)  # status->options
    return major, minor


def _dec_name(s: _Stream, display_limit: int, what: str) -> bytes | None:
    """gssx_dec_name: only display_name is kept (with the caller's limit)."""
    display = _dec_buffer(s, display_limit, f"{what}.display_name")
    _dec_buffer(s, 0, "name_type")
    _dec_buffer(s, 0, "exported_name")
    _dec_buffer(s, 0, "exported_composite_name")
    count = s.u32()  # dummy_dec_nameattr_array
    for _ in range(count):  # gssx_dec_name_attr
        _dec_buffer(s, 0, "attr")
        _dec_buffer(s, 0, "value")
        _dummy_dec_opt_array(s)  # attr->extensions
    _dummy_dec_opt_array(s)  # name->extensions
    return display


@dataclass
class KernelCtx:
    """What gssx_dec_ctx fills into rctxh (gssp_accept_sec_context_upcall)."""

    exported_context_token: bytes
    need_release: int
    mech: bytes
    src_name: bytes
    targ_name: bytes
    lifetime: int
    ctx_flags: int
    locally_initiated: int
    open: int


def _dec_ctx(s: _Stream) -> KernelCtx:
    """gssx_dec_ctx with rctxh's limits: exported_context_token <= 128,
    mech <= GSS_OID_MAX_LEN, src_name and (recent kernels) targ_name
    display_name <= GSSX_max_princ_sz."""
    token = _dec_buffer(s, GSSX_max_output_handle_sz, "exported_context_token")
    _dec_buffer(s, 0, "state")  # ctx->state
    need_release = _dec_bool(s)
    mech = _dec_buffer(s, GSS_OID_MAX_LEN, "ctx.mech")
    src = _dec_name(s, GSSX_max_princ_sz, "src_name")
    targ = _dec_name(s, GSSX_max_princ_sz, "targ_name")
    lifetime = s.hyper()  # one 16-byte inline_decode in the kernel
    ctx_flags = s.hyper()
    locally_initiated = _dec_bool(s)
    is_open = _dec_bool(s)
    _dummy_dec_opt_array(s)  # ctx->options
    assert token is not None and mech is not None and src is not None and targ is not None
    return KernelCtx(
        token, need_release, mech, src, targ, lifetime, ctx_flags, locally_initiated, is_open
    )


def _dec_linux_creds(s: _Stream) -> tuple[int, int, tuple[int, ...]]:
    """gssx_dec_linux_creds: BE length, then host-endian uid, gid, N, gid[N];
    length must be exactly (3 + N) * 4 and no group may be -1."""
    length = s.u32()
    if length > (3 + NGROUPS_MAX) * 4:
        raise KernelRejectError(f"-ENOSPC: linux_creds length {length}")

    def host_u32() -> int:  # get_host_u32: "all host-endian"
        (v,) = struct.unpack("=I", s.inline_decode(4))
        return int(v)

    uid = host_u32()
    gid = host_u32()
    n = host_u32()
    if (3 + n) * 4 != length:
        raise KernelRejectError(f"-EINVAL: linux_creds length {length} != (3 + {n}) * 4")
    groups = []
    for _ in range(n):
        g = host_u32()
        if g == INVALID_ID:  # make_kgid + gid_valid
            raise KernelRejectError("-EINVAL: invalid gid in linux_creds group list")
        groups.append(g)
    return uid, gid, tuple(groups)


@dataclass
class AcceptResult:
    """gssx_res_accept_sec_context as the kernel sees it."""

    major: int
    minor: int
    context: KernelCtx | None
    output_token: bytes | None
    options_count: int
    creds: tuple[int, int, tuple[int, ...]] | None
    option_names: list[bytes] = field(default_factory=list)


def _dec_option_array(
    s: _Stream,
) -> tuple[int, tuple[int, int, tuple[int, ...]] | None, list[bytes]]:
    """gssx_dec_option_array: the value of an option named exactly
    "linux_creds_v1\\0" is parsed as creds, any other value is skipped."""
    count = s.u32()
    creds = None
    names: list[bytes] = []
    for _ in range(count):
        length = s.u32()  # option buffer, read inline
        name = s.inline_decode(length)
        names.append(name)
        if length == len(CREDS_VALUE) and name == CREDS_VALUE:
            creds = _dec_linux_creds(s)
        else:
            _dec_buffer(s, 0, "option value")  # consume uninteresting buffer
    return count, creds, names


def decode_accept_result(body: bytes) -> AcceptResult:
    """gssx_dec_accept_sec_context over the bytes after accept_stat."""
    s = _Stream(body)
    major, minor = _dec_status(s)  # res->status
    ctx = _dec_ctx(s) if _dec_bool(s) else None  # res->context_handle
    out_token = None
    if _dec_bool(s):  # res->output_token, into data->out_token (1024)
        out_token = _dec_buffer(s, GSSX_max_output_token_sz, "output_token")
    if _dec_bool(s):  # res->delegated_cred_handle
        raise KernelRejectError("-EINVAL: delegated_cred_handle present")
    count, creds, names = _dec_option_array(s)  # res->options
    if s.remaining():
        raise KernelRejectError(f"{s.remaining()} bytes after the result")
    return AcceptResult(major, minor, ctx, out_token, count, creds, names)


def decode_reply_header(msg: bytes) -> tuple[int, bytes]:
    """rpc_decode_header + nul_validate: (xid, the bytes after accept_stat).

    Raises RpcAcceptError for an accept_stat other than SUCCESS.
    """
    s = _Stream(msg)
    xid = s.u32()
    if s.u32() != REPLY:
        raise KernelRejectError("not a REPLY")
    if (stat := s.u32()) != MSG_ACCEPTED:
        raise KernelRejectError(f"reply_stat {stat} (MSG_DENIED)")
    flavor = s.u32()  # nul_validate: AUTH_NULL with an empty body
    verf_len = s.u32()
    if flavor != AUTH_NULL or verf_len != 0:
        raise KernelRejectError(f"reply verifier flavor {flavor} length {verf_len}")
    accept_stat = s.u32()
    if accept_stat != SUCCESS:
        raise RpcAcceptError(xid, accept_stat)
    return xid, msg[s.pos :]


# ---------------------------------------------------------------------------
# What happens after the decode (gss_rpc_upcall.c, svcauth_gss.c, gss_krb5_mech.c)


@dataclass
class Lucid:
    flags: int
    endtime: int
    seq_send: int
    enctype: int
    key: bytes


def parse_lucid(blob: bytes) -> Lucid:
    """gss_import_v2_context (6.x): flags, endtime, seq_send64 (must fit an
    atomic_t), enctype (a supported one), exactly keylength key bytes, p == end."""
    if len(blob) < 20:
        raise KernelRejectError(f"-EFAULT: lucid blob of {len(blob)} bytes")
    flags, endtime, seq_send, enctype = struct.unpack_from("=IIQI", blob)
    if seq_send >= 2**31:  # atomic_set / atomic_read round trip
        raise KernelRejectError(f"-EINVAL: seq_send {seq_send}")
    keylen = KERNEL_ENCTYPE_KEYLEN.get(enctype)
    if keylen is None:
        raise KernelRejectError(f"-EINVAL: enctype {enctype}")
    key = blob[20:]
    if len(key) != keylen:
        raise KernelRejectError(f"-EFAULT: {len(key)} key bytes for enctype {enctype}")
    return Lucid(flags, endtime, seq_send, enctype, key)


def nfsd_checks_complete(res: AcceptResult) -> Lucid:
    """What gssp_accept_sec_context_upcall and gss_proxy_save_rsc need for
    GSS_S_COMPLETE: a context with the krb5 mech (gss_mech_get_by_OID), an
    importable lucid blob, and the linux_creds_v1 option (found_creds)."""
    if res.major != 0:
        raise KernelRejectError(f"major status 0x{res.major:x}")
    if res.context is None:
        raise KernelRejectError("no context_handle")
    if res.context.mech != KRB5_OID:
        raise KernelRejectError(f"-EOPNOTSUPP: mech {res.context.mech.hex()}")
    if res.creds is None:
        raise KernelRejectError("no linux_creds_v1 option (found_creds = 0)")
    if res.output_token is None:
        raise KernelRejectError("no output_token (the kernel would send 1024 bytes from NULL)")
    return parse_lucid(res.context.exported_context_token)


# ---------------------------------------------------------------------------
# Transport


class KernelConnection:
    """One AF_UNIX stream connection, as the gssp rpc_clnt has it."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(os.fspath(path))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KernelConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError(f"closed after {len(out)} of {n} bytes")
            out += chunk
        return out

    def recv_record(self) -> bytes:
        """One record; several fragments are joined (the kernel's receive path does)."""
        out = b""
        while True:
            (mark,) = struct.unpack(">I", self._exact(4))
            out += self._exact(mark & ~LAST_FRAGMENT)
            if mark & LAST_FRAGMENT:
                return out

    def accept(self, xid: int, token: bytes) -> AcceptResult:
        """One ACCEPT_SEC_CONTEXT upcall, waiting for its reply."""
        self.send(encode_accept_call(xid, token))
        got_xid, body = decode_reply_header(self.recv_record())
        if got_xid != xid:
            raise KernelRejectError(f"reply xid 0x{got_xid:08x} for call 0x{xid:08x}")
        return decode_accept_result(body)

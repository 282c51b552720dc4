"""The client's side of ONC RPC v2 over a stream, without any I/O.

Both the blocking and the asyncio client use these pieces, so the bytes they
send and the checks they apply to replies are the same by construction:

* `XidSource`: a random first xid, then +1, kept in 1..2**31-1 like the
  interposer (gpm_common.c treats xids as a signed int and skips 0);
* `build_call`: the call header (RPC version 2, AUTH_NONE cred and verifier)
  followed by the encoded argument, and `frame` for the record mark;
* `RecordAssembler`: bytes in, complete reply records out, across any number
  of fragments, with the size limit checked before buffering;
* `parse_reply`: header checks in the order the interposer applies them (xid,
  REPLY, MSG_ACCEPTED, SUCCESS), each refusal raised as its typed exception,
  then the result decoded with the program table.

The client keeps its own small framing: it was written while `rpc/records`
did not exist yet, and it raises the client's error types (an oversized reply
is a `ReplyTooLargeError`, one of the `RpcClientError`s a caller catches).
`rpc/records.RecordReader` follows the same rules (multi-fragment records,
limit checked at each header), so the two could be merged behind an error
translation if keeping both ever costs more than these few lines.
"""

from __future__ import annotations

import os
import secrets
import struct
from dataclasses import dataclass
from typing import Any, Final

from gssproxy_py.client.errors import (
    AuthError,
    GarbageArgs,
    ProcedureUnavailable,
    ProgramMismatch,
    ProgramUnavailable,
    RemoteSystemError,
    ReplyTooLargeError,
    RequestTooLargeError,
    RpcMismatch,
    RpcProtocolError,
    RpcRejected,
    XidMismatchError,
)
from gssproxy_py.client.values import type_name
from gssproxy_py.errors import XdrEncodeError, XdrError
from gssproxy_py.proto.rpc_msg import (
    RPC_VERSION,
    AcceptedReplyReplyDataDefault,
    AcceptedReplyReplyDataMismatchInfo,
    AcceptedReplyReplyDataResults,
    AcceptStat,
    AuthFlavor,
    CallBody,
    OpaqueAuth,
    RejectedReplyMismatchInfo,
    RejectedReplyStat,
    ReplyBodyAreply,
    ReplyBodyRreply,
    RpcMsg,
    RpcMsgBodyCbody,
    RpcMsgBodyRbody,
    decode_rpc_msg,
    encode_rpc_msg,
)
from gssproxy_py.xdr import Decoder, Procedure, Program, Version, decode_bytes, encode_bytes

#: gssproxy's MAX_RPC_SIZE: the daemon drops larger calls, the interposer larger replies.
MAX_RECORD_SIZE: Final = 1 << 20
#: The interposer's RESPONSE_TIMEOUT, in seconds.
DEFAULT_TIMEOUT: Final = 15.0
#: The socket the interposer dials when GSSPROXY_SOCKET is unset (GP_SOCKET_NAME).
DEFAULT_SOCKET_PATH: Final = "/var/lib/gssproxy/default.sock"
SOCKET_ENV: Final = "GSSPROXY_SOCKET"

LAST_FRAGMENT: Final = 0x80000000
_FRAGMENT_LEN_MASK: Final = 0x7FFFFFFF
_MARK = struct.Struct(">I")
_XID_MAX: Final = 0x7FFFFFFF
_AUTH_NONE = OpaqueAuth(flavor=AuthFlavor.AUTH_NONE, body=b"")


def default_socket_path() -> str:
    """`$GSSPROXY_SOCKET` if set and non-empty, else the compiled-in default.

    The interposer reads the variable with secure_getenv, so setuid programs
    ignore it; a Python process has no such distinction, and this takes it as is.
    """
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET_PATH


class XidSource:
    """Transaction ids: a random start, then +1 per call, never 0."""

    def __init__(self, start: int | None = None) -> None:
        # secrets rather than random: a predictable xid would let another
        # local process that can write to our connection forge replies more easily.
        first = secrets.randbelow(_XID_MAX) + 1 if start is None else start
        if not 1 <= first <= _XID_MAX:
            raise ValueError(f"xid start {first} is outside 1..{_XID_MAX}")
        self._next = first

    def next(self) -> int:
        xid = self._next
        self._next = 1 if xid >= _XID_MAX else xid + 1
        return xid


def resolve_procedure(version: Version, key: int | str) -> Procedure:
    """Find a procedure by number or by name, case-insensitively.

    A name may omit the prefix all the version's procedure names share
    (`indicate_mechs` for `GSSX_INDICATE_MECHS`); a decimal string is a number.
    """
    procs = version.procedures
    if isinstance(key, int):
        if key in procs:
            return procs[key]
        raise KeyError(f"{version.name} has no procedure {key}")
    text = key.strip()
    if text.isdigit():
        return resolve_procedure(version, int(text))
    want = text.upper().replace("-", "_")
    prefix = _common_prefix([p.name for n, p in procs.items() if n != 0])
    for proc in procs.values():
        if proc.name.upper() in (want, prefix + want):
            return proc
    names = ", ".join(p.name for p in procs.values())
    raise KeyError(f"{version.name} has no procedure named {key!r} (known: {names})")


def _common_prefix(names: list[str]) -> str:
    """The longest shared prefix ending in `_`, e.g. `GSSX_`; "" if none."""
    if len(names) < 2:
        return ""
    upper = [n.upper() for n in names]
    first = upper[0]
    size = 0
    while size < len(first) and all(len(n) > size and n[size] == first[size] for n in upper):
        size += 1
    cut = first.rfind("_", 0, size)
    return first[: cut + 1] if cut >= 0 else ""


def lookup_version(program: Program, version: int) -> Version:
    try:
        return program.versions[version]
    except KeyError:
        raise ValueError(f"program {program.name} has no version {version}") from None


def build_call(
    xid: int,
    program: Program,
    version: int,
    proc: Procedure,
    arg: Any,
    *,
    max_size: int = MAX_RECORD_SIZE,
) -> bytes:
    """The call message body (no record mark): header, then the argument.

    Raises RequestTooLargeError if the message exceeds max_size, like the
    interposer, because the daemon would silently drop the connection instead.
    """
    header = RpcMsg(
        xid=xid,
        body=RpcMsgBodyCbody(
            CallBody(
                rpcvers=RPC_VERSION,
                prog=program.number,
                vers=version,
                proc=proc.number,
                cred=_AUTH_NONE,
                verf=_AUTH_NONE,
            )
        ),
    )
    if proc.arg_type is None:
        if arg is not None:
            raise TypeError(f"{proc.name} takes no argument, got {type(arg).__name__}")
    elif not isinstance(arg, proc.arg_type):
        raise TypeError(f"{proc.name} takes {type_name(proc.arg_type)}, got {type(arg).__name__}")
    try:
        body = encode_bytes(encode_rpc_msg, header) + encode_bytes(proc.encode_arg, arg)
    except XdrEncodeError as e:
        raise XdrEncodeError(f"cannot encode the argument of {proc.name}: {e}") from e
    if len(body) > max_size:
        raise RequestTooLargeError(
            f"{proc.name} call of {len(body)} bytes exceeds the limit of {max_size} bytes"
        )
    return body


def frame(body: bytes) -> bytes:
    """`body` as one record of one (last) fragment."""
    if len(body) > _FRAGMENT_LEN_MASK:
        raise RequestTooLargeError(f"a record of {len(body)} bytes cannot be framed")
    return _MARK.pack(LAST_FRAGMENT | len(body)) + body


class RecordAssembler:
    """Turns a byte stream into complete records (RFC 5531 §11).

    The size limit applies to the whole record and is checked as each fragment
    header arrives, so an oversized reply is refused before it is buffered.
    """

    def __init__(self, max_size: int = MAX_RECORD_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._record_len = 0

    @property
    def idle(self) -> bool:
        """True between records: nothing of a next record has arrived yet."""
        return not self._buf and not self._fragments

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes; return every record they complete, in order."""
        self._buf += data
        records: list[bytes] = []
        while len(self._buf) >= 4:
            (mark,) = _MARK.unpack_from(self._buf)
            length = mark & _FRAGMENT_LEN_MASK
            total = self._record_len + length
            if total > self.max_size:
                raise ReplyTooLargeError(total, self.max_size)
            if len(self._buf) < 4 + length:
                break
            self._fragments.append(bytes(self._buf[4 : 4 + length]))
            self._record_len = total
            del self._buf[: 4 + length]
            if mark & LAST_FRAGMENT:
                records.append(b"".join(self._fragments))
                self._fragments.clear()
                self._record_len = 0
        return records


def reply_xid(record: bytes) -> int:
    """The xid of a reply record, read before anything else is decoded."""
    if len(record) < 4:
        raise RpcProtocolError(f"reply of {len(record)} bytes is too short to hold an xid")
    xid: int = _MARK.unpack_from(record)[0]
    return xid


@dataclass(frozen=True, slots=True)
class _Header:
    msg: RpcMsg
    results: bytes


def _decode_header(dec: Decoder) -> _Header:
    msg = decode_rpc_msg(dec)
    # The results follow the header with no length of their own (rpc_msg.x's
    # `opaque results[0]` marks where they start), so take the rest as is.
    pos = dec.get_position()
    data: bytes = dec.get_buffer()
    dec.set_position(len(data))
    return _Header(msg, data[pos:])


def parse_reply(
    record: bytes,
    *,
    xid: int,
    program: Program,
    version: int,
    proc: Procedure,
) -> Any:
    """Check a reply record against our call and decode its result.

    Raises XidMismatchError, RpcProtocolError (malformed header, a CALL instead of a
    REPLY, an undecodable result) or the RpcRejected subclass for the refusal.
    """
    got = reply_xid(record)
    if got != xid:
        raise XidMismatchError(got, xid)
    try:
        header = decode_bytes(_decode_header, record)
    except XdrError as e:
        raise RpcProtocolError(f"malformed reply header for {proc.name}: {e}") from e
    body = header.msg.body
    if not isinstance(body, RpcMsgBodyRbody):
        raise RpcProtocolError(f"expected a REPLY to xid 0x{xid:08x}, got a CALL")
    rbody = body.rbody
    if isinstance(rbody, ReplyBodyRreply):
        raise _denied(rbody)
    assert isinstance(rbody, ReplyBodyAreply)
    data = rbody.areply.reply_data
    if not isinstance(data, AcceptedReplyReplyDataResults):
        raise _refused(data, program, version, proc)
    try:
        return decode_bytes(proc.decode_res, header.results)
    except XdrError as e:
        raise RpcProtocolError(f"malformed {proc.name} result: {e}") from e


def _denied(rbody: ReplyBodyRreply) -> RpcRejected:
    rej = rbody.rreply
    if isinstance(rej, RejectedReplyMismatchInfo):
        return RpcMismatch(rej.mismatch_info.low, rej.mismatch_info.high)
    assert isinstance(rej, RejectedReplyStat)
    return AuthError(rej.stat_)


def _refused(
    data: AcceptedReplyReplyDataMismatchInfo | AcceptedReplyReplyDataDefault,
    program: Program,
    version: int,
    proc: Procedure,
) -> RpcRejected:
    if isinstance(data, AcceptedReplyReplyDataMismatchInfo):
        return ProgramMismatch(version, data.mismatch_info.low, data.mismatch_info.high)
    stat = data.stat
    if stat == AcceptStat.PROG_UNAVAIL:
        return ProgramUnavailable(program.number)
    if stat == AcceptStat.PROC_UNAVAIL:
        return ProcedureUnavailable(proc.number, proc.name)
    if stat == AcceptStat.GARBAGE_ARGS:
        return GarbageArgs(proc.name)
    if stat == AcceptStat.SYSTEM_ERR:
        return RemoteSystemError(proc.name)
    # Unreachable with the generated decoder (it refuses unknown accept_stat
    # values), kept so a future accept_stat still maps to a refusal.
    return RpcRejected(f"{stat.name}: call to {proc.name} refused", accept_stat=stat)

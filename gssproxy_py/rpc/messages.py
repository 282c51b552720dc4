"""ONC RPC v2 messages (RFC 5531 §9): reading a call header, building replies,
and routing one record to a procedure or to an RPC-level error reply.

Everything here is a pure function over bytes. `route` applies the checks in
the order gssproxy applies them (`gp_rpc_process.c`), so a message that breaks
several rules gets the same answer from both daemons:

| condition                               | answer                                  |
|-----------------------------------------|-----------------------------------------|
| xid, msg_type or call body undecodable  | `UndecodableCallError`: no reply, close |
| msg_type is REPLY                       | MSG_ACCEPTED / GARBAGE_ARGS             |
| rpcvers != 2                            | MSG_DENIED / RPC_MISMATCH 2..2          |
| program not served                      | MSG_ACCEPTED / PROG_UNAVAIL             |
| version not served                      | MSG_ACCEPTED / PROG_MISMATCH low..high  |
| procedure not in the table (except 0)   | MSG_ACCEPTED / PROC_UNAVAIL             |
| cred flavor != AUTH_NONE                | MSG_DENIED / AUTH_ERROR AUTH_FAILED (7) |
| procedure 0 (NULL), no arguments        | MSG_ACCEPTED / SUCCESS, empty result    |
| arguments do not decode                 | MSG_ACCEPTED / GARBAGE_ARGS             |
| the procedure has no handler            | MSG_ACCEPTED / PROC_UNAVAIL             |
| handler raised / result does not encode | MSG_ACCEPTED / SYSTEM_ERR (the server)  |

NULL is answered SUCCESS where gssproxy says PROC_UNAVAIL (the kernel's
connect-time ping ignores either; RFC 5531 says every program serves NULL),
and a NULL call that carries arguments is GARBAGE_ARGS. AUTH_FAILED is kept
although RFC 5531 would suggest AUTH_BADCRED, because that is what existing
clients have seen. A procedure in the table without a handler (a program not
wired yet) is PROC_UNAVAIL only after its arguments decoded, so malformed
arguments are GARBAGE_ARGS whether or not the procedure is implemented.
The reply verifier is always AUTH_NONE with an empty body: the kernel treats
any other verifier as garbage.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final, final

from gssproxy_py.errors import LocalError, PeerError, XdrError
from gssproxy_py.proto.rpc_msg import (
    RPC_VERSION,
    AcceptedReply,
    AcceptedReplyReplyData,
    AcceptedReplyReplyDataDefault,
    AcceptedReplyReplyDataMismatchInfo,
    AcceptedReplyReplyDataResults,
    AcceptStat,
    AuthFlavor,
    AuthStat,
    MismatchInfo,
    MsgType,
    OpaqueAuth,
    RejectedReply,
    RejectedReplyMismatchInfo,
    RejectedReplyStat,
    ReplyBodyAreply,
    ReplyBodyRreply,
    RpcMsg,
    RpcMsgBodyRbody,
    decode_call_body,
    decode_msg_type,
    decode_reply_body,
    encode_rpc_msg,
)
from gssproxy_py.rpc.dispatch import DirectPath, Handler, ImmediateHandler, ProgramService
from gssproxy_py.xdr.program import Procedure
from gssproxy_py.xdr.runtime import Decoder, decode_bytes, encode_bytes

#: The NULL procedure every ONC RPC program has (RFC 5531 §12.1).
NULL_PROCEDURE = 0


class UndecodableCallError(PeerError):
    """The record does not start with a readable RPC message header.

    Without a header there is no xid to answer to, so the connection is
    closed without a reply, as gssproxy does.
    """


class NotACallError(PeerError):
    """The message is a REPLY where a CALL was expected; answered GARBAGE_ARGS."""

    def __init__(self, xid: int) -> None:
        self.xid = xid
        super().__init__(f"xid {xid:#010x}: a REPLY message was sent to the server")


@final
class CallHeader:
    """The fixed part of a CALL message; `args` are the bytes after it.

    Made for every call: a class with `Final` attributes rather than a
    frozen dataclass, whose `__init__` mypyc leaves interpreted (one
    `object.__setattr__` per field, ~15 times the cost: docs/PERFORMANCE.md).
    Read-only all the same: mypy refuses an assignment, and the compiled
    class raises AttributeError."""

    __slots__ = ("args", "cred_flavor", "proc", "prog", "rpcvers", "verf_flavor", "vers", "xid")

    def __init__(
        self,
        xid: int,
        rpcvers: int,
        prog: int,
        vers: int,
        proc: int,
        cred_flavor: int,
        verf_flavor: int,
        args: memoryview | bytes,
    ) -> None:
        self.xid: Final = xid
        self.rpcvers: Final = rpcvers
        self.prog: Final = prog
        self.vers: Final = vers
        self.proc: Final = proc
        self.cred_flavor: Final = cred_flavor
        self.verf_flavor: Final = verf_flavor
        self.args: Final = args


#: xid, msg_type, rpcvers, prog, vers, proc, cred (flavor, length), verf (flavor, length)
_FIXED_CALL = struct.Struct(">10I")
_FIXED_CALL_SIZE = _FIXED_CALL.size


def parse_call(record: bytes) -> CallHeader:
    """Read the header of one CALL record.

    Raises `NotACallError` for a REPLY and `UndecodableCallError` when the xid, the
    message type or the call body cannot be read (including an unknown
    message type and an auth body over 400 bytes).
    """
    if len(record) >= _FIXED_CALL_SIZE:
        # Every client we serve sends empty credentials and verifiers: then
        # the header is ten fixed words, and reading them at once gives what
        # the generated decoder would.
        xid, mtype, rpcvers, prog, vers, proc, cflav, clen, vflav, vlen = _FIXED_CALL.unpack_from(
            record
        )
        if mtype == MsgType.CALL and clen == 0 and vlen == 0:
            return CallHeader(
                xid=xid,
                rpcvers=rpcvers,
                prog=prog,
                vers=vers,
                proc=proc,
                cred_flavor=cflav,
                verf_flavor=vflav,
                args=memoryview(record)[_FIXED_CALL_SIZE:],
            )
    dec = Decoder(record)
    try:
        xid = dec.uint32()
        if decode_msg_type(dec) != MsgType.CALL:
            raise NotACallError(xid)
        body = decode_call_body(dec)
    except XdrError as exc:  # the only error a Decoder raises (xdr/runtime.py)
        raise UndecodableCallError(f"undecodable RPC call header: {exc}") from None
    return CallHeader(
        xid=xid,
        rpcvers=body.rpcvers,
        prog=body.prog,
        vers=body.vers,
        proc=body.proc,
        cred_flavor=body.cred.flavor,
        verf_flavor=body.verf.flavor,
        args=memoryview(record)[dec.get_position() :],
    )


# -- replies -------------------------------------------------------------------

#: AUTH_NONE with an empty body: the only verifier the kernel accepts in a reply.
_NULL_VERIFIER = OpaqueAuth(flavor=AuthFlavor.AUTH_NONE, body=b"")


def _accepted(xid: int, data: AcceptedReplyReplyData) -> bytes:
    body = ReplyBodyAreply(AcceptedReply(verf=_NULL_VERIFIER, reply_data=data))
    return encode_bytes(encode_rpc_msg, RpcMsg(xid=xid, body=RpcMsgBodyRbody(body)))


def _denied(xid: int, rejected: RejectedReply) -> bytes:
    body = ReplyBodyRreply(rejected)
    return encode_bytes(encode_rpc_msg, RpcMsg(xid=xid, body=RpcMsgBodyRbody(body)))


#: A SUCCESS reply header after its xid (the same for every call).
_SUCCESS_AFTER_XID = _accepted(0, AcceptedReplyReplyDataResults(results=b""))[4:]
_XID = struct.Struct(">I")


def reply_success(xid: int, result: bytes | bytearray | memoryview) -> bytes:
    """MSG_ACCEPTED / SUCCESS followed by the already encoded result."""
    return b"".join((_XID.pack(xid), _SUCCESS_AFTER_XID, result))


def reply_prog_unavail(xid: int) -> bytes:
    return _accepted(xid, AcceptedReplyReplyDataDefault(AcceptStat.PROG_UNAVAIL))


def reply_prog_mismatch(xid: int, low: int, high: int) -> bytes:
    info = MismatchInfo(low=low, high=high)
    return _accepted(xid, AcceptedReplyReplyDataMismatchInfo(mismatch_info=info))


def reply_proc_unavail(xid: int) -> bytes:
    return _accepted(xid, AcceptedReplyReplyDataDefault(AcceptStat.PROC_UNAVAIL))


def reply_garbage_args(xid: int) -> bytes:
    return _accepted(xid, AcceptedReplyReplyDataDefault(AcceptStat.GARBAGE_ARGS))


def reply_system_err(xid: int) -> bytes:
    return _accepted(xid, AcceptedReplyReplyDataDefault(AcceptStat.SYSTEM_ERR))


def reply_rpc_mismatch(xid: int, low: int = RPC_VERSION, high: int = RPC_VERSION) -> bytes:
    return _denied(xid, RejectedReplyMismatchInfo(mismatch_info=MismatchInfo(low=low, high=high)))


def reply_auth_error(xid: int, auth_stat: AuthStat) -> bytes:
    return _denied(xid, RejectedReplyStat(stat_=auth_stat))


# -- routing ---------------------------------------------------------------------


@final
class Routed:
    """A call that passed every RPC-level check: what remains is to run the
    handler on `arg` and encode its result with `procedure`; or, with
    `direct`, to run the direct path on `arg`, what its `parse` read
    (`generic_args` decodes the typed argument instead). Read-only, made
    per call (see `CallHeader`)."""

    __slots__ = ("arg", "call", "direct", "handler", "immediate", "procedure", "service")

    def __init__(
        self,
        call: CallHeader,
        service: ProgramService,
        procedure: Procedure,
        handler: Handler,
        arg: Any,
        immediate: ImmediateHandler | None = None,
        direct: DirectPath | None = None,
    ) -> None:
        self.call: Final = call
        self.service: Final = service
        self.procedure: Final = procedure
        self.handler: Final = handler
        self.arg: Final = arg
        #: the procedure's immediate handler, when the program has one
        self.immediate: Final = immediate
        #: the direct path that parsed `arg`, if one did
        self.direct: Final = direct


def route(record: bytes, services: Mapping[int, ProgramService]) -> Routed | bytes:
    """Check one call record against the served programs.

    Returns the handler to run, or the complete reply (unframed) when the RPC
    layer answers by itself. Raises `UndecodableCallError` when no reply is
    possible (the caller closes the connection).
    """
    try:
        call = parse_call(record)
    except NotACallError as exc:
        return reply_garbage_args(exc.xid)
    xid = call.xid
    if call.rpcvers != RPC_VERSION:
        return reply_rpc_mismatch(xid, RPC_VERSION, RPC_VERSION)
    service = services.get(call.prog)
    if service is None:
        return reply_prog_unavail(xid)
    if call.vers not in service.program.versions:
        program = service.program
        return reply_prog_mismatch(xid, program.low_version, program.high_version)
    procedure = service.procedure(call.vers, call.proc)
    is_null = call.proc == NULL_PROCEDURE
    if procedure is None and not is_null:
        return reply_proc_unavail(xid)
    if call.cred_flavor != AuthFlavor.AUTH_NONE:
        return reply_auth_error(xid, AuthStat.AUTH_FAILED)
    if is_null or procedure is None:
        # Answered here whether or not the table lists it (generated tables
        # do). NULL takes no arguments; anything after the header is garbage.
        return reply_success(xid, b"") if not call.args else reply_garbage_args(xid)
    direct = service.direct_path(call.vers, call.proc)
    arg = None if direct is None else direct.parse(call.args)
    if arg is None:
        direct = None
        try:
            arg = decode_bytes(procedure.decode_arg, call.args)
        except XdrError:
            return reply_garbage_args(xid)
    handler = service.handler(call.vers, call.proc)
    if handler is None:
        return reply_proc_unavail(xid)
    return Routed(
        call=call,
        service=service,
        procedure=procedure,
        handler=handler,
        arg=arg,
        immediate=service.immediate_handler(call.vers, call.proc),
        direct=direct,
    )


def generic_args(routed: Routed) -> Routed:
    """`routed` with its typed argument, for the generic path (a direct
    path parsed it, or declined to serve it). The decoder accepts whatever
    a direct path's `parse` did (`DirectPath`), so this does not fail."""
    if routed.direct is None:
        return routed
    arg = decode_bytes(routed.procedure.decode_arg, routed.call.args)
    return Routed(
        call=routed.call,
        service=routed.service,
        procedure=routed.procedure,
        handler=routed.handler,
        arg=arg,
        immediate=routed.immediate,
    )


class OversizedReplyError(LocalError):
    """An encoded result does not fit in one record of the allowed size (the
    server's side; a client that receives too large a reply raises
    `client.errors.ReplyTooLargeError`)."""


def encode_reply(routed: Routed, result: Any, *, max_record_size: int) -> bytes:
    """The SUCCESS reply carrying `result`.

    Raises `XdrEncodeError` when the result does not fit its XDR type and
    `OversizedReplyError` when the reply would exceed `max_record_size`; the server
    answers SYSTEM_ERR for both (gssproxy rewrites the header the same way).
    """
    encoded = encode_bytes(routed.procedure.encode_res, result)
    return encoded_reply(routed, encoded, max_record_size=max_record_size)


def encoded_reply(routed: Routed, encoded: bytes, *, max_record_size: int) -> bytes:
    """The SUCCESS reply carrying an encoded result; `OversizedReplyError`
    when it would exceed `max_record_size`."""
    reply = reply_success(routed.call.xid, encoded)
    if len(reply) > max_record_size:
        raise OversizedReplyError(
            f"{routed.procedure.name} reply of {len(reply)} bytes exceeds {max_record_size}"
        )
    return reply


def describe_reply(reply: bytes) -> str:
    """What a reply says, in a few words for the log: `SUCCESS`,
    `PROG_MISMATCH 1..1`, `AUTH_ERROR AUTH_FAILED`, ..."""
    dec = Decoder(reply)
    try:
        dec.uint32()  # xid
        if decode_msg_type(dec) != MsgType.REPLY:
            return "not a reply"
        body = decode_reply_body(dec)
    except XdrError:
        return "unreadable reply"
    if isinstance(body, ReplyBodyRreply):
        rejected = body.rreply
        if isinstance(rejected, RejectedReplyMismatchInfo):
            info = rejected.mismatch_info
            return f"RPC_MISMATCH {info.low}..{info.high}"
        return f"AUTH_ERROR {rejected.stat_.name}"
    data = body.areply.reply_data
    if isinstance(data, AcceptedReplyReplyDataMismatchInfo):
        return f"PROG_MISMATCH {data.mismatch_info.low}..{data.mismatch_info.high}"
    return data.stat.name

"""What an RPC call from the client can fail with, one class per cause.

Every class derives from `RpcClientError`, so a caller can catch the client's
failures in one clause, and also from `PeerError` or `LocalError`, so the
project-wide split by whose fault it was still holds:

* the server answered, but refused the call: `RpcRejected` and its subclasses,
  one per `accept_stat`/`reject_stat` of RFC 5531 (PeerError);
* the server misbehaved on the wire: `RpcProtocolError` (bad or oversized reply,
  wrong xid, closed the connection mid-call) and `RpcTimeoutError` (PeerError);
* we could not reach it or cannot send what we were given: `RpcConnectionError`
  and `RequestTooLargeError` (LocalError: a missing socket or a daemon that is not
  running is the environment's problem, not the peer's).

GSS-level failures are not exceptions: they arrive inside a successful reply as
`gssx_status`, exactly as the server sent them.
"""

from __future__ import annotations

from gssproxy_py.errors import GssProxyError, LocalError, PeerError
from gssproxy_py.proto.rpc_msg import AcceptStat, AuthStat, RejectStat, ReplyStat


class RpcClientError(GssProxyError):
    """Root of every failure of an RPC call made by the client."""


class RpcConnectionError(RpcClientError, LocalError):
    """The socket could not be connected to, or broke while sending."""


class RequestTooLargeError(RpcClientError, LocalError):
    """The encoded call exceeds the request size limit; nothing was sent."""


class RpcTimeoutError(RpcClientError, PeerError):
    """No complete reply arrived within the call's timeout."""


class RpcProtocolError(RpcClientError, PeerError):
    """The reply is not a well-formed answer to our call."""


class ReplyTooLargeError(RpcProtocolError):
    """The reply record exceeds the client's maximum reply size."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"reply of at least {size} bytes exceeds the limit of {limit} bytes")


class ConnectionClosedError(RpcProtocolError):
    """The server closed the connection before the reply was complete.

    gssproxy does this instead of replying when it cannot parse a call header
    or finds no service for the caller, so it is a refusal as much as an I/O
    error.
    """


class XidMismatchError(RpcProtocolError):
    """A reply carried an xid that belongs to no outstanding call."""

    def __init__(self, got: int, expected: int | None) -> None:
        self.got = got
        self.expected = expected
        want = "no call outstanding" if expected is None else f"expected 0x{expected:08x}"
        super().__init__(f"reply xid 0x{got:08x} does not match ({want})")


class RpcRejected(RpcClientError, PeerError):  # noqa: N818 -- an RPC outcome
    """The server answered the call with something other than SUCCESS.

    `reply_stat` says whether the call was accepted (MSG_ACCEPTED with a
    non-SUCCESS `accept_stat`) or denied (MSG_DENIED with a `reject_stat`);
    exactly one of `accept_stat` and `reject_stat` is set.
    """

    reply_stat: ReplyStat
    accept_stat: AcceptStat | None
    reject_stat: RejectStat | None

    def __init__(
        self,
        message: str,
        *,
        accept_stat: AcceptStat | None = None,
        reject_stat: RejectStat | None = None,
    ) -> None:
        if (accept_stat is None) == (reject_stat is None):
            raise ValueError("exactly one of accept_stat and reject_stat must be given")
        self.accept_stat = accept_stat
        self.reject_stat = reject_stat
        self.reply_stat = (
            ReplyStat.MSG_ACCEPTED if accept_stat is not None else ReplyStat.MSG_DENIED
        )
        super().__init__(message)

    @property
    def stat_name(self) -> str:
        """The RFC 5531 name of the refusal, e.g. `PROC_UNAVAIL`."""
        stat = self.accept_stat if self.accept_stat is not None else self.reject_stat
        assert stat is not None
        return stat.name


class ProgramUnavailable(RpcRejected):
    """PROG_UNAVAIL: the server does not serve this program number."""

    def __init__(self, program: int) -> None:
        self.program = program
        super().__init__(
            f"PROG_UNAVAIL: program {program} is not served here",
            accept_stat=AcceptStat.PROG_UNAVAIL,
        )


class ProgramMismatch(RpcRejected):
    """PROG_MISMATCH: the program is served, but only versions low..high."""

    def __init__(self, version: int, low: int, high: int) -> None:
        self.version = version
        self.low = low
        self.high = high
        super().__init__(
            f"PROG_MISMATCH: version {version} is not served (supported {low}..{high})",
            accept_stat=AcceptStat.PROG_MISMATCH,
        )


class ProcedureUnavailable(RpcRejected):
    """PROC_UNAVAIL: the program and version are served, the procedure is not."""

    def __init__(self, procedure: int, name: str) -> None:
        self.procedure = procedure
        self.name = name
        super().__init__(
            f"PROC_UNAVAIL: procedure {procedure} ({name}) is not served",
            accept_stat=AcceptStat.PROC_UNAVAIL,
        )


class GarbageArgs(RpcRejected):
    """GARBAGE_ARGS: the server could not decode our arguments."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"GARBAGE_ARGS: the server could not decode the arguments of {name}",
            accept_stat=AcceptStat.GARBAGE_ARGS,
        )


class RemoteSystemError(RpcRejected):
    """SYSTEM_ERR: the server failed internally while handling the call."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"SYSTEM_ERR: the server failed internally handling {name}",
            accept_stat=AcceptStat.SYSTEM_ERR,
        )


class RpcMismatch(RpcRejected):
    """MSG_DENIED/RPC_MISMATCH: the server speaks only RPC versions low..high."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high
        super().__init__(
            f"RPC_MISMATCH: the server supports RPC versions {low}..{high}, not 2",
            reject_stat=RejectStat.RPC_MISMATCH,
        )


class AuthError(RpcRejected):
    """MSG_DENIED/AUTH_ERROR: the server refused our credentials."""

    def __init__(self, stat: AuthStat) -> None:
        self.stat = stat
        super().__init__(
            f"AUTH_ERROR: the server refused the credentials ({stat.name})",
            reject_stat=RejectStat.AUTH_ERROR,
        )


__all__ = [
    "AuthError",
    "ConnectionClosedError",
    "GarbageArgs",
    "ProcedureUnavailable",
    "ProgramMismatch",
    "ProgramUnavailable",
    "RemoteSystemError",
    "ReplyTooLargeError",
    "RequestTooLargeError",
    "RpcClientError",
    "RpcConnectionError",
    "RpcMismatch",
    "RpcProtocolError",
    "RpcRejected",
    "RpcTimeoutError",
    "XidMismatchError",
]

"""Client side of the project's ONC RPC programs over AF_UNIX sockets.

* `RpcClient` / `AsyncRpcClient` (sync.py, aio.py): any generated `Program`
  table, one version, calls by procedure number or name; the asyncio client
  pipelines concurrent calls on one connection.
* `GssProxyClient` / `AsyncGssProxyClient` (gssproxy.py): typed methods for
  the 15 GSS-Proxy procedures, plus argument helpers (`option`, `call_ctx`,
  `gssx_name`).
* errors.py: one exception per RPC refusal and per transport failure.
* wire.py: the sans-IO framing and header checks both clients share.
* values.py: generated dataclasses to and from JSON, for `gssproxy-py-call`
  (call_cli.py).
"""

from __future__ import annotations

from gssproxy_py.client.aio import AsyncRpcClient
from gssproxy_py.client.errors import (
    AuthError,
    ConnectionClosedError,
    GarbageArgs,
    ProcedureUnavailable,
    ProgramMismatch,
    ProgramUnavailable,
    RemoteSystemError,
    ReplyTooLargeError,
    RequestTooLargeError,
    RpcClientError,
    RpcConnectionError,
    RpcMismatch,
    RpcProtocolError,
    RpcRejected,
    RpcTimeoutError,
    XidMismatchError,
)
from gssproxy_py.client.gssproxy import (
    AsyncGssProxyClient,
    GssProxyClient,
    call_ctx,
    cstring,
    empty_call_ctx,
    find_option,
    gssx_name,
    option,
    status_summary,
)
from gssproxy_py.client.sync import RpcClient
from gssproxy_py.client.wire import DEFAULT_SOCKET_PATH, default_socket_path

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "AsyncGssProxyClient",
    "AsyncRpcClient",
    "AuthError",
    "ConnectionClosedError",
    "GarbageArgs",
    "GssProxyClient",
    "ProcedureUnavailable",
    "ProgramMismatch",
    "ProgramUnavailable",
    "RemoteSystemError",
    "ReplyTooLargeError",
    "RequestTooLargeError",
    "RpcClient",
    "RpcClientError",
    "RpcConnectionError",
    "RpcMismatch",
    "RpcProtocolError",
    "RpcRejected",
    "RpcTimeoutError",
    "XidMismatchError",
    "call_ctx",
    "cstring",
    "default_socket_path",
    "empty_call_ctx",
    "find_option",
    "gssx_name",
    "option",
    "status_summary",
]

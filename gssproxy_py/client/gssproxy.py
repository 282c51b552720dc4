"""GSS-Proxy (program 400112, version 1) over the generic RPC clients.

`GssProxyClient` and `AsyncGssProxyClient` have one typed method per
procedure, taking the generated argument dataclass and returning the result
dataclass. GSS failures come back inside `res.status` (as the daemon sends
them); only RPC-level failures raise.

The helpers build what almost every argument needs. Option names and string
values travel NUL-terminated, with the NUL counted in the length: gssproxy and
the kernel compare them by exact length (`gpopt_string_match`), so
`b"localname"` would simply not match. `option()` (from vocab/gssx_options.py,
re-exported here and by `gssproxy_py.client`) adds the NUL for you.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, TypeVar

from gssproxy_py.client.aio import AsyncRpcClient
from gssproxy_py.client.sync import RpcClient
from gssproxy_py.client.wire import DEFAULT_TIMEOUT, MAX_RECORD_SIZE, default_socket_path
from gssproxy_py.proto.gss_proxy import (
    GSSPROXY_PROGRAM,
    GSSPROXYVERS,
    GSSX_ACCEPT_SEC_CONTEXT,
    GSSX_ACQUIRE_CRED,
    GSSX_EXPORT_CRED,
    GSSX_GET_CALL_CONTEXT,
    GSSX_GET_MIC,
    GSSX_IMPORT_AND_CANON_NAME,
    GSSX_IMPORT_CRED,
    GSSX_INDICATE_MECHS,
    GSSX_INIT_SEC_CONTEXT,
    GSSX_RELEASE_HANDLE,
    GSSX_STORE_CRED,
    GSSX_UNWRAP,
    GSSX_VERIFY,
    GSSX_WRAP,
    GSSX_WRAP_SIZE_LIMIT,
    GssxArgAcceptSecContext,
    GssxArgAcquireCred,
    GssxArgExportCred,
    GssxArgGetCallContext,
    GssxArgGetMic,
    GssxArgImportAndCanonName,
    GssxArgImportCred,
    GssxArgIndicateMechs,
    GssxArgInitSecContext,
    GssxArgReleaseHandle,
    GssxArgStoreCred,
    GssxArgUnwrap,
    GssxArgVerifyMic,
    GssxArgWrap,
    GssxArgWrapSizeLimit,
    GssxCallCtx,
    GssxName,
    GssxOption,
    GssxResAcceptSecContext,
    GssxResAcquireCred,
    GssxResExportCred,
    GssxResGetCallContext,
    GssxResGetMic,
    GssxResImportAndCanonName,
    GssxResImportCred,
    GssxResIndicateMechs,
    GssxResInitSecContext,
    GssxResReleaseHandle,
    GssxResStoreCred,
    GssxResUnwrap,
    GssxResVerifyMic,
    GssxResWrap,
    GssxResWrapSizeLimit,
    GssxStatus,
)
from gssproxy_py.vocab.gss_status import major_status_names
from gssproxy_py.vocab.gssx_options import cstring, find_option, option

R = TypeVar("R")

# -- argument helpers -----------------------------------------------------------
# Option names, values and the C-string helpers (`cstring`, `option`,
# `find_option`) are the shared vocabulary in vocab/gssx_options.py; OIDs are
# in vocab/oids.py.


def call_ctx(*options: GssxOption, locale: bytes = b"") -> GssxCallCtx:
    """A call_ctx with the given options; with none, the empty one the interposer sends."""
    return GssxCallCtx(locale=locale, server_ctx=b"", options=tuple(options))


def empty_call_ctx() -> GssxCallCtx:
    return call_ctx()


def gssx_name(display_name: str | bytes, name_type: bytes = b"") -> GssxName:
    """A name to import: display text plus its type OID (empty for the default).

    The display name is not NUL-terminated: it is a gss_buffer, not an option.
    """
    display = display_name.encode("utf-8") if isinstance(display_name, str) else display_name
    return GssxName(
        display_name=display,
        name_type=name_type,
        exported_name=b"",
        exported_composite_name=b"",
        name_attributes=(),
        extensions=(),
    )


# -- GSS status in words ----------------------------------------------------------


def status_summary(status: GssxStatus) -> str:
    """One line: major (with names), minor, and the server's status strings."""
    names = major_status_names(status.major_status)
    line = f"GSS major 0x{status.major_status:08x}"
    if names:
        line += f" ({' | '.join(names)})"
    line += f", minor {status.minor_status}"
    texts = [
        s.rstrip(b"\0").decode("utf-8", "replace")
        for s in (status.major_status_string, status.minor_status_string)
        if s.rstrip(b"\0")
    ]
    if texts:
        line += ": " + "; ".join(texts)
    return line


# -- clients ------------------------------------------------------------------------


def _checked(res: Any, res_type: type[R]) -> R:
    # The program table fixes the result type; a mismatch would be a
    # generator or table bug, never the peer's doing.
    if not isinstance(res, res_type):
        raise TypeError(f"expected {res_type.__name__}, got {type(res).__name__}")
    return res


def _path(socket_path: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    return default_socket_path() if socket_path is None else socket_path


class GssProxyClient:
    """A blocking GSS-Proxy client; the socket defaults as the interposer's does."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        max_reply_size: int = MAX_RECORD_SIZE,
        max_request_size: int = MAX_RECORD_SIZE,
    ) -> None:
        self.rpc = RpcClient(
            _path(socket_path),
            GSSPROXY_PROGRAM,
            GSSPROXYVERS,
            timeout,
            max_reply_size=max_reply_size,
            max_request_size=max_request_size,
        )

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> GssProxyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def null(self) -> None:
        """Procedure 0. gssproxy itself answers it PROC_UNAVAIL (it dispatches 1..15 only)."""
        self.rpc.null()

    def indicate_mechs(self, arg: GssxArgIndicateMechs | None = None) -> GssxResIndicateMechs:
        arg = arg if arg is not None else GssxArgIndicateMechs(call_ctx=empty_call_ctx())
        return _checked(self.rpc.call(GSSX_INDICATE_MECHS, arg), GssxResIndicateMechs)

    def get_call_context(self, arg: GssxArgGetCallContext) -> GssxResGetCallContext:
        return _checked(self.rpc.call(GSSX_GET_CALL_CONTEXT, arg), GssxResGetCallContext)

    def import_and_canon_name(self, arg: GssxArgImportAndCanonName) -> GssxResImportAndCanonName:
        return _checked(self.rpc.call(GSSX_IMPORT_AND_CANON_NAME, arg), GssxResImportAndCanonName)

    def export_cred(self, arg: GssxArgExportCred) -> GssxResExportCred:
        return _checked(self.rpc.call(GSSX_EXPORT_CRED, arg), GssxResExportCred)

    def import_cred(self, arg: GssxArgImportCred) -> GssxResImportCred:
        return _checked(self.rpc.call(GSSX_IMPORT_CRED, arg), GssxResImportCred)

    def acquire_cred(self, arg: GssxArgAcquireCred) -> GssxResAcquireCred:
        return _checked(self.rpc.call(GSSX_ACQUIRE_CRED, arg), GssxResAcquireCred)

    def store_cred(self, arg: GssxArgStoreCred) -> GssxResStoreCred:
        return _checked(self.rpc.call(GSSX_STORE_CRED, arg), GssxResStoreCred)

    def init_sec_context(self, arg: GssxArgInitSecContext) -> GssxResInitSecContext:
        return _checked(self.rpc.call(GSSX_INIT_SEC_CONTEXT, arg), GssxResInitSecContext)

    def accept_sec_context(self, arg: GssxArgAcceptSecContext) -> GssxResAcceptSecContext:
        return _checked(self.rpc.call(GSSX_ACCEPT_SEC_CONTEXT, arg), GssxResAcceptSecContext)

    def release_handle(self, arg: GssxArgReleaseHandle) -> GssxResReleaseHandle:
        return _checked(self.rpc.call(GSSX_RELEASE_HANDLE, arg), GssxResReleaseHandle)

    def get_mic(self, arg: GssxArgGetMic) -> GssxResGetMic:
        return _checked(self.rpc.call(GSSX_GET_MIC, arg), GssxResGetMic)

    def verify_mic(self, arg: GssxArgVerifyMic) -> GssxResVerifyMic:
        return _checked(self.rpc.call(GSSX_VERIFY, arg), GssxResVerifyMic)

    def wrap(self, arg: GssxArgWrap) -> GssxResWrap:
        return _checked(self.rpc.call(GSSX_WRAP, arg), GssxResWrap)

    def unwrap(self, arg: GssxArgUnwrap) -> GssxResUnwrap:
        return _checked(self.rpc.call(GSSX_UNWRAP, arg), GssxResUnwrap)

    def wrap_size_limit(self, arg: GssxArgWrapSizeLimit) -> GssxResWrapSizeLimit:
        return _checked(self.rpc.call(GSSX_WRAP_SIZE_LIMIT, arg), GssxResWrapSizeLimit)


class AsyncGssProxyClient:
    """The asyncio twin of GssProxyClient; concurrent calls share one connection."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        max_reply_size: int = MAX_RECORD_SIZE,
        max_request_size: int = MAX_RECORD_SIZE,
    ) -> None:
        self.rpc = AsyncRpcClient(
            _path(socket_path),
            GSSPROXY_PROGRAM,
            GSSPROXYVERS,
            timeout,
            max_reply_size=max_reply_size,
            max_request_size=max_request_size,
        )

    async def close(self) -> None:
        await self.rpc.close()

    async def __aenter__(self) -> AsyncGssProxyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def null(self) -> None:
        await self.rpc.null()

    async def indicate_mechs(self, arg: GssxArgIndicateMechs | None = None) -> GssxResIndicateMechs:
        arg = arg if arg is not None else GssxArgIndicateMechs(call_ctx=empty_call_ctx())
        return _checked(await self.rpc.call(GSSX_INDICATE_MECHS, arg), GssxResIndicateMechs)

    async def get_call_context(self, arg: GssxArgGetCallContext) -> GssxResGetCallContext:
        return _checked(await self.rpc.call(GSSX_GET_CALL_CONTEXT, arg), GssxResGetCallContext)

    async def import_and_canon_name(
        self, arg: GssxArgImportAndCanonName
    ) -> GssxResImportAndCanonName:
        return _checked(
            await self.rpc.call(GSSX_IMPORT_AND_CANON_NAME, arg), GssxResImportAndCanonName
        )

    async def export_cred(self, arg: GssxArgExportCred) -> GssxResExportCred:
        return _checked(await self.rpc.call(GSSX_EXPORT_CRED, arg), GssxResExportCred)

    async def import_cred(self, arg: GssxArgImportCred) -> GssxResImportCred:
        return _checked(await self.rpc.call(GSSX_IMPORT_CRED, arg), GssxResImportCred)

    async def acquire_cred(self, arg: GssxArgAcquireCred) -> GssxResAcquireCred:
        return _checked(await self.rpc.call(GSSX_ACQUIRE_CRED, arg), GssxResAcquireCred)

    async def store_cred(self, arg: GssxArgStoreCred) -> GssxResStoreCred:
        return _checked(await self.rpc.call(GSSX_STORE_CRED, arg), GssxResStoreCred)

    async def init_sec_context(self, arg: GssxArgInitSecContext) -> GssxResInitSecContext:
        return _checked(await self.rpc.call(GSSX_INIT_SEC_CONTEXT, arg), GssxResInitSecContext)

    async def accept_sec_context(self, arg: GssxArgAcceptSecContext) -> GssxResAcceptSecContext:
        return _checked(await self.rpc.call(GSSX_ACCEPT_SEC_CONTEXT, arg), GssxResAcceptSecContext)

    async def release_handle(self, arg: GssxArgReleaseHandle) -> GssxResReleaseHandle:
        return _checked(await self.rpc.call(GSSX_RELEASE_HANDLE, arg), GssxResReleaseHandle)

    async def get_mic(self, arg: GssxArgGetMic) -> GssxResGetMic:
        return _checked(await self.rpc.call(GSSX_GET_MIC, arg), GssxResGetMic)

    async def verify_mic(self, arg: GssxArgVerifyMic) -> GssxResVerifyMic:
        return _checked(await self.rpc.call(GSSX_VERIFY, arg), GssxResVerifyMic)

    async def wrap(self, arg: GssxArgWrap) -> GssxResWrap:
        return _checked(await self.rpc.call(GSSX_WRAP, arg), GssxResWrap)

    async def unwrap(self, arg: GssxArgUnwrap) -> GssxResUnwrap:
        return _checked(await self.rpc.call(GSSX_UNWRAP, arg), GssxResUnwrap)

    async def wrap_size_limit(self, arg: GssxArgWrapSizeLimit) -> GssxResWrapSizeLimit:
        return _checked(await self.rpc.call(GSSX_WRAP_SIZE_LIMIT, arg), GssxResWrapSizeLimit)


__all__ = [
    "AsyncGssProxyClient",
    "GssProxyClient",
    "call_ctx",
    "cstring",
    "empty_call_ctx",
    "find_option",
    "gssx_name",
    "major_status_names",
    "option",
    "status_summary",
]

"""The admin socket: program GSSPROXY_ADMIN (`idl/admin.x`) for `gssproxy-py-ctl`.

One more listener, beside the GSS-Proxy sockets and never one of them: mode
0600, and a connection is admitted only when its SO_PEERCRED uid is 0 (or,
in userproxy mode, the daemon's own user), whatever the file mode lets
through. It serves only the admin program: STATUS reads the daemon's
counters and state, RELOAD is SIGHUP with an answer, STOP is SIGTERM.

Its path is `admin_socket` in `[gssproxy]`, else `DIR/NAME-admin.sock`
beside the default socket `DIR/NAME.sock` (so test daemons with their own
`-s` never share one); it is read at start only. Admin connections are
not GSS-Proxy connections: they count in no cap, keep no idle daemon
alive, and are not in the status they report.

Nothing here is on a GSS call's path: the counters it reports are kept by
`server.calls` (`admin.stats`); STATUS only reads them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from gssproxy_py import __version__
from gssproxy_py.admin.stats import total_calls, total_connections, total_pools
from gssproxy_py.config.peer import Peer
from gssproxy_py.errors import XdrError
from gssproxy_py.executors import live_executors
from gssproxy_py.proto.admin import (
    ADM_RELOAD,
    ADM_STATUS,
    ADM_STOP,
    GSSPROXY_ADMIN_PROGRAM,
    GSSPROXY_ADMIN_V1,
    AdmOutcome,
    AdmPool,
    AdmProcess,
    AdmResult,
    AdmStatus,
    AdmTokenSession,
    AdmUidConnections,
    AdmUpcall,
    decode_adm_process,
    encode_adm_process,
)
from gssproxy_py.rpc.dispatch import CallInfo, Handler, ProgramService
from gssproxy_py.rpc.messages import Routed
from gssproxy_py.server.calls import call_info, finish_call
from gssproxy_py.server.connection import ConnectionInfo, ConnectionLimits, PrefixLog, RpcConnection
from gssproxy_py.server.fairness import CALLS_PER_TURN
from gssproxy_py.server.listeners import Listener, open_listener
from gssproxy_py.server.namespaces import NamespaceSupport
from gssproxy_py.server.status_channel import StatusGatherer
from gssproxy_py.xdr.runtime import decode_bytes, encode_bytes

if TYPE_CHECKING:
    from gssproxy_py.server.daemon import GssProxyServer

_log = logging.getLogger(__name__)

ADMIN_SOCKET_MODE = 0o600
#: Admin calls carry no arguments; a status reply of many services and
#: procedures stays far below this.
_LIMITS = ConnectionLimits(max_record_size=4 * 1024 * 1024, max_calls=4)


def _text(value: str) -> bytes:
    return value.encode("utf-8", errors="replace")


class AdminEndpoint:
    """The admin listener and its connections (a `ConnectionHost`)."""

    def __init__(
        self,
        server: GssProxyServer,
        path: str,
        *,
        allowed_uids: frozenset[int],
        namespaces: NamespaceSupport | None = None,
        tokens: Callable[[], list[tuple[str, str, bool]]] | None = None,
        worker_status: StatusGatherer | None = None,
    ) -> None:
        self._server = server
        #: the other processes' counters, with `worker_processes` > 1
        self._worker_status = worker_status
        #: (module, token, session open) of the token layer, if it is there
        self._tokens = tokens
        self.path = path
        self._allowed = allowed_uids
        self._namespaces = namespaces
        self._listener: Listener | None = None
        self._connections: set[RpcConnection] = set()
        handlers: dict[tuple[int, int], Handler] = {
            (GSSPROXY_ADMIN_V1, ADM_STATUS): self._status_handler,
            (GSSPROXY_ADMIN_V1, ADM_RELOAD): self._reload_handler,
            (GSSPROXY_ADMIN_V1, ADM_STOP): self._stop_handler,
        }
        self._service = ProgramService(program=GSSPROXY_ADMIN_PROGRAM, handlers=handlers)

    # -- the listener --------------------------------------------------------

    async def open(self) -> None:
        """Listen on the admin socket. Raises `ListenError`."""
        factory: Callable[[], RpcConnection] = lambda: RpcConnection(  # noqa: E731
            self, self.path, self._server.next_connection_number()
        )
        self._listener = await open_listener(self.path, factory, ADMIN_SOCKET_MODE)
        _log.info("admin socket %s (mode 0600)", self.path)

    async def close(self) -> None:
        """Stop accepting, let a STOP's answer leave, close and unlink."""
        if self._listener is not None:
            self._listener.stop()
        busy = [c.wait_calls() for c in self._connections if c.calls_in_flight]
        if busy:
            await asyncio.wait([asyncio.ensure_future(b) for b in busy], timeout=1.0)
        for conn in list(self._connections):
            conn.close()
        if self._listener is not None:
            self._listener.remove_file()
            self._listener = None

    # -- ConnectionHost ----------------------------------------------------------

    @property
    def services(self) -> Mapping[int, ProgramService]:
        return {GSSPROXY_ADMIN_PROGRAM.number: self._service}

    @property
    def selinux_enabled(self) -> bool:
        return False

    def connection_limits(self) -> ConnectionLimits:
        return _LIMITS

    def admit(self, conn: RpcConnection, peer: Peer) -> bool:
        if peer.uid in self._allowed:
            return True
        _log.warning(
            "admin socket %s: refused pid %d uid %d program %s (only %s may administer)",
            self.path,
            peer.pid,
            peer.uid,
            peer.program or "(unknown)",
            " or ".join(f"uid {u}" for u in sorted(self._allowed)),
        )
        return False

    def input_buffered(self, conn: RpcConnection, size: int) -> None:
        """Admin calls are tiny and their callers root: no budget."""

    def calls_waiting(self, conn: RpcConnection) -> None:
        """Root's pipelined admin calls: the rest start in later turns."""
        asyncio.get_running_loop().call_soon(self._continue, conn)

    def _continue(self, conn: RpcConnection) -> None:
        if conn.start_calls(CALLS_PER_TURN)[1]:
            self.calls_waiting(conn)

    def connection_opened(self, conn: RpcConnection) -> None:
        self._connections.add(conn)

    def connection_closed(self, conn: RpcConnection) -> None:
        self._connections.discard(conn)

    def start_call(
        self, conn: ConnectionInfo, routed: Routed
    ) -> bytes | Coroutine[Any, Any, bytes]:
        xid = routed.call.xid
        log = PrefixLog(_log, f"[admin {conn.number} xid {xid:#010x}]")
        info = call_info(conn, routed, self._server.config, log)
        info.log.info("%s from uid %d", routed.procedure.name, conn.peer.uid)
        return finish_call(info, routed, lambda: routed.handler(info, routed.arg))

    # -- the procedures -------------------------------------------------------------

    async def _status_handler(self, info: CallInfo, arg: None) -> AdmStatus:
        return await self.status()

    async def _reload_handler(self, info: CallInfo, arg: None) -> AdmResult:
        server = self._server
        if await server.reload():
            return AdmResult(AdmOutcome.ADM_OK, _text(f"reloaded: generation {server.generation}"))
        why = server.last_reload_error or "see the daemon log"
        return AdmResult(AdmOutcome.ADM_FAILED, _text(f"not reloaded, the old one stays: {why}"))

    async def _stop_handler(self, info: CallInfo, arg: None) -> AdmResult:
        # After this answer is on its way (the task ends before the stop runs).
        asyncio.get_running_loop().call_soon(self._server.request_stop)
        return AdmResult(AdmOutcome.ADM_OK, b"stopping")

    async def status(self) -> AdmStatus:
        """The daemon's counters and state now: with worker processes,
        each process's own and their totals."""
        server = self._server
        config = server.config
        processes = [process_status(server, 0, self._p11kit_workers())]
        if self._worker_status is not None:
            for slot, payload in await self._worker_status.gather():
                processes.append(_worker_process(slot, payload))
        answered = [p for p in processes if p.answered]
        return AdmStatus(
            version=_text(__version__),
            mode=b"userproxy" if server.options.userproxy else b"system",
            uptime_ms=int((time.monotonic() - server.started) * 1000),
            generation=server.generation,
            files=tuple(_text(f) for f in config.files),
            connections=total_connections(answered),
            calls_in_flight=sum(p.calls_in_flight for p in answered),
            calls=total_calls(answered),
            pools=total_pools(answered),
            upcalls=tuple(self._upcalls()),
            tokens=tuple(
                AdmTokenSession(module=_text(m), token=_text(t), open=is_open)
                for m, t, is_open in (self._tokens() if self._tokens is not None else ())
            ),
            processes=tuple(processes) if len(processes) > 1 else (),
        )

    def _p11kit_workers(self) -> tuple[AdmPool, ...]:
        """The p11-kit worker processes as one pool: each serves one
        connection; `queued` counts those the zygote has not forked yet."""
        workers = self._server.p11kit_workers
        if workers is None or not workers.running:
            return ()
        rows = workers.rows()
        started = sum(1 for r in rows if r.pid is not None)
        return (
            AdmPool(
                name=b"p11kit-workers",
                threads=len(rows),
                busy=started,
                queued=len(rows) - started,
                written_off=0,
                broken=False,
            ),
        )

    def _upcalls(self) -> list[AdmUpcall]:
        if self._namespaces is None:
            return []
        out = []
        enablers = self._namespaces.upcalls.enablers
        for netns in sorted(enablers, key=lambda n: n or ""):
            enabler = enablers[netns]
            last = enabler.last
            out.append(
                AdmUpcall(
                    netns=_text(netns or ""),
                    outcome=_text(last.outcome.value if last is not None else "pending"),
                    detail=_text(last.detail if last is not None else ""),
                    retrying=enabler.retrying,
                )
            )
        return out


def _pools() -> list[AdmPool]:
    """This process's thread pools."""
    out = []
    for executor in live_executors():
        st = executor.state()
        out.append(
            AdmPool(
                name=_text(st.name),
                threads=st.threads,
                busy=st.busy,
                queued=st.queued,
                written_off=st.written_off,
                broken=st.broken,
            )
        )
    return out


def process_status(
    server: GssProxyServer, number: int, extra_pools: tuple[AdmPool, ...] = ()
) -> AdmProcess:
    """This process's own counters (`number` 0: the first process, else a
    worker's slot)."""
    by_uid, in_flight = server.connection_counts()
    return AdmProcess(
        number=number,
        pid=os.getpid(),
        answered=True,
        connections=tuple(
            AdmUidConnections(uid=uid, connections=n) for uid, n in sorted(by_uid.items())
        ),
        calls_in_flight=in_flight,
        calls=server.counters.snapshot(),
        pools=(*_pools(), *extra_pools),
    )


def encode_process_status(server: GssProxyServer, number: int) -> bytes:
    """`process_status` as a worker sends it (`server.status_channel`)."""
    return encode_bytes(encode_adm_process, process_status(server, number))


def _worker_process(slot: int, payload: bytes | None) -> AdmProcess:
    """What worker `slot` answered, or an unanswered row."""
    if payload is not None:
        try:
            return decode_bytes(decode_adm_process, payload)
        except XdrError as exc:
            _log.warning("status: worker process %d answered garbage: %s", slot, exc)
    return AdmProcess(
        number=slot,
        pid=0,
        answered=False,
        connections=(),
        calls_in_flight=0,
        calls=(),
        pools=(),
    )

"""Program 400112 for the server: `gss_proxy_service(config) -> ProgramService`.

The server calls `gss_proxy_service` once at startup. Every handler reads
the configuration in force from its `CallInfo` (so SIGHUP reloads apply to
the next call). Each row of `procedures.PROCEDURES` becomes one threaded
handler, and a row marked `inline` also an immediate handler
(`rpc.dispatch`): for a service the engine allows inline
(`InlineCalls.allowed`) the call starts on the event-loop thread, without a
task; at its first step that may wait (`gss.inline`) it stops, and the rest
of it continues on the engine's threads, one hop per call. The event loop
never waits on KDCs or NSS; it does do local file I/O that a keytab accept
needs (the keytab and MIT's replay cache, see docs/PERFORMANCE.md).

Rules applied here for every procedure:

* a caller that matched no service (`CallInfo.service is None`) gets
  GSS_S_NO_CRED with minor EACCES and `no_match_reason` as the minor string
  (logged); NO_CRED because the caller is entitled to no credentials at all,
  which is also what the interposer reports when the C daemon drops such a
  connection;
* any exception becomes a status through `status.status_for_exception` (the
  one mapping) and the row's failure result; the server never sees a GSS
  error as an exception;
* `status.mech` is always an OID from INDICATE_MECHS (krb5 for failures),
  because the interposer rejects replies whose mech it does not know.

The `ProgramService` sets both hooks of the contract: `close` stops the
worker threads at shutdown; `reload` is `GssEngine.reload`.

`tgt_source` is the token layer's PKINIT (`pkinit_creds.TgtSource`, the
TOKEN_SIGN backend, handed over by `server/programs.py`).

`netns_executors` are the server's namespace executors: calls of services
with `netns` run on the one of the peer's namespace (`namespaced`), so
their KDC traffic leaves from inside it. Without them the program makes its
own on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from gssproxy_py.config.model import Config, Service
from gssproxy_py.gss.credentials import Request
from gssproxy_py.gss.direct import direct_paths
from gssproxy_py.gss.engine import GssEngine
from gssproxy_py.gss.inline import Continuation, Steps, run_to_end
from gssproxy_py.gss.namespaced import NamespacedCalls
from gssproxy_py.gss.pkinit_creds import TgtSource
from gssproxy_py.gss.procedures import PROCEDURES, GssProcedure
from gssproxy_py.gss.status import (
    EACCES,
    GSS_S_NO_CRED,
    GssFailure,
    status_for_exception,
)
from gssproxy_py.netns.executors import NetnsExecutors
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM, GSSPROXYVERS
from gssproxy_py.rpc.dispatch import CallInfo, Handler, ImmediateHandler, Pending, ProgramService
from gssproxy_py.vocab import oids

__all__ = ["gss_proxy_service"]


def _closer(engine: GssEngine, namespaced: NamespacedCalls) -> Callable[[], None]:
    def close() -> None:
        engine.close()
        namespaced.close()

    return close


def _refusal(proc: GssProcedure[Any, Any], call: CallInfo) -> Any:
    """The answer to a caller that matched no service."""
    reason = call.no_match_reason or "no matching service"
    failure = GssFailure(GSS_S_NO_CRED, EACCES, reason, explanation=reason)
    return proc.failure(status_for_exception(failure, oids.KRB5, call.log, call=call))


def _failed(proc: GssProcedure[Any, Any], exc: Exception, call: CallInfo) -> Any:
    """The one catch-all: everything raised in a call becomes a GSS status."""
    return proc.failure(status_for_exception(exc, oids.KRB5, call.log, call=call))


def _request(call: CallInfo, service: Service, *, inline: bool) -> Request:
    return Request(
        service=service,
        uid=call.peer.uid,
        config=call.config,
        log=call.log,
        steps=Steps(inline=inline),
    )


def _handler(
    engine: GssEngine, namespaced: NamespacedCalls, proc: GssProcedure[Any, Any]
) -> Handler:
    """The threaded handler: the whole call runs on an executor thread."""
    handler = proc.handler

    async def handle(call: CallInfo, arg: Any) -> Any:
        if call.service is None:
            return _refusal(proc, call)
        req = _request(call, call.service, inline=False)
        try:
            executor = namespaced.executor_for(call.service, call.peer, call.config)
            if executor is not None:
                call.log.debug(
                    "running in the network namespace of inode %s", call.peer.netns_inode
                )
            return await engine.run(
                call.config,
                call.service,
                lambda: run_to_end(handler(engine, req, arg)),
                executor,
            )
        except Exception as exc:
            return _failed(proc, exc, call)

    handle.__name__ = f"gssx_{proc.number}"
    return handle


def _immediate(
    engine: GssEngine, proc: GssProcedure[Any, Any], threaded: Handler
) -> ImmediateHandler:
    """The immediate handler of an inline row: started on the event loop, it
    returns the result, or `Pending` on the rest of the call in a thread."""
    handler = proc.handler
    inline = engine.inline

    def handle_inline(call: CallInfo, arg: Any) -> Any:
        service = call.service
        if service is None:
            return _refusal(proc, call)
        if not inline.allowed(service):
            return Pending(lambda: threaded(call, arg))
        req = _request(call, service, inline=True)
        try:
            outcome = inline.start(handler(engine, req, arg), req.steps, service, call.log)
        except Exception as exc:  # as in the threaded handler
            return _failed(proc, exc, call)
        if isinstance(outcome, Continuation):
            return Pending(lambda: _continue(engine, proc, outcome, call))
        return outcome

    handle_inline.__name__ = f"gssx_{proc.number}_inline"
    return handle_inline


async def _continue(
    engine: GssEngine, proc: GssProcedure[Any, Any], rest: Continuation[Any], call: CallInfo
) -> Any:
    """The rest of a call that stopped at a wait point, on the engine's threads."""
    call.log.debug("continuing in a thread: %s", rest.reason)
    try:
        assert call.service is not None  # only a matched call continues
        return await engine.run(call.config, call.service, rest.finish)
    except Exception as exc:
        return _failed(proc, exc, call)


GSSPROXY_PROGRAM_NAMES: Mapping[int, str] = {
    number: proc.name for number, proc in GSSPROXY_PROGRAM.versions[GSSPROXYVERS].procedures.items()
}


def gss_proxy_service(
    config: Config,
    *,
    tgt_source: TgtSource | None = None,
    netns_executors: NetnsExecutors | None = None,
) -> ProgramService:
    """Build program 400112 for the server (called once at startup);
    `tgt_source` gets TGTs by PKINIT for services with a token key;
    `netns_executors` (the server's) run namespaced services' calls."""
    # The daemon must never route its own GSSAPI calls back into a proxy
    # (gssproxy sets the same); libgssapi reads this when it loads mechs.
    os.environ["GSS_USE_PROXY"] = "NO"
    engine = GssEngine(config)
    engine.credentials.pkinit.source = tgt_source
    namespaced = NamespacedCalls(netns_executors)
    handlers: dict[tuple[int, int], Handler] = {}
    immediate: dict[tuple[int, int], ImmediateHandler] = {}
    for proc in PROCEDURES:
        key = (GSSPROXYVERS, proc.number)
        handlers[key] = _handler(engine, namespaced, proc)
        if proc.inline:
            immediate[key] = _immediate(engine, proc, handlers[key])
    return ProgramService(
        program=GSSPROXY_PROGRAM,
        handlers=handlers,
        immediate=immediate,
        direct=direct_paths(engine, GSSPROXYVERS),
        reload=engine.reload,
        close=_closer(engine, namespaced),
    )

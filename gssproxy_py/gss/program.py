"""Program 400112 for the server: `gss_proxy_service(config) -> ProgramService`.

The server calls `gss_proxy_service` once at startup. Every handler reads
the configuration in force from its `CallInfo` (so SIGHUP reloads apply to
the next call). A procedure of `INLINE_PROCEDURES` has an immediate handler
(`rpc.dispatch`): for a service the engine allows inline
(`GssEngine.inline_allowed`) it is first tried on the event-loop thread,
without a task; it gives up with `WouldWaitError` before anything that could
wait for a KDC, DNS or NSS, and then, like every other call, runs in the gss
engine's executor, one hop per call. A `Deferred` result finishes in the
executor.
The event loop never waits on KDCs or NSS; it does do local file I/O that
a keytab accept needs (the keytab and MIT's replay cache, see
docs/PERFORMANCE.md).

Rules applied here for every procedure:

* a caller that matched no service (`CallInfo.service is None`) gets
  GSS_S_NO_CRED with minor EACCES and `no_match_reason` as the minor string
  (logged); NO_CRED because the caller is entitled to no credentials at all,
  which is also what the interposer reports when the C daemon drops such a
  connection;
* any exception becomes a status through `status.status_for_exception` (the
  one mapping); the server never sees a GSS error as an exception;
* `status.mech` is always an OID from INDICATE_MECHS (krb5 for failures),
  because the interposer rejects replies whose mech it does not know.

The `ProgramService` sets both hooks of the contract: `close` stops the
worker threads at shutdown; `reload` resizes the executor to the new
`worker_threads` and drops cached credentials (and remembered PKINIT
failures).

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

from gssproxy_py.config.model import Config
from gssproxy_py.gss import oids
from gssproxy_py.gss.engine import Deferred, GssEngine, Request, WouldWaitError
from gssproxy_py.gss.namespaced import NamespacedCalls
from gssproxy_py.gss.pkinit_creds import TgtSource
from gssproxy_py.gss.procedures import INLINE_PROCEDURES, PROCEDURES, failure_result
from gssproxy_py.gss.status import (
    EACCES,
    GSS_S_NO_CRED,
    GssFailure,
    status_for_exception,
    status_from_failure,
)
from gssproxy_py.netns.executors import NetnsExecutors
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM, GSSPROXYVERS
from gssproxy_py.rpc.dispatch import CallInfo, Handler, ImmediateHandler, Pending, ProgramService

__all__ = ["gss_proxy_service"]


def _reloaded(engine: GssEngine) -> Callable[[Config], None]:
    def reload(config: Config) -> None:
        # Resize the executor now and forget credentials acquired under the
        # old service definitions (their keys would never match again anyway).
        engine.executor_for(config)
        engine.acquired.clear()
        engine.pool.clear()
        engine.pkinit.forget()
        engine.forget_inline()

    return reload


def _closer(engine: GssEngine, namespaced: NamespacedCalls) -> Callable[[], None]:
    def close() -> None:
        engine.close()
        namespaced.close()

    return close


def _refusal(procedure: int, call: CallInfo) -> Any:
    """The answer to a caller that matched no service."""
    reason = call.no_match_reason or "no matching service"
    call.log.warning("%s refused: %s", GSSPROXY_PROGRAM_NAMES[procedure], reason)
    failure = GssFailure(GSS_S_NO_CRED, EACCES, reason)
    return failure_result(procedure, status_from_failure(failure, oids.KRB5))


def _handler(
    engine: GssEngine, namespaced: NamespacedCalls, procedure: int, fn: Callable[..., Any]
) -> Handler:
    """The threaded handler: the call runs in an executor thread."""

    async def handle(call: CallInfo, arg: Any) -> Any:
        if call.service is None:
            return _refusal(procedure, call)
        req = Request(service=call.service, uid=call.peer.uid, config=call.config, log=call.log)
        try:
            executor = namespaced.executor_for(call.service, call.peer, call.config)
            if executor is None:
                return await engine.run(call.config, fn, engine, req, arg)
            call.log.debug("running in the network namespace of inode %s", call.peer.netns_inode)
            return await namespaced.run(executor, fn, engine, req, arg)
        except Exception as exc:  # the one catch-all: everything becomes a GSS status
            return failure_result(procedure, status_for_exception(exc, oids.KRB5, call.log))

    handle.__name__ = f"gssx_{procedure}"
    return handle


def _immediate(
    engine: GssEngine, procedure: int, fn: Callable[..., Any], threaded: Handler
) -> ImmediateHandler:
    """The immediate handler of an `INLINE_PROCEDURES` procedure: tried on
    the event loop, `Pending` on the threaded handler when it would wait."""

    def handle_inline(call: CallInfo, arg: Any) -> Any:
        service = call.service
        if service is None:
            return _refusal(procedure, call)
        if not engine.inline_allowed(service):
            return Pending(lambda: threaded(call, arg))
        req = Request(
            service=service, uid=call.peer.uid, config=call.config, log=call.log, inline=True
        )
        try:
            result = engine.run_inline(fn, req, arg)
        except WouldWaitError:
            return Pending(lambda: threaded(call, arg))
        except Exception as exc:  # as in the threaded handler
            return failure_result(procedure, status_for_exception(exc, oids.KRB5, call.log))
        if isinstance(result, Deferred):
            finish = result.finish

            async def finish_in_thread() -> Any:
                try:
                    return await engine.run(call.config, finish)
                except Exception as exc:
                    return failure_result(procedure, status_for_exception(exc, oids.KRB5, call.log))

            return Pending(finish_in_thread)
        return result

    handle_inline.__name__ = f"gssx_{procedure}_inline"
    return handle_inline


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
    engine.pkinit.source = tgt_source
    namespaced = NamespacedCalls(netns_executors)
    handlers = {
        (GSSPROXYVERS, number): _handler(engine, namespaced, number, fn)  # type: ignore[arg-type]
        for number, fn in PROCEDURES.items()
    }
    immediate = {
        key: _immediate(engine, key[1], PROCEDURES[key[1]], handler)  # type: ignore[arg-type]
        for key, handler in handlers.items()
        if key[1] in INLINE_PROCEDURES
    }
    return ProgramService(
        program=GSSPROXY_PROGRAM,
        handlers=handlers,
        immediate=immediate,
        reload=_reloaded(engine),
        close=_closer(engine, namespaced),
    )

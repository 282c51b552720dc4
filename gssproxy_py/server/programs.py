"""Which RPC programs the daemon serves, and where their handlers come from.

Program 400112 (GSS-Proxy) is built by `gssproxy_py.gss.program.gss_proxy_service`,
called once at start-up with the configuration then in force (a factory
taking no argument is called without one). It is imported here, inside a
function, so that the server starts even when the GSS layer is missing or
broken: the failure is logged as an error, and program 400112 is then served
from its generated table alone. Every procedure is answered PROC_UNAVAIL
(GARBAGE_ARGS for malformed arguments) and NULL still succeeds, so the
kernel's connect-time ping and the RPC error replies keep working.

To serve another program, add its factory to `load_programs`, or pass a
`ProgramService` to `gssproxy_py.server.daemon.serve(programs=...)`.
"""

from __future__ import annotations

import importlib
import inspect
import logging

from gssproxy_py.config.model import Config
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM
from gssproxy_py.rpc.dispatch import ProgramService

_log = logging.getLogger(__name__)

GSS_PROXY_MODULE = "gssproxy_py.gss.program"
GSS_PROXY_FACTORY = "gss_proxy_service"


def _unwired_gss_proxy() -> ProgramService:
    return ProgramService(program=GSSPROXY_PROGRAM, handlers={})


def gss_proxy_program(config: Config) -> ProgramService:
    """Program 400112 with the GSS layer's handlers, or without any (logged)."""
    where = f"{GSS_PROXY_MODULE}.{GSS_PROXY_FACTORY}"
    try:
        module = importlib.import_module(GSS_PROXY_MODULE)
        factory = getattr(module, GSS_PROXY_FACTORY)
    except Exception as exc:
        _log.error(
            "GSS-Proxy handlers unavailable (%s: %s): program %d will answer "
            "PROC_UNAVAIL to every procedure",
            where,
            exc,
            GSSPROXY_PROGRAM.number,
        )
        return _unwired_gss_proxy()
    try:
        takes_config = bool(inspect.signature(factory).parameters)
        service = factory(config) if takes_config else factory()
    except Exception:
        _log.exception(
            "%s failed: program %d will answer PROC_UNAVAIL to every procedure",
            where,
            GSSPROXY_PROGRAM.number,
        )
        return _unwired_gss_proxy()
    if not isinstance(service, ProgramService) or service.program.number != GSSPROXY_PROGRAM.number:
        _log.error(
            "%s returned %r, not a ProgramService for program %d; serving none of its handlers",
            where,
            type(service).__name__,
            GSSPROXY_PROGRAM.number,
        )
        return _unwired_gss_proxy()
    return service


def load_programs(config: Config) -> dict[int, ProgramService]:
    """Every program the daemon serves, by program number."""
    gss = gss_proxy_program(config)
    return {gss.program.number: gss}

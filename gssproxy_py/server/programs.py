"""Which RPC programs the daemon serves, and where their handlers come from.

Program 400112 (GSS-Proxy) is built by `gssproxy_py.gss.program.gss_proxy_service`
and program 0x2F5E5001 (token signing) by
`gssproxy_py.pkcs11.program.token_sign_service`, each called once at start-up
with the configuration then in force (a factory
taking no argument is called without one). It is imported here, inside a
function, so that the server starts even when the GSS layer is missing or
broken: the failure is logged as an error, and program 400112 is then served
from its generated table alone. Every procedure is answered PROC_UNAVAIL
(GARBAGE_ARGS for malformed arguments) and NULL still succeeds, so the
kernel's connect-time ping and the RPC error replies keep working.

To serve another program, add it to `PROGRAMS`, or pass a
`ProgramService` to `gssproxy_py.server.daemon.serve(programs=...)`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass

from gssproxy_py.config.model import Config
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM
from gssproxy_py.proto.token_sign import TOKEN_SIGN_PROGRAM
from gssproxy_py.rpc.dispatch import ProgramService
from gssproxy_py.xdr.program import Program

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProgramSource:
    """Where a program's handlers come from: a factory `module.name(config)`."""

    table: Program
    module: str
    factory: str


#: Every program the daemon serves. Each is imported lazily and guarded, so one
#: broken layer cannot take the others (or the RPC error replies) down.
PROGRAMS: tuple[ProgramSource, ...] = (
    ProgramSource(GSSPROXY_PROGRAM, "gssproxy_py.gss.program", "gss_proxy_service"),
    ProgramSource(TOKEN_SIGN_PROGRAM, "gssproxy_py.pkcs11.program", "token_sign_service"),
)


def _unwired(table: Program) -> ProgramService:
    return ProgramService(program=table, handlers={})


def load_program(source: ProgramSource, config: Config) -> ProgramService:
    """The program with its handlers, or without any (and the reason logged)."""
    table = source.table
    where = f"{source.module}.{source.factory}"
    try:
        module = importlib.import_module(source.module)
        factory = getattr(module, source.factory)
    except Exception as exc:
        _log.error(
            "handlers unavailable (%s: %s): program %d will answer PROC_UNAVAIL to every procedure",
            where,
            exc,
            table.number,
        )
        return _unwired(table)
    try:
        takes_config = bool(inspect.signature(factory).parameters)
        service = factory(config) if takes_config else factory()
    except Exception:
        _log.exception(
            "%s failed: program %d will answer PROC_UNAVAIL to every procedure",
            where,
            table.number,
        )
        return _unwired(table)
    if not isinstance(service, ProgramService) or service.program.number != table.number:
        _log.error(
            "%s returned %r, not a ProgramService for program %d; serving none of its handlers",
            where,
            type(service).__name__,
            table.number,
        )
        return _unwired(table)
    return service


def gss_proxy_program(config: Config) -> ProgramService:
    """Program 400112 with the GSS layer's handlers, or without any (logged)."""
    return load_program(PROGRAMS[0], config)


def load_programs(config: Config) -> dict[int, ProgramService]:
    """Every program the daemon serves, by program number."""
    return {src.table.number: load_program(src, config) for src in PROGRAMS}

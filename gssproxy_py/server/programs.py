"""Which RPC programs the daemon serves, and where their handlers come from.

Program 400112 (GSS-Proxy) is built by `gssproxy_py.gss.program.gss_proxy_service`
and program 0x2F5E5001 (token signing) by
`gssproxy_py.pkcs11.program.build_token_sign`, each called once at start-up
with the configuration then in force (a factory
taking no argument is called without one). Each is imported here, inside a
function, so that the server starts even when a layer is missing or
broken: the failure is logged as an error, and that program is then served
from its generated table alone. Every procedure is answered PROC_UNAVAIL
(GARBAGE_ARGS for malformed arguments) and NULL still succeeds, so the
kernel's connect-time ping and the RPC error replies keep working.

The two programs share one thing: the token layer's backend, which is also
how the GSS layer gets TGTs by PKINIT for services whose key sits on a token
(`gssproxy_py.gss.pkinit_creds.TgtSource`). So the TOKEN_SIGN program is
built first, by `build_token_sign(config) -> (service, backend)` (a source
with `provides`), and the backend is passed to `gss_proxy_service(config,
tgt_source=backend)` (a source with `needs`). The guards stay independent:
if the token layer fails to load, program 400112 is built without a
`tgt_source` (PKINIT requests then fail with a clear status) and everything
else works.

The server's namespace executors (`gssproxy_py.netns.NetnsExecutors`,
shared with the kernel upcall enabler) are a part the same way, given to
`load_programs(config, netns_executors=...)` rather than provided by a
source; program 400112 runs namespaced services' calls on them.

To serve another program, add it to `PROGRAMS`, or pass a
`ProgramService` to `gssproxy_py.server.daemon.serve(programs=...)`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any

from gssproxy_py.config.model import Config
from gssproxy_py.netns.executors import NetnsExecutors
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM
from gssproxy_py.proto.token_sign import TOKEN_SIGN_PROGRAM
from gssproxy_py.rpc.dispatch import ProgramService
from gssproxy_py.xdr.program import Program

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProgramSource:
    """Where a program's handlers come from: a factory `module.name(config)`.

    With `provides`, the factory returns `(service, part)` and `part` is
    offered to the sources after it under that name; each name in `needs` is
    passed to the factory as a keyword argument when an earlier source
    provided it (and left out when that source failed).
    """

    table: Program
    module: str
    factory: str
    provides: str | None = None
    needs: tuple[str, ...] = ()


#: Every program the daemon serves, in build order. Each is imported lazily
#: and guarded, so one broken layer cannot take the others (or the RPC error
#: replies) down.
PROGRAMS: tuple[ProgramSource, ...] = (
    ProgramSource(
        TOKEN_SIGN_PROGRAM, "gssproxy_py.pkcs11.program", "build_token_sign", provides="tgt_source"
    ),
    ProgramSource(
        GSSPROXY_PROGRAM,
        "gssproxy_py.gss.program",
        "gss_proxy_service",
        needs=("tgt_source", "netns_executors"),
    ),
)


def _unwired(table: Program) -> ProgramService:
    return ProgramService(program=table, handlers={})


def load_program(
    source: ProgramSource, config: Config, parts: dict[str, Any] | None = None
) -> ProgramService:
    """The program with its handlers, or without any (and the reason logged).

    `parts` holds what earlier sources provided; this source's own part is
    added to it when it loads."""
    parts = {} if parts is None else parts
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
        shared = {name: parts[name] for name in source.needs if name in parts}
        made = factory(config, **shared) if takes_config else factory()
        part: Any = None
        if source.provides is not None:
            made, part = made
        service = made
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
    if source.provides is not None:
        parts[source.provides] = part
    return service


def gss_proxy_program(config: Config) -> ProgramService:
    """Program 400112 with the GSS layer's handlers, or without any (logged).
    Built alone, so without the token layer's PKINIT."""
    (source,) = (s for s in PROGRAMS if s.table.number == GSSPROXY_PROGRAM.number)
    return load_program(source, config)


def load_programs(
    config: Config, *, netns_executors: NetnsExecutors | None = None
) -> dict[int, ProgramService]:
    """Every program the daemon serves, by program number; `netns_executors`
    (the server's, see `gssproxy_py.netns`) go to the programs that need them."""
    parts: dict[str, Any] = {}
    if netns_executors is not None:
        parts["netns_executors"] = netns_executors
    return {src.table.number: load_program(src, config, parts) for src in PROGRAMS}

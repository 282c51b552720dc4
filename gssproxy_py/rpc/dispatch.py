"""The contract between the RPC server and the programs it serves.

A program (400112 for GSS-Proxy, our own for PKCS#11 signing) registers a
`ProgramService`: its generated `Program` table plus one async handler per
procedure. The server decodes the call with the table, matches the caller to a
configured service, builds a `CallInfo`, awaits the handler and encodes what it
returns. Handlers never see sockets, and the server never sees GSSAPI.

Rules that live here, so that every program gets them the same way:
* procedure 0 (NULL) needs no handler: the server answers it with SUCCESS;
* a procedure in the table without a handler is answered PROC_UNAVAIL;
* a handler that raises anything is answered SYSTEM_ERR (and logged by the
  server with the xid); GSS-level failures are *results*, built by the
  program's own status module, never exceptions that reach the server.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gssproxy_py.config.model import Config, Service
from gssproxy_py.config.peer import Peer
from gssproxy_py.xdr.program import Procedure, Program


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Everything a handler may know about one call. Identity comes from the
    kernel (SO_PEERCRED, /proc), never from the message."""

    xid: int
    program: int
    version: int
    procedure: int
    peer: Peer
    #: the listening socket the connection came in on (its configured path)
    socket_path: str
    #: the configured service this caller matched, or None if none did
    service: Service | None
    #: why nothing matched, in words for the log and the client (None if matched)
    no_match_reason: str | None
    #: the configuration in force when the call was dispatched
    config: Config
    #: a logger adapter that prefixes every line with the connection and xid
    log: logging.LoggerAdapter[logging.Logger]


#: An async procedure handler: typed argument in, typed result out.
Handler = Callable[[CallInfo, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ProgramService:
    """One RPC program as the server serves it."""

    program: Program
    handlers: Mapping[tuple[int, int], Handler]  # (version, procedure) → handler

    def procedure(self, version: int, number: int) -> Procedure | None:
        v = self.program.versions.get(version)
        return None if v is None else v.procedures.get(number)

    def handler(self, version: int, number: int) -> Handler | None:
        return self.handlers.get((version, number))

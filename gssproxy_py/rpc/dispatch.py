"""The contract between the RPC server and the programs it serves.

A program (400112 for GSS-Proxy, our own for PKCS#11 signing) registers a
`ProgramService`: its generated `Program` table plus one async handler per
procedure. The server decodes the call with the table, matches the caller to a
configured service, builds a `CallInfo`, awaits the handler and encodes what it
returns. Handlers never see sockets, and the server never sees GSSAPI.

Rules that live here, so that every program gets them the same way:
* procedure 0 (NULL) needs no handler: the server answers it with SUCCESS;
* a procedure in the table without a handler is answered PROC_UNAVAIL (once
  its arguments decoded; malformed ones are GARBAGE_ARGS either way);
* a handler that raises anything, or does not finish within the configured
  `call_timeout`, is answered SYSTEM_ERR (and logged by the server with the
  xid); GSS-level failures are *results*, built by the program's own status
  module, never exceptions that reach the server;
* a handler runs whether or not the caller matched a configured service:
  with `service=None` it must refuse the call in its own protocol, giving
  `no_match_reason` (gssproxy closes the connection instead);
* handlers run on the event loop and must not block it: blocking work goes
  to the program's own executor (`loop.run_in_executor`);
* a procedure may also have a *direct path* (`DirectPath`): its common
  calls parsed from the argument bytes and answered with result bytes,
  byte for byte the generic reply, for a matched caller when debug level 2
  is off; any other call, and any call its `run` declines, takes the
  generic path below with the same arguments;
* a procedure may also have an *immediate* handler: a plain function the
  server calls first, on the event loop, without making a task. It returns
  the result, or `Pending` when the call has to continue asynchronously
  (the server then awaits `Pending.run` under the deadline, exactly as it
  would a handler). It must not block and is not under the deadline; a
  program uses it for calls that finish in microseconds, so they do not pay
  for a task, a timer and two loop iterations.

Logging, the same for every layer: `log.info` is debug level 1 (one line per
call or event), `log.debug` is level 2 (decoded structures without secret
bytes), and `log.log(SECRETS_LOG_LEVEL, ...)` is level 3, the only level at
which tokens, keys, credential handles or exported contexts may be logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, final

from gssproxy_py.config.model import Config, Service
from gssproxy_py.config.peer import Peer
from gssproxy_py.xdr.program import Procedure, Program


@final
class CallInfo:
    """Everything a handler may know about one call. Identity comes from the
    kernel (SO_PEERCRED, /proc), never from the message.

    Made for every call: a class with `Final` attributes rather than a
    frozen dataclass, whose `__init__` mypyc leaves interpreted (one
    `object.__setattr__` per field, ~15 times the cost: docs/PERFORMANCE.md).
    Read-only all the same: mypy refuses an assignment, and the compiled
    class raises AttributeError."""

    __slots__ = (
        "config",
        "log",
        "no_match_reason",
        "peer",
        "procedure",
        "program",
        "service",
        "socket_path",
        "version",
        "xid",
    )

    def __init__(
        self,
        xid: int,
        program: int,
        version: int,
        procedure: int,
        peer: Peer,
        socket_path: str,
        service: Service | None,
        no_match_reason: str | None,
        config: Config,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.xid: Final = xid
        self.program: Final = program
        self.version: Final = version
        self.procedure: Final = procedure
        self.peer: Final = peer
        #: the listening socket the connection came in on (its configured path)
        self.socket_path: Final = socket_path
        #: the configured service this caller matched, or None if none did
        self.service: Final = service
        #: why nothing matched, in words for the log and the client (None if matched)
        self.no_match_reason: Final = no_match_reason
        #: the configuration in force when the call was dispatched
        self.config: Final = config
        #: a logger adapter that prefixes every line with the connection and xid
        self.log: Final = log


#: The logging level of messages that may carry secrets (debug level 3 only).
SECRETS_LOG_LEVEL = 5

#: An async procedure handler: typed argument in, typed result out.
Handler = Callable[[CallInfo, Any], Awaitable[Any]]


@final
class Pending:
    """What an immediate handler or a direct path returns when the call
    cannot finish now: `run()` is awaited for the result, under the call's
    deadline. Read-only, made per such call (see `CallInfo`)."""

    __slots__ = ("run",)

    def __init__(self, run: Callable[[], Awaitable[Any]]) -> None:
        self.run: Final = run


#: An immediate handler: the typed result now, or `Pending`.
ImmediateHandler = Callable[[CallInfo, Any], Any]


@final
class DirectResult:
    """What a direct path served: the encoded result and its outcome code
    (`admin.stats.outcome_code` of the result it stands for). Read-only,
    made per call (see `CallInfo`)."""

    __slots__ = ("code", "encoded")

    def __init__(self, encoded: bytes, code: int) -> None:
        self.encoded: Final = encoded
        self.code: Final = code


@dataclass(frozen=True, slots=True)
class DirectPath:
    """A procedure's direct path: its most frequent calls served from the
    argument bytes to the result bytes, without the typed argument and
    result objects.

    `parse` reads the arguments of a call of the shape it serves, or
    returns None (the call then takes the generic path); it never accepts
    bytes the procedure's generated decoder refuses. `run` serves the
    parsed call of a matched caller on the event loop: the encoded result
    (the procedure's result type, byte for byte what the generic path
    would send); `Pending` when the rest must wait (its `run` gives the
    `DirectResult`, under the call's deadline, as for an immediate
    handler); or None when it cannot serve this one without waiting or
    without its generic objects, having done nothing that the generic path
    would then do twice.
    """

    parse: Callable[[memoryview | bytes], Any]
    run: Callable[[CallInfo, Any], DirectResult | Pending | None]


@dataclass(frozen=True, slots=True)
class ProgramService:
    """One RPC program as the server serves it.

    `reload` is called after a SIGHUP installed a new configuration (before
    the next call is dispatched with it); `close` once at shutdown, after the
    last call finished, to stop the program's executors. Both are optional
    and must not raise.
    """

    program: Program
    handlers: Mapping[tuple[int, int], Handler]  # (version, procedure) → handler
    reload: Callable[[Config], None] | None = None
    close: Callable[[], None] | None = None
    #: (version, procedure) → immediate handler, tried before `handlers`
    immediate: Mapping[tuple[int, int], ImmediateHandler] = field(default_factory=dict)
    #: (version, procedure) → direct path, tried before both (`DirectPath`)
    direct: Mapping[tuple[int, int], DirectPath] = field(default_factory=dict)

    def procedure(self, version: int, number: int) -> Procedure | None:
        v = self.program.versions.get(version)
        return None if v is None else v.procedures.get(number)

    def handler(self, version: int, number: int) -> Handler | None:
        return self.handlers.get((version, number))

    def immediate_handler(self, version: int, number: int) -> ImmediateHandler | None:
        return self.immediate.get((version, number))

    def direct_path(self, version: int, number: int) -> DirectPath | None:
        return self.direct.get((version, number)) if self.direct else None

"""Answering one routed call: service matching, the handler under its
deadline, the encoded reply.

`CallStarter.start_call` (the daemon's, which sets `config` on reload)
matches the caller and tries the procedure's immediate handler
(`rpc.dispatch`), if the program has one, right away on the event loop; it
returns the reply bytes when that finished the call, else a coroutine that
the connection runs as a task: the (async) handler or the immediate
handler's `Pending` continuation, under the configured `call_timeout`.
Either way every failure becomes SYSTEM_ERR, logged with the connection and
xid, so a connection only ever gets bytes to send. A call a program's direct
path parsed (`rpc.dispatch.DirectPath`) is given to it first, for a matched
caller below debug level 2; what it declines is decoded and started as
above; the counters count the calls it served (`CallStats.direct`).

Every call that ends is recorded in the starter's `counters`
(`admin.stats`, read by `gssproxy-py-ctl status`): two clock reads and a
few integer increments on the loop thread, here and nowhere else.

Which service a connection's calls match depends only on the connection's
identity, which is fixed, and on the configuration in force, unless some
service is restricted to named network namespaces (those come and go, so
their inodes are read per call). The connection's `MatchMemo` keeps its
match until the configuration changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gssproxy_py.admin.stats import SYSTEM_ERR_CODE, CallCounters, CallStats, outcome_code
from gssproxy_py.config.match import match_or_explain
from gssproxy_py.config.model import Config, Service
from gssproxy_py.errors import XdrEncodeError
from gssproxy_py.netns.errors import NetnsError
from gssproxy_py.netns.named import NETNS_DIR, configured_names, inode_map
from gssproxy_py.rpc.dispatch import CallInfo, DirectResult, Pending
from gssproxy_py.rpc.messages import (
    OversizedReplyError,
    Routed,
    encode_reply,
    encoded_reply,
    generic_args,
    reply_system_err,
)
from gssproxy_py.rpc.redact import describe
from gssproxy_py.server.connection import ConnectionInfo

#: Where `ip netns` keeps named network namespaces (for services' `netns`).
NETNS_RUN_DIR = NETNS_DIR

_log = logging.getLogger(__name__)


def netns_inodes(config: Config) -> dict[str, int] | None:
    """Inodes of the named namespaces services restrict themselves to, read
    per call since namespaces come and go; None when no service uses any."""
    names = configured_names(config.services)
    if not names:
        return None
    # A namespace that does not exist matches nobody.
    try:
        return inode_map(names, NETNS_RUN_DIR)
    except NetnsError as exc:
        # Not even ENOENT (e.g. /run/netns unreadable): no namespaced
        # service can match, which is the safe side.
        _log.error("%s; services restricted to a network namespace serve nobody", exc)
        return {}


def _match(
    config: Config,
    conn: ConnectionInfo,
    *,
    default_socket: str,
    selinux_enabled: bool,
) -> tuple[Service | None, str | None]:
    """The service that serves this connection now, or None and why not."""
    memo = conn.match_memo
    if memo.config is config and memo.fixed:
        return memo.service, memo.reason
    netns = netns_inodes(config)
    service, reason = match_or_explain(
        config,
        conn.peer,
        conn.socket_path,
        default_socket=default_socket,
        selinux_enabled=selinux_enabled,
        netns_inodes=netns,
    )
    memo.config = config
    memo.fixed = netns is None
    memo.service = service
    memo.reason = reason
    return service, reason


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """The log of one call: every line starts with `[conn N xid X]`, as with
    `PrefixLog`, but the prefix is formatted only when a line is written
    (most calls write none at the default debug level)."""

    def __init__(self, logger: logging.Logger, conn: int, xid: int) -> None:
        # LoggerAdapter.__init__ only sets these two.
        self.logger = logger
        self.extra = None
        self.conn = conn
        self.xid = xid

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[conn {self.conn} xid {self.xid:#010x}] {msg}", kwargs


class CallStarter:
    """Starts every call against the configuration in force (`config`)."""

    __slots__ = ("config", "counters", "default_socket", "selinux_enabled")

    def __init__(
        self,
        config: Config,
        *,
        default_socket: str,
        selinux_enabled: bool,
        counters: CallCounters | None = None,
    ) -> None:
        self.config = config
        self.default_socket = default_socket
        self.selinux_enabled = selinux_enabled
        self.counters = counters if counters is not None else CallCounters()

    def start_call(
        self, conn: ConnectionInfo, routed: Routed
    ) -> bytes | Coroutine[Any, Any, bytes]:
        """Match the caller to a service and start the call: the reply, when
        the immediate handler finished it, else the coroutine that finishes it."""
        started = time.perf_counter_ns()
        config = self.config
        call = routed.call
        name = routed.procedure.name
        log = CallLog(_log, conn.number, call.xid)
        service, reason = _match(
            config, conn, default_socket=self.default_socket, selinux_enabled=self.selinux_enabled
        )
        if service is None:
            # Why not is in the program's failure line: one line per refusal.
            log.info("%s: no service matched", name)
        else:
            log.info("%s: service '%s'", name, service.name)
        info = call_info(conn, routed, config, log, service=service, reason=reason)
        count = _Count(self.counters, info, name, started)
        if routed.direct is not None:
            # Direct only for a matched caller and without debug level 2
            # (whose lines describe the typed argument and result).
            if service is not None and not log.isEnabledFor(logging.DEBUG):
                served = _direct(info, routed, count)
                if served is not None:
                    return served
            routed = generic_args(routed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s arguments: %s", name, describe(routed.arg))
        immediate = routed.immediate
        if immediate is None:
            return finish_call(info, routed, lambda: routed.handler(info, routed.arg), count)
        try:
            result = immediate(info, routed.arg)
        except Exception:
            log.exception("%s failed; replying SYSTEM_ERR", name)
            count(SYSTEM_ERR_CODE)
            return reply_system_err(call.xid)
        if isinstance(result, Pending):
            return finish_call(info, routed, result.run, count)
        count(outcome_code(result))
        return _encode(info, routed, result)


def _direct(
    info: CallInfo, routed: Routed, count: _Count
) -> bytes | Coroutine[Any, Any, bytes] | None:
    """The reply of the procedure's direct path, or the coroutine that
    finishes it; None if it declined (the call then takes the generic path)."""
    assert routed.direct is not None
    try:
        served: DirectResult | Pending | None = routed.direct.run(info, routed.arg)
    except Exception:
        info.log.exception("%s failed; replying SYSTEM_ERR", routed.procedure.name)
        count(SYSTEM_ERR_CODE)
        return reply_system_err(info.xid)
    if served is None:
        return None
    if isinstance(served, Pending):
        return _finish_direct(info, routed, served, count)
    return _direct_reply(info, routed, served, count)


async def _finish_direct(info: CallInfo, routed: Routed, rest: Pending, count: _Count) -> bytes:
    """The reply of a direct path's `Pending` rest, under the call's deadline."""
    result = await _run(info, routed, rest.run)
    if isinstance(result, _SystemErr):
        count(SYSTEM_ERR_CODE)
        return result.reply
    served: DirectResult = result
    return _direct_reply(info, routed, served, count)


def _direct_reply(info: CallInfo, routed: Routed, served: DirectResult, count: _Count) -> bytes:
    count(served.code).direct += 1
    try:
        return encoded_reply(
            routed, served.encoded, max_record_size=info.config.globals.max_record_size
        )
    except OversizedReplyError as exc:
        info.log.error(
            "%s: result cannot be sent (%s); replying SYSTEM_ERR", routed.procedure.name, exc
        )
        return reply_system_err(info.xid)


def call_info(
    conn: ConnectionInfo,
    routed: Routed,
    config: Config,
    log: logging.LoggerAdapter[logging.Logger],
    *,
    service: Service | None = None,
    reason: str | None = None,
) -> CallInfo:
    """What a handler is told about this call (also for the admin socket's)."""
    call = routed.call
    return CallInfo(
        xid=call.xid,
        program=call.prog,
        version=call.vers,
        procedure=call.proc,
        peer=conn.peer,
        socket_path=conn.socket_path,
        service=service,
        no_match_reason=reason,
        config=config,
        log=log,
    )


class _Count:
    """Records one call in the counters when it ends."""

    __slots__ = ("counters", "procedure", "program", "service", "started")

    def __init__(
        self, counters: CallCounters, info: CallInfo, procedure: str, started: int
    ) -> None:
        self.counters = counters
        self.service = info.service.name if info.service is not None else ""
        self.program = info.program
        self.procedure = procedure
        self.started = started

    def __call__(self, code: int) -> CallStats:
        elapsed = time.perf_counter_ns() - self.started
        return self.counters.record(self.service, self.program, self.procedure, elapsed, code)


class _SystemErr:
    """The SYSTEM_ERR reply of a call whose handler failed (already logged)."""

    __slots__ = ("reply",)

    def __init__(self, reply: bytes) -> None:
        self.reply = reply


async def finish_call(
    info: CallInfo,
    routed: Routed,
    run: Callable[[], Awaitable[Any]],
    count: _Count | None = None,
) -> bytes:
    """The reply of `run()`'s result under the call's deadline (SYSTEM_ERR
    if it fails or times out); the call recorded by `count` if given."""
    result = await _run(info, routed, run)
    failed = isinstance(result, _SystemErr)
    if count is not None:
        count(SYSTEM_ERR_CODE if failed else outcome_code(result))
    return result.reply if failed else _encode(info, routed, result)


async def _run(info: CallInfo, routed: Routed, run: Callable[[], Awaitable[Any]]) -> Any:
    """The handler's result, or `_SystemErr` if it failed or timed out (logged)."""
    name = routed.procedure.name
    deadline = info.config.globals.call_timeout
    try:
        async with asyncio.timeout(deadline) as timer:
            result = await run()
    except TimeoutError:
        if timer.expired():
            info.log.error("%s: no result within %gs; replying SYSTEM_ERR", name, deadline)
        else:
            info.log.exception("%s failed; replying SYSTEM_ERR", name)
        return _SystemErr(reply_system_err(info.xid))
    except Exception:
        info.log.exception("%s failed; replying SYSTEM_ERR", name)
        return _SystemErr(reply_system_err(info.xid))
    return result


def _encode(info: CallInfo, routed: Routed, result: Any) -> bytes:
    if info.log.isEnabledFor(logging.DEBUG):
        info.log.debug("%s result: %s", routed.procedure.name, describe(result))
    try:
        return encode_reply(routed, result, max_record_size=info.config.globals.max_record_size)
    except (XdrEncodeError, OversizedReplyError) as exc:
        info.log.error(
            "%s: result cannot be sent (%s); replying SYSTEM_ERR", routed.procedure.name, exc
        )
        return reply_system_err(info.xid)

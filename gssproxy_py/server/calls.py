"""Answering one routed call: service matching, the handler under its
deadline, the encoded reply.

`answer_call` is the same whether the call runs in the process that owns the
connection (`GssProxyServer.run_call`) or in a worker process (`workers`):
both pass the configuration they hold and the connection's identity, and
get the reply bytes back; every failure becomes SYSTEM_ERR, logged with the
connection and xid.
"""

from __future__ import annotations

import asyncio
import logging

from gssproxy_py.config.match import explain_no_match, match_service
from gssproxy_py.config.model import Config
from gssproxy_py.errors import XdrEncodeError
from gssproxy_py.netns.errors import NetnsError
from gssproxy_py.netns.named import NETNS_DIR, configured_names, inode_map
from gssproxy_py.rpc.dispatch import CallInfo
from gssproxy_py.rpc.messages import ReplyTooLargeError, Routed, encode_reply, reply_system_err
from gssproxy_py.server.connection import ConnectionInfo, PrefixLog

#: Where `ip netns` keeps named network namespaces (for services' `netns`).
NETNS_RUN_DIR = NETNS_DIR

# The logger of the server module, so log lines keep the name they always had.
_log = logging.getLogger("gssproxy_py.server.daemon")


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


async def answer_call(
    config: Config,
    conn: ConnectionInfo,
    routed: Routed,
    *,
    default_socket: str,
    selinux_enabled: bool,
) -> bytes:
    """Match the caller to a service, run the handler under the deadline
    and encode its result; every failure becomes SYSTEM_ERR, logged."""
    call = routed.call
    name = routed.procedure.name
    log = PrefixLog(_log, f"[conn {conn.number} xid {call.xid:#010x}]")
    netns = netns_inodes(config)
    service = match_service(
        config,
        conn.peer,
        conn.socket_path,
        default_socket=default_socket,
        selinux_enabled=selinux_enabled,
        netns_inodes=netns,
    )
    reason: str | None = None
    if service is None:
        reason = explain_no_match(
            config,
            conn.peer,
            conn.socket_path,
            default_socket=default_socket,
            selinux_enabled=selinux_enabled,
            netns_inodes=netns,
        )
        log.info("%s: %s", name, reason)
    else:
        log.info("%s: service '%s'", name, service.name)
    info = CallInfo(
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
    deadline = config.globals.call_timeout
    try:
        async with asyncio.timeout(deadline) as timer:
            result = await routed.handler(info, routed.arg)
    except TimeoutError:
        if timer.expired():
            log.error("%s: no result within %gs; replying SYSTEM_ERR", name, deadline)
        else:
            log.exception("%s failed; replying SYSTEM_ERR", name)
        return reply_system_err(call.xid)
    except Exception:
        log.exception("%s failed; replying SYSTEM_ERR", name)
        return reply_system_err(call.xid)
    try:
        return encode_reply(routed, result, max_record_size=config.globals.max_record_size)
    except (XdrEncodeError, ReplyTooLargeError) as exc:
        log.error("%s: result cannot be sent (%s); replying SYSTEM_ERR", name, exc)
        return reply_system_err(call.xid)

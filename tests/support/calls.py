"""A `CallInfo` as the server builds one (`server/calls.CallStarter`), for
tests that call a program's handlers without a daemon: peer pid 1 running
/usr/bin/test as `uid` (and the same gid), on /test.sock, matched to the
service named, or to none with the reason the server would give."""

from __future__ import annotations

import logging

from gssproxy_py.config.model import Config
from gssproxy_py.config.peer import Peer
from gssproxy_py.proto.gss_proxy import GSSPROXY
from gssproxy_py.rpc.dispatch import CallInfo

__all__ = ["gss_call_info"]


def gss_call_info(
    config: Config,
    procedure: int,
    *,
    service: str | None,
    uid: int = 0,
    log: logging.LoggerAdapter[logging.Logger],
) -> CallInfo:
    """One GSS-Proxy call (program 400112, version 1) of `procedure` from
    `uid`, as `service` (None: no service matched)."""
    svc = config.service(service) if service else None
    return CallInfo(
        xid=1,
        program=GSSPROXY,
        version=1,
        procedure=procedure,
        peer=Peer(pid=1, uid=uid, gid=uid, program="/usr/bin/test"),
        socket_path="/test.sock",
        service=svc,
        no_match_reason=None if svc else f"no service for uid {uid}",
        config=config,
        log=log,
    )

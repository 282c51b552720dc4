"""Which RPC programs the daemon serves, wired by hand.

Program 0x2F5E5001 (token signing) is built first by
`pkcs11.program.build_token_sign`, which also returns its backend; that
backend is how the GSS layer gets TGTs by PKINIT for services whose key sits
on a token (`gss.pkinit_creds.TgtSource`), so it is handed to
`gss.program.gss_proxy_service` together with the server's namespace
executors (`netns.NetnsExecutors`, shared with the kernel upcall enabler).

Nothing here is guarded: a layer that fails to import or to build fails the
daemon's start-up, with the error in the log, instead of a daemon that
starts and answers PROC_UNAVAIL. To serve another program, build it here, or
pass a `ProgramService` to `gssproxy_py.server.daemon.serve(programs=...)`.
"""

from __future__ import annotations

from gssproxy_py.config.model import Config
from gssproxy_py.gss.program import gss_proxy_service
from gssproxy_py.netns.executors import NetnsExecutors
from gssproxy_py.pkcs11.program import build_token_sign
from gssproxy_py.rpc.dispatch import ProgramService

__all__ = ["load_programs"]


def load_programs(
    config: Config,
    *,
    netns_executors: NetnsExecutors | None = None,
    parts: dict[str, object] | None = None,
) -> dict[int, ProgramService]:
    """Every program the daemon serves, by program number. `parts`, if
    given, receives the token layer's backend as `token_backend` (the p11-kit
    listener serves the same tokens through it)."""
    token_sign, tgt_source = build_token_sign(config)
    if parts is not None:
        parts["token_backend"] = tgt_source
    gss = gss_proxy_service(config, tgt_source=tgt_source, netns_executors=netns_executors)
    return {program.program.number: program for program in (token_sign, gss)}

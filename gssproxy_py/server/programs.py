"""Which RPC programs the daemon serves, wired by hand.

Program 0x2F5E5001 (token signing) is built first by
`pkcs11.program.build_token_sign`, which also returns its backend; that
backend is how the GSS layer gets TGTs by PKINIT for services whose key sits
on a token (`gss.pkinit_creds.TgtSource`), so it is handed to
`gss.program.gss_proxy_service` together with the server's namespace
executors (`netns.NetnsExecutors`, shared with the kernel upcall enabler).
The same backend is returned next to the programs (`LoadedPrograms`): the
p11-kit listener serves its tokens and the admin socket lists its sessions.

Nothing here is guarded: a layer that fails to import or to build fails the
daemon's start-up, with the error in the log, instead of a daemon that
starts and answers PROC_UNAVAIL. To serve another program, build it here, or
pass a `ProgramService` to `gssproxy_py.server.daemon.serve(programs=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gssproxy_py.config.model import Config
from gssproxy_py.gss.program import gss_proxy_service
from gssproxy_py.netns.executors import NetnsExecutors
from gssproxy_py.pkcs11.program import TokenSignBackend, build_token_sign
from gssproxy_py.rpc.dispatch import ProgramService

__all__ = ["LoadedPrograms", "load_programs"]


@dataclass(frozen=True, slots=True)
class LoadedPrograms:
    """The programs by program number, and the TOKEN_SIGN backend behind
    program 0x2F5E5001 (the p11-kit listener and the admin socket use it)."""

    programs: dict[int, ProgramService]
    token_backend: TokenSignBackend


def load_programs(
    config: Config,
    *,
    netns_executors: NetnsExecutors | None = None,
) -> LoadedPrograms:
    """Every program the daemon serves, and the token layer's backend."""
    token_sign, token_backend = build_token_sign(config)
    gss = gss_proxy_service(config, tgt_source=token_backend, netns_executors=netns_executors)
    return LoadedPrograms(
        programs={program.program.number: program for program in (token_sign, gss)},
        token_backend=token_backend,
    )

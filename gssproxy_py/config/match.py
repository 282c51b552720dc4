"""Choosing the service that serves a peer (gssproxy's `gp_creds_match_conn`).

Pure: the caller supplies the peer, the socket it connected to, whether
SELinux is enabled and, for `netns` restrictions, the inodes of the named
network namespaces. The first service in configuration order whose rules all
hold wins:

1. `allow_any_uid`, or `euid` equals the peer's uid;
2. with SELinux enabled and a service `selinux_context`: the peer's context
   has the same user, role and type, and the same range if the service gives
   one;
3. a service `program` equals the peer's program (an unknown program never
   matches);
4. a service `socket` equals the connection's socket; a service without one
   only serves the default socket (on a p11-kit socket, `p11kit=True`: the
   service's `p11kit_socket` equals it; a service without one serves none);
5. (ours) a service `netns` list other than `all` contains a namespace whose
   inode is the peer's; names missing from `netns_inodes` never match.

`MatchMemo` is where a caller keeps one connection's match between calls
(see `server.calls`, which decides when it may be reused).

Socket paths on both sides go through `os.path.normpath` (string-only, no
symlink resolution), as the configured ones did at load time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gssproxy_py.config.model import Config, SelinuxContext, Service
from gssproxy_py.config.peer import Peer


class MatchMemo:
    """One connection's match under one configuration: `service` (or None
    and `reason`), reusable while `config` is still in force and `fixed`
    (no service of it names a network namespace)."""

    __slots__ = ("config", "fixed", "reason", "service")

    def __init__(self) -> None:
        self.config: Config | None = None
        self.fixed = False
        self.service: Service | None = None
        self.reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Where:
    """What a rule checks a service against, besides the peer."""

    socket_path: str
    default_socket: str
    selinux_enabled: bool
    netns_inodes: Mapping[str, int] | None
    p11kit: bool


def _uid_rule(service: Service, peer: Peer, where: _Where) -> str | None:
    if service.allow_any_uid or service.euid == peer.uid:
        return None
    return f"requires euid {service.euid}"


def _selinux_rule(service: Service, peer: Peer, where: _Where) -> str | None:
    if not where.selinux_enabled or service.selinux_context is None:
        return None
    ctx = SelinuxContext.parse(peer.selinux_context) if peer.selinux_context is not None else None
    if ctx is not None and service.selinux_context.admits(ctx):
        return None
    return f"requires selinux context {service.selinux_context}"


def _program_rule(service: Service, peer: Peer, where: _Where) -> str | None:
    if service.program is None or peer.program == service.program:
        return None
    return f"requires program {service.program}"


def _socket_rule(service: Service, peer: Peer, where: _Where) -> str | None:
    path = os.path.normpath(where.socket_path)
    if where.p11kit:
        if service.p11kit_socket is None:
            return "has no p11kit_socket"
        if path != service.p11kit_socket:
            return f"serves p11-kit on {service.p11kit_socket}"
        return None
    wanted = service.socket if service.socket is not None else where.default_socket
    if path != os.path.normpath(wanted):
        return f"listens on {wanted}"
    return None


def _netns_rule(service: Service, peer: Peer, where: _Where) -> str | None:
    if not service.netns or _in_netns(service, peer, where.netns_inodes):
        return None
    return f"requires network namespace {' or '.join(service.netns)}"


#: The rules in the order gssproxy checks them (netns, ours, last).
_RULES: Final = (_uid_rule, _selinux_rule, _program_rule, _socket_rule, _netns_rule)


def _failures(service: Service, peer: Peer, where: _Where, *, stop_at_first: bool) -> list[str]:
    """Why `service` does not serve `peer`; empty when it does.

    Reasons are phrased to follow "service 'NAME' ...".
    """
    reasons: list[str] = []
    for rule in _RULES:
        reason = rule(service, peer, where)
        if reason is not None:
            reasons.append(reason)
            if stop_at_first:
                break
    return reasons


def _in_netns(service: Service, peer: Peer, netns_inodes: Mapping[str, int] | None) -> bool:
    if peer.netns_inode is None or netns_inodes is None:
        return False
    return any(netns_inodes.get(name) == peer.netns_inode for name in service.netns)


def match_service(
    config: Config,
    peer: Peer,
    socket_path: str,
    *,
    default_socket: str,
    selinux_enabled: bool,
    netns_inodes: Mapping[str, int] | None = None,
    p11kit: bool = False,
) -> Service | None:
    """The first service that serves `peer` on `socket_path` (a p11-kit
    socket with `p11kit`), or None."""
    where = _Where(socket_path, default_socket, selinux_enabled, netns_inodes, p11kit)
    for service in config.services:
        if not _failures(service, peer, where, stop_at_first=True):
            return service
    return None


def first_failures(
    config: Config,
    peer: Peer,
    socket_path: str,
    *,
    default_socket: str,
    selinux_enabled: bool,
    netns_inodes: Mapping[str, int] | None = None,
) -> list[tuple[Service, str | None]]:
    """Every service in order with the first rule that excludes `peer` from
    it (None: its rules all hold), as `match_service` checks them; the first
    with None is the one `match_service` picks (`gssproxy-py-ctl explain`)."""
    out: list[tuple[Service, str | None]] = []
    where = _Where(socket_path, default_socket, selinux_enabled, netns_inodes, False)
    for service in config.services:
        reasons = _failures(service, peer, where, stop_at_first=True)
        out.append((service, reasons[0] if reasons else None))
    return out


def _describe_peer(peer: Peer, socket_path: str, selinux_enabled: bool) -> str:
    parts = [f"uid {peer.uid}", f"program {peer.program or '(unknown)'}"]
    if selinux_enabled and peer.selinux_context is not None:
        parts.append(f"selinux context {peer.selinux_context}")
    if peer.netns_inode is not None:
        parts.append(f"netns inode {peer.netns_inode}")
    return f"{', '.join(parts)} on {socket_path}"


def explain_no_match(
    config: Config,
    peer: Peer,
    socket_path: str,
    *,
    default_socket: str,
    selinux_enabled: bool,
    netns_inodes: Mapping[str, int] | None = None,
    p11kit: bool = False,
) -> str:
    """One sentence for the log saying why no service serves `peer`.

    The nearest candidate is the service failing the fewest rules (the
    earliest in configuration order on a tie); every rule it fails is named.
    """
    who = _describe_peer(peer, socket_path, selinux_enabled)
    best: tuple[Service, list[str]] | None = None
    where = _Where(socket_path, default_socket, selinux_enabled, netns_inodes, p11kit)
    for service in config.services:
        reasons = _failures(service, peer, where, stop_at_first=False)
        if not reasons:
            return f"service '{service.name}' matches {who}"
        if best is None or len(reasons) < len(best[1]):
            best = (service, reasons)
    if best is None:
        return f"no service matched {who}; no services are configured"
    service, reasons = best
    return f"no service matched {who}; nearest: service '{service.name}' {' and '.join(reasons)}"


def match_or_explain(
    config: Config,
    peer: Peer,
    socket_path: str,
    *,
    default_socket: str,
    selinux_enabled: bool,
    netns_inodes: Mapping[str, int] | None = None,
    p11kit: bool = False,
) -> tuple[Service | None, str | None]:
    """`match_service`'s answer, and when it is None, `explain_no_match`'s
    sentence (the GSS-Proxy calls and the p11-kit connections log it)."""
    service = match_service(
        config,
        peer,
        socket_path,
        default_socket=default_socket,
        selinux_enabled=selinux_enabled,
        netns_inodes=netns_inodes,
        p11kit=p11kit,
    )
    if service is not None:
        return service, None
    reason = explain_no_match(
        config,
        peer,
        socket_path,
        default_socket=default_socket,
        selinux_enabled=selinux_enabled,
        netns_inodes=netns_inodes,
        p11kit=p11kit,
    )
    return None, reason

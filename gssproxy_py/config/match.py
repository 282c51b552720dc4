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


def _failures(
    service: Service,
    peer: Peer,
    socket_path: str,
    default_socket: str,
    selinux_enabled: bool,
    netns_inodes: Mapping[str, int] | None,
    *,
    stop_at_first: bool,
    p11kit: bool = False,
) -> list[str]:
    """Why `service` does not serve `peer`; empty when it does.

    Reasons are phrased to follow "service 'NAME' ...".
    """
    reasons: list[str] = []

    if not service.allow_any_uid and service.euid != peer.uid:
        reasons.append(f"requires euid {service.euid}")
        if stop_at_first:
            return reasons

    if selinux_enabled and service.selinux_context is not None:
        peer_ctx = (
            SelinuxContext.parse(peer.selinux_context) if peer.selinux_context is not None else None
        )
        if peer_ctx is None or not service.selinux_context.admits(peer_ctx):
            reasons.append(f"requires selinux context {service.selinux_context}")
            if stop_at_first:
                return reasons

    if service.program is not None and peer.program != service.program:
        reasons.append(f"requires program {service.program}")
        if stop_at_first:
            return reasons

    if p11kit:
        if service.p11kit_socket is None:
            reasons.append("has no p11kit_socket")
            if stop_at_first:
                return reasons
        elif os.path.normpath(socket_path) != service.p11kit_socket:
            reasons.append(f"serves p11-kit on {service.p11kit_socket}")
            if stop_at_first:
                return reasons
    else:
        wanted = service.socket if service.socket is not None else default_socket
        if os.path.normpath(socket_path) != os.path.normpath(wanted):
            reasons.append(f"listens on {wanted}")
            if stop_at_first:
                return reasons

    if service.netns and not _in_netns(service, peer, netns_inodes):
        reasons.append(f"requires network namespace {' or '.join(service.netns)}")

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
    for service in config.services:
        if not _failures(
            service,
            peer,
            socket_path,
            default_socket,
            selinux_enabled,
            netns_inodes,
            stop_at_first=True,
            p11kit=p11kit,
        ):
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
    for service in config.services:
        reasons = _failures(
            service,
            peer,
            socket_path,
            default_socket,
            selinux_enabled,
            netns_inodes,
            stop_at_first=True,
        )
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
    for service in config.services:
        reasons = _failures(
            service,
            peer,
            socket_path,
            default_socket,
            selinux_enabled,
            netns_inodes,
            stop_at_first=False,
            p11kit=p11kit,
        )
        if not reasons:
            return f"service '{service.name}' matches {who}"
        if best is None or len(reasons) < len(best[1]):
            best = (service, reasons)
    if best is None:
        return f"no service matched {who}; no services are configured"
    service, reasons = best
    return f"no service matched {who}; nearest: service '{service.name}' {' and '.join(reasons)}"

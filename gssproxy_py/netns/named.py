"""Named network namespaces (`ip netns` / pyroute2 style, under /run/netns).

Resolves a service's `netns = NAME ...` or `netns = all` to namespaces, and
builds the name → inode map `config.match` needs. Listing, creating and
removing go through pyroute2's `netns` module behind typed adapters; pyroute2
is imported on first use only, because importing it costs about 0.25 s (and
seconds in an emulated guest) and most daemons never need it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gssproxy_py.config.model import Service
from gssproxy_py.netns.errors import NetnsError
from gssproxy_py.netns.nsfs import netns_inode

# iproute2 and pyroute2 both use /var/run/netns, a symlink to /run/netns on
# any current distribution.
NETNS_DIR = "/run/netns"


def _pyroute2_netns() -> Any:
    return importlib.import_module("pyroute2.netns")


def list_named(netns_dir: str = NETNS_DIR) -> tuple[str, ...]:
    """Names of the namespaces bound under `netns_dir`, sorted; () if none.

    Entries that are not live namespace bind mounts (a name left behind by a
    crashed `ip netns add`, which is an empty file) are skipped.
    """
    names: list[str] = [str(n) for n in _pyroute2_netns().listnetns(netns_dir)]
    return tuple(sorted(n for n in names if _is_namespace(os.path.join(netns_dir, n))))


def _is_namespace(path: str) -> bool:
    # A bind-mounted nsfs file lives on a different device than the tmpfs
    # directory holding it; an empty leftover file does not.
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False


def create_named(name: str, netns_dir: str = NETNS_DIR) -> int:
    """Create a named namespace (like `ip netns add`); returns its inode.

    For tests and tools: the daemon itself never creates namespaces.
    """
    _check_name(name)
    mod = _pyroute2_netns()
    # pyroute2 resolves bare names against its own NETNS_RUN_DIR; a path
    # makes the directory explicit.
    mod.create(os.path.join(netns_dir, name))
    inode = netns_inode(os.path.join(netns_dir, name))
    if inode is None:
        raise NetnsError(f"pyroute2 did not create {os.path.join(netns_dir, name)}")
    return inode


def remove_named(name: str, netns_dir: str = NETNS_DIR) -> None:
    """Remove a named namespace (like `ip netns del`); missing is fine."""
    _check_name(name)
    path = os.path.join(netns_dir, name)
    if os.path.lexists(path):
        _pyroute2_netns().remove(path)


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise NetnsError(f"invalid network namespace name {name!r}")


def netns_path(name: str, netns_dir: str = NETNS_DIR) -> str:
    """The nsfs file of the named namespace `name`."""
    _check_name(name)
    return os.path.join(netns_dir, name)


def inode_map(names: Iterable[str], netns_dir: str = NETNS_DIR) -> dict[str, int]:
    """name → inode for those of `names` that exist now (for `match_service`).

    Missing names are left out, which `match_service` treats as "never
    matches": a service restricted to a namespace that does not exist serves
    nobody.
    """
    out: dict[str, int] = {}
    for name in names:
        inode = netns_inode(netns_path(name, netns_dir))
        if inode is not None:
            out[name] = inode
    return out


def configured_names(services: Iterable[Service]) -> tuple[str, ...]:
    """Every namespace name some service lists (`all` excluded), sorted."""
    return tuple(sorted({n for s in services for n in s.netns}))


@dataclass(frozen=True, slots=True)
class UpcallTarget:
    """One namespace whose `use-gss-proxy` must be written.

    `netns` is a name under /run/netns, or None for the daemon's own
    namespace. `services` are the `kernel_nfsd` services that asked for it.
    """

    netns: str | None
    services: tuple[str, ...]


def upcall_targets(services: Iterable[Service], named: Iterable[str]) -> tuple[UpcallTarget, ...]:
    """Where the kernel upcall must be enabled, from the `kernel_nfsd` services.

    Pure. A `kernel_nfsd` service without `netns` means the daemon's own
    namespace (what gssproxy does); `netns = NAME ...` means those named
    namespaces (whether or not they exist yet: the enabler retries);
    `netns = all` means the daemon's own namespace and every name in `named`
    (the namespaces existing now). The daemon's own namespace comes first,
    then names in sorted order.
    """
    wanted: dict[str | None, list[str]] = {}
    named_now = tuple(named)
    for svc in services:
        if not svc.kernel_nfsd:
            continue
        if svc.netns_all:
            where: tuple[str | None, ...] = (None, *named_now)
        elif svc.netns:
            where = svc.netns
        else:
            where = (None,)
        for ns in where:
            users = wanted.setdefault(ns, [])
            if svc.name not in users:
                users.append(svc.name)
    ordered = sorted(wanted, key=lambda ns: (ns is not None, ns or ""))
    return tuple(UpcallTarget(ns, tuple(wanted[ns])) for ns in ordered)


def describe(netns: str | None, inodes: Mapping[str, int] | None = None) -> str:
    """How logs name a namespace: `netns NAME (inode N)` or `the daemon's netns`."""
    if netns is None:
        return "the daemon's netns"
    inode = None if inodes is None else inodes.get(netns)
    return f"netns {netns}" if inode is None else f"netns {netns} (inode {inode})"

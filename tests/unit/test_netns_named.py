"""Which namespaces a configuration needs, and the name → inode map.

Pure functions and plain files only: the real namespaces are exercised in
tests/integration/test_netns_*.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from gssproxy_py.config.model import Mech, Service
from gssproxy_py.netns.errors import NetnsError
from gssproxy_py.netns.named import (
    UpcallTarget,
    configured_names,
    describe,
    inode_map,
    list_named,
    netns_path,
    upcall_targets,
)
from gssproxy_py.netns.nsfs import peer_netns_inode, socket_netns_inode, thread_netns_inode


def svc(
    name: str,
    *,
    kernel_nfsd: bool = True,
    netns: tuple[str, ...] = (),
    netns_all: bool = False,
) -> Service:
    return Service(
        name=name,
        euid=0,
        mechs=(Mech.KRB5,),
        kernel_nfsd=kernel_nfsd,
        netns=netns,
        netns_all=netns_all,
    )


def test_no_kernel_nfsd_no_targets() -> None:
    assert upcall_targets([svc("a", kernel_nfsd=False, netns=("x",))], ["x"]) == ()


def test_plain_kernel_nfsd_is_the_own_namespace() -> None:
    assert upcall_targets([svc("nfs")], ["x", "y"]) == (UpcallTarget(None, ("nfs",)),)


def test_named_namespaces_whether_or_not_they_exist() -> None:
    targets = upcall_targets([svc("nfs", netns=("b", "a"))], [])
    assert targets == (UpcallTarget("a", ("nfs",)), UpcallTarget("b", ("nfs",)))


def test_all_is_own_plus_every_existing_name() -> None:
    targets = upcall_targets([svc("nfs", netns_all=True)], ["y", "x"])
    assert [t.netns for t in targets] == [None, "x", "y"]


def test_targets_merge_services() -> None:
    targets = upcall_targets(
        [
            svc("one", netns=("x",)),
            svc("two"),
            svc("three", netns=("x",)),
            svc("off", kernel_nfsd=False),
        ],
        [],
    )
    assert targets == (UpcallTarget(None, ("two",)), UpcallTarget("x", ("one", "three")))


def test_configured_names() -> None:
    services = [svc("a", netns=("x", "y")), svc("b", netns=("y",)), svc("c", netns_all=True)]
    assert configured_names(services) == ("x", "y")


def test_inode_map_skips_missing(tmp_path: Path) -> None:
    (tmp_path / "present").touch()
    inodes = inode_map(["present", "missing"], str(tmp_path))
    assert inodes == {"present": os.stat(tmp_path / "present").st_ino}


def test_list_named_skips_leftover_files(tmp_path: Path) -> None:
    # A plain file is what a crashed `ip netns add` leaves: not a namespace.
    (tmp_path / "leftover").touch()
    assert list_named(str(tmp_path)) == ()
    assert list_named(str(tmp_path / "nonexistent")) == ()


@pytest.mark.parametrize("bad", ["", "a/b", "..", "."])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(NetnsError):
        netns_path(bad)


def test_describe() -> None:
    assert describe(None) == "the daemon's netns"
    assert describe("x") == "netns x"
    assert describe("x", {"x": 7}) == "netns x (inode 7)"


def test_own_inodes_agree() -> None:
    own = os.stat("/proc/self/ns/net").st_ino
    assert thread_netns_inode() == own
    assert peer_netns_inode(os.getpid()) == own
    assert peer_netns_inode(0) is None
    assert peer_netns_inode(2**22 + 12345) is None  # beyond pid_max: never a process


def test_socket_netns_inode_of_a_local_pair() -> None:
    a, b = socket.socketpair()
    with a, b:
        inode = socket_netns_inode(a)
        # None only without CAP_NET_ADMIN; otherwise our own namespace.
        assert inode in (None, os.stat("/proc/self/ns/net").st_ino)

"""Reading a peer's identity from the kernel: SO_PEERCRED, /proc/PID/exe and
the network namespace, on real sockets and processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gssproxy_py.netns import NetnsExecutors
from gssproxy_py.netns.named import create_named, remove_named
from gssproxy_py.server.peer import (
    PeerCredentialsError,
    connection_netns_inode,
    netns_inode_of,
    program_of,
    read_peer,
    selinux_enabled,
)


def test_read_peer_on_a_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        peer = read_peer(a, with_selinux=False)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert peer.program == os.path.realpath(sys.executable)
    assert peer.netns_inode == os.stat("/proc/self/ns/net").st_ino
    assert peer.selinux_context is None


def test_selinux_context_is_none_without_selinux() -> None:
    if selinux_enabled():
        pytest.skip("SELinux is enabled here")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert read_peer(a, with_selinux=True).selinux_context is None


def test_unreadable_credentials_raise() -> None:
    class Broken:
        def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
            raise OSError(88, "Socket operation on non-socket")

    with pytest.raises(PeerCredentialsError, match="SO_PEERCRED"):
        read_peer(Broken(), with_selinux=False)


def test_no_program_for_pid_0_kernel_threads_and_vanished_processes() -> None:
    assert program_of(0) is None
    assert netns_inode_of(0) is None
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert program_of(proc.pid) is None  # reaped: /proc/PID is gone
    assert netns_inode_of(proc.pid) is None
    if Path("/proc/2/comm").read_text().strip() == "kthreadd":
        assert program_of(2) is None  # a kernel thread has no executable


def test_no_program_for_a_deleted_binary(tmp_path: Path) -> None:
    binary = tmp_path / "sleeper"
    shutil.copy("/bin/sleep", binary)
    proc = subprocess.Popen([str(binary), "30"])
    try:
        assert program_of(proc.pid) == str(binary)
        binary.unlink()
        assert program_of(proc.pid) is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace, setns)")
def test_netns_is_the_sockets_not_the_pids(tmp_path: Path) -> None:
    """As with the kernel's client: a socket made in another namespace by a
    thread of a process that itself lives in ours (SO_PEERCRED names that
    process). The accepted socket tells the truth; the pid does not."""
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    executors = NetnsExecutors(netns_dir=str(netns_dir))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        ns_inode = create_named("gpytest-peer", str(netns_dir))
        listener.bind(str(tmp_path / "sock"))
        listener.listen()

        def connect() -> socket.socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(tmp_path / "sock"))
            return s

        client = executors.executor_for("gpytest-peer").submit(connect).result(10)
        server, _ = listener.accept()
        with client, server:
            peer = read_peer(server, with_selinux=False)
            assert peer.pid == os.getpid()
            assert netns_inode_of(peer.pid) == os.stat("/proc/self/ns/net").st_ino
            assert peer.netns_inode == ns_inode != netns_inode_of(peer.pid)

            class NoFileno:
                def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
                    return server.getsockopt(level, optname, buflen)

            # Without a descriptor (or without CAP_NET_ADMIN): the pid's.
            assert connection_netns_inode(NoFileno(), peer.pid) == netns_inode_of(peer.pid)
    finally:
        listener.close()
        executors.shutdown()
        remove_named("gpytest-peer", str(netns_dir))
        subprocess.run(["umount", "-l", str(netns_dir)], check=False, capture_output=True)

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

from gssproxy_py.server.peer import (
    PeerCredentialsError,
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

"""Who is on the other end of an accepted connection, read once at accept.

Identity comes only from the kernel, never from the message: `SO_PEERCRED`
(pid, uid, gid as they were at connect time), the target of `/proc/PID/exe`
(the kernel's canonical path of the executable), the network namespace, and
with SELinux the peer's context (`SO_PEERSEC`). Only SO_PEERCRED is
required; the others are None when they cannot be read (kernel threads have
no executable, the process may already be gone, hardening may hide /proc),
and never raise.

The network namespace is the one the connected socket lives in
(`SIOCGSKNS` on the accepted socket), falling back to `/proc/PID/ns/net`.
The socket is exact where the pid is not: the kernel's gss-proxy client
creates its socket in the namespace whose `use-gss-proxy` was written, while
SO_PEERCRED names whoever wrote it (the daemon itself, when an executor
thread in that namespace wrote it), and a pid can be reused. SIOCGSKNS needs
CAP_NET_ADMIN over that namespace, which a daemon running as `run_as_user`
no longer has: then the pid is all there is.

These reads are a few system calls on local files, cheap enough for the
event loop. They work under uvloop, whose transport socket object supports
`getsockopt` on the real descriptor.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Protocol

from gssproxy_py.config.peer import Peer
from gssproxy_py.errors import LocalError
from gssproxy_py.netns.nsfs import socket_netns_inode

# struct ucred { pid_t pid; uid_t uid; gid_t gid; }
_UCRED = struct.Struct("=iII")
# Not in the socket module on every Python; the value is Linux's.
SO_PEERSEC = getattr(socket, "SO_PEERSEC", 31)
_PEERSEC_MAX = 4096
SELINUX_ENFORCE_FILE = "/sys/fs/selinux/enforce"


class PeerCredentialsError(LocalError):
    """SO_PEERCRED could not be read; the connection cannot be attributed."""


class SocketLike(Protocol):
    """What we need of a transport's socket (a real socket or uvloop's stand-in)."""

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


def selinux_enabled() -> bool:
    """True when SELinux is active, i.e. peer contexts mean something."""
    return os.path.exists(SELINUX_ENFORCE_FILE)


def peer_credentials(sock: SocketLike) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(raw)
    except (OSError, struct.error) as exc:
        raise PeerCredentialsError(f"cannot read SO_PEERCRED: {exc}") from None
    return pid, uid, gid


def program_of(pid: int) -> str | None:
    """The canonical path of the executable of `pid`, or None.

    None for pid 0 (a peer in another pid namespace), kernel threads (their
    exe link is empty), vanished processes and when /proc hides the link.
    The link's target is the kernel's own path of the file it runs (d_path:
    absolute, no symlinks, no `.` or `..`), so it needs no realpath, which
    would cost a stat of every component on every connection.
    """
    if pid <= 0:
        return None
    try:
        target = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    # A deleted or replaced binary reads "/path (deleted)": it is no longer
    # the configured program, so do not let it match one.
    if not target.startswith("/") or target.endswith(" (deleted)"):
        return None
    return target


def netns_inode_of(pid: int) -> int | None:
    """The inode of the network namespace `pid` lives in, or None."""
    if pid <= 0:
        return None
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def connection_netns_inode(sock: object, pid: int) -> int | None:
    """The inode of the network namespace of the peer on `sock`, or None.

    The namespace the accepted socket lives in (`SIOCGSKNS`) when it can be
    read, else the namespace of process `pid` (SO_PEERCRED's).
    """
    fileno = getattr(sock, "fileno", None)
    if callable(fileno):
        try:
            inode = socket_netns_inode(int(fileno()))
        except (OSError, ValueError, TypeError):
            inode = None
        if inode is not None:
            return inode
    return netns_inode_of(pid)


def selinux_context_of(sock: SocketLike) -> str | None:
    """The peer's SELinux context (`user:role:type[:range]`), or None."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERSEC, _PEERSEC_MAX)
    except OSError:
        return None
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return text or None


def read_peer(sock: SocketLike, *, with_selinux: bool) -> Peer:
    """The frozen identity of the peer on `sock`.

    Raises `PeerCredentialsError` when SO_PEERCRED fails (the connection is
    then dropped, as gssproxy does).
    """
    pid, uid, gid = peer_credentials(sock)
    return Peer(
        pid=pid,
        uid=uid,
        gid=gid,
        program=program_of(pid),
        selinux_context=selinux_context_of(sock) if with_selinux else None,
        netns_inode=connection_netns_inode(sock, pid),
    )

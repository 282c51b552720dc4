"""Namespace primitives over nsfs and /proc: inodes, `setns` for one thread.

Stdlib only (ctypes for `setns`, which `os` lacks before Python 3.12), so the
daemon pays nothing for namespace support it does not use: importing pyroute2
costs a quarter of a second, and seconds under an emulated guest.

The rules these helpers encode:

* `setns(2)` moves the *calling thread* only. It is only ever called from a
  dedicated executor thread (see `executors.py`), never the event loop.
* `/proc/net` is a symlink to `self/net`, and `/proc/self` is the process,
  i.e. its main thread: a thread that entered another namespace still sees
  the daemon's own namespace there. Only `/proc/thread-self/net` follows the
  calling thread, hence `thread_proc_path`.
* A namespace is identified by the inode of its nsfs file (`/proc/PID/ns/net`,
  `/run/netns/NAME`, or what `SIOCGSKNS` returns for a socket).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from typing import Protocol

from gssproxy_py.netns.errors import NetnsError

CLONE_NEWNET = 0x40000000
# ioctl on a socket: an fd of the network namespace the socket lives in (4.9+).
SIOCGSKNS = 0x894C

_PROC_NET_PREFIXES = ("/proc/net/", "/proc/self/net/")
_THREAD_NET = "/proc/thread-self/net/"


class HasFileno(Protocol):
    """Anything with a socket descriptor (a socket, a transport's socket)."""

    def fileno(self) -> int: ...


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def setns_current_thread(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace open at `fd`.

    Uses `os.setns` where Python has it (3.12+), else libc's `setns` via
    ctypes; both act on the calling thread only.
    """
    os_setns = getattr(os, "setns", None)
    if os_setns is not None:
        os_setns(fd, nstype)
        return
    if _libc().setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def enter_netns(path: str, *, expect_inode: int | None = None) -> int:
    """Move the calling thread into the network namespace at `path`.

    `path` is an nsfs file (`/run/netns/NAME`, `/proc/PID/ns/net`). With
    `expect_inode`, the namespace must be that one (a name that was removed
    and re-created is a different namespace). Returns the inode the thread is
    in afterwards, read back from `/proc/thread-self/ns/net`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(f"cannot open network namespace {path}: {exc.strerror}") from None
    try:
        inode = os.fstat(fd).st_ino
        if expect_inode is not None and inode != expect_inode:
            raise NetnsError(
                f"network namespace {path} is inode {inode}, expected {expect_inode}"
                " (it was re-created)"
            )
        try:
            setns_current_thread(fd)
        except OSError as exc:
            raise NetnsError(f"setns into {path} failed: {exc.strerror}") from None
    finally:
        os.close(fd)
    now = thread_netns_inode()
    if now != inode:
        # Cannot happen unless setns silently did nothing; refuse to run work
        # in the wrong namespace rather than trust it.
        raise NetnsError(f"after setns into {path} the thread is in inode {now}, not {inode}")
    return inode


def thread_netns_inode() -> int:
    """The inode of the calling thread's network namespace."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def netns_inode(path: str) -> int | None:
    """The inode of the namespace file at `path`, or None if it is missing.

    Other failures (a directory we may not search after dropping
    privileges) raise `NetnsError`.
    """
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NetnsError(f"cannot look at network namespace {path}: {exc.strerror}") from None


def peer_netns_inode(pid: int) -> int | None:
    """The inode of process `pid`'s network namespace, or None.

    None when the pid is 0 (a peer in another pid namespace), the process is
    gone, or /proc hides it. Racy by nature (pids are reused):
    `socket_netns_inode` is exact for a connected socket.
    """
    if pid <= 0:
        return None
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def socket_netns_inode(sock: HasFileno | int) -> int | None:
    """The inode of the network namespace a socket lives in, or None.

    For an accepted AF_UNIX connection this is the namespace of the socket
    that connected, which for the kernel's gss-proxy client is the namespace
    whose `use-gss-proxy` was written (the kernel creates its socket there),
    while SO_PEERCRED only names the process that wrote it. Needs
    CAP_NET_ADMIN over that namespace; None when refused or unsupported.
    """
    fd = sock if isinstance(sock, int) else sock.fileno()
    try:
        nsfd = fcntl.ioctl(fd, SIOCGSKNS)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.ENOTTY, errno.EINVAL, errno.EBADF):
            return None
        raise
    try:
        return os.fstat(nsfd).st_ino
    finally:
        os.close(nsfd)


def thread_proc_path(path: str) -> str:
    """`path` with `/proc/net/` or `/proc/self/net/` aimed at the calling thread.

    Per-namespace proc files such as `/proc/net/rpc/use-gss-proxy` must be
    opened as `/proc/thread-self/net/...` from a thread that entered the
    namespace; other paths (a test stand-in) are returned unchanged.
    """
    for prefix in _PROC_NET_PREFIXES:
        if path.startswith(prefix):
            return _THREAD_NET + path[len(prefix) :]
    return path

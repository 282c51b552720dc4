"""Listening AF_UNIX sockets: creating, and removing, the socket files.

Binding a socket path (`bind_socket`) is safe against another local user
and against a second instance:

* A socket at the path that answers a connect belongs to a live daemon: the
  new instance refuses the path with a clear message instead of taking it
  over (a second `gssproxy-py -i` used to steal the running service's socket
  and delete it on exit).
* In a directory that users other than root (and us) can write, anything
  else at the path (a stale socket, a file, a symlink another user put
  there) is replaced atomically: the socket is bound in a fresh private
  directory (mode 0700) beside the path, given its mode there, and renamed
  over the path. rename(2) replaces a symlink, never its target, and the
  mode is never set through a path another user could swap (and, either
  way, it is set through an O_PATH descriptor of the socket itself, which
  a symlink or any other file put there meanwhile cannot be). Such a
  directory is also worth a warning: whoever can write it can replace the
  socket while we run. (The kernel keeps the name a socket was bound to,
  so `ss -x` and `lsof` show such a socket as `.gp-XXXX/s` beside the
  path.)
* In a directory only root (or we) can write, below directories no other
  user can write either (a sticky one is fine when what it holds on the way
  down is root's or ours), nobody can swap the path between two steps:
  what is there (stale socket, file, symlink: never its target) is
  unlinked and the socket bound at the path itself, so `ss -x` and `lsof`
  show its real name.

The socket is mode 0666, as gssproxy makes it: who may use the daemon is
decided per call by service matching, not by file permissions.

A socket file is removed on close only if it is still the one we bound (same
device and inode), so a file another daemon has meanwhile put there stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import pwd
import socket
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from gssproxy_py.config.model import Config
from gssproxy_py.errors import LocalError
from gssproxy_py.server.writers import Acceptor

_log = logging.getLogger(__name__)

#: How long a connect to an existing socket may take to count as "a live
#: daemon answers" (a local connect is immediate, or refused at once).
LIVE_PROBE_TIMEOUT = 2.0

#: gssproxy listens with a backlog of 10; many nfsd threads reconnecting at
#: once after a daemon restart need more.
LISTEN_BACKLOG = 128
SOCKET_MODE = 0o666
#: Mode of directories we create to hold a socket: clients must traverse them.
SOCKET_DIR_MODE = 0o755


class ListenError(LocalError):
    """A socket path could not be set up for listening."""


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening socket, by the path services name it with."""

    path: str
    server: Acceptor
    #: (st_dev, st_ino) of the socket file we bound
    identity: tuple[int, int]

    def stop(self) -> None:
        """Stop accepting; connections already accepted stay open."""
        self.server.close()

    def remove_file(self) -> None:
        """Unlink the socket file if it is still ours."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self.identity:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def socket_paths(config: Config, default_socket: str) -> list[str]:
    """Every path to listen on: the default socket, then each service's own,
    in configuration order, normalised the way matching compares them."""
    paths = [os.path.normpath(default_socket)]
    for service in config.services:
        if service.socket is not None:
            path = os.path.normpath(service.socket)
            if path not in paths:
                paths.append(path)
    return paths


def p11kit_socket_paths(config: Config) -> list[str]:
    """The `p11kit_socket` paths, in configuration order, each once."""
    paths: list[str] = []
    for service in config.services:
        if service.p11kit_socket is not None and service.p11kit_socket not in paths:
            paths.append(service.p11kit_socket)
    return paths


def _can_search(st: os.stat_result, uid: int | None, groups: frozenset[int]) -> bool:
    """Whether `uid` (None: any user without a special relation) may search a
    directory with status `st`. Root always may; ACLs are not consulted."""
    mode = st.st_mode
    if uid == 0:
        return True
    if uid is not None and st.st_uid == uid:
        return bool(mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def _groups_of(uid: int) -> frozenset[int]:
    try:
        pw = pwd.getpwuid(uid)
        return frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except (KeyError, OSError):
        return frozenset()


def unreachable_sockets(config: Config, default_socket: str) -> list[str]:
    """A warning for each service whose callers cannot reach its socket
    because a directory on the way denies search to the service's euid (to
    every other user for `allow_any_uid`). The kernel and root always can."""
    warnings = []
    for service in config.services:
        path = os.path.normpath(service.socket or default_socket)
        uid = None if service.allow_any_uid else service.euid
        who = "other users" if uid is None else f"uid {uid}"
        groups = frozenset() if uid is None else _groups_of(uid)
        directory = os.path.dirname(path)
        parts = directory.split(os.sep)
        for depth in range(1, len(parts) + 1):
            current = os.sep.join(parts[:depth]) or os.sep
            try:
                st = os.stat(current)
            except OSError:
                break
            if not _can_search(st, uid, groups):
                warnings.append(
                    f"service '{service.name}': {who} cannot search {current} "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}), so its "
                    f"callers cannot reach {path}; make it searchable (chmod o+x, or 0755)"
                )
                break
    return warnings


def live_daemon_on(path: str) -> bool:
    """True if a socket (not a symlink) at `path` accepts a connection."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(LIVE_PROBE_TIMEOUT)
        try:
            probe.connect(path)
        except OSError:
            return False  # refused: nobody listens (stale), or not ours to judge
    return True


def others_can_write(directory: str) -> str | None:
    """Why users other than root (and us) can write `directory`, or None."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}"
    if mode & stat.S_IWOTH:
        return f"mode {mode:04o}: writable by every user"
    if mode & stat.S_IWGRP and st.st_gid != 0:
        return f"mode {mode:04o}: writable by group {st.st_gid}"
    return None


def ancestor_open_to_others(directory: str) -> str | None:
    """A directory above `directory` through which users other than root
    (and us) could swap it, or None: one they can write, unless it is
    sticky and what it holds on the way down is root's or ours (then only
    its owner may rename or remove that)."""
    child = os.path.abspath(directory)
    while child != "/":
        above = os.path.dirname(child)
        why = others_can_write(above)
        if why is not None:
            try:
                st_above, st_child = os.stat(above), os.lstat(child)
            except OSError:
                return f"{above} ({why})"
            sticky = st_above.st_mode & stat.S_ISVTX
            if not (sticky and st_child.st_uid in (0, os.geteuid())):
                return f"{above} ({why})"
        child = above
    return None


def _chmod_socket(path: str, mode: int) -> os.stat_result:
    """chmod the socket we just bound at `path`, never through a symlink or
    onto anything but a socket (if another user swapped the path meanwhile,
    nothing of theirs or of the system's is changed); its stat."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, "replaced by something else while binding")
        # An O_PATH descriptor takes no fchmod; its /proc link reaches the
        # very inode it holds, so no path is looked up again.
        os.chmod(f"/proc/self/fd/{fd}", mode)
        return os.fstat(fd)
    finally:
        os.close(fd)


def _describe(path: str) -> str | None:
    """What is at `path` now (for the log), or None if nothing."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if stat.S_ISSOCK(st.st_mode):
        return "a stale socket"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    return f"a file of uid {st.st_uid}"


def bind_socket(path: str, mode: int = SOCKET_MODE) -> tuple[socket.socket, tuple[int, int]]:
    """A non-blocking AF_UNIX stream socket listening on `path`, file mode `mode`.

    Creates the parent directory if missing, refuses the path when a live
    daemon answers on it, and otherwise replaces whatever is there
    atomically (see the module docstring). Raises `ListenError`.
    """
    parent = os.path.dirname(path) or "."
    try:
        os.makedirs(parent, mode=SOCKET_DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    shared = others_can_write(parent)
    if shared is not None:
        _log.warning(
            "socket directory %s is %s; whoever can write it can replace %s", parent, shared, path
        )
    elif (above := ancestor_open_to_others(parent)) is not None:
        shared = above
        _log.warning(
            "the directory %s above socket directory %s can be written by other users; "
            "whoever can write it can replace %s",
            above,
            parent,
            path,
        )
    if live_daemon_on(path):
        raise ListenError(
            f"{path}: a running daemon answers on this socket; stop it first "
            "or give this instance another socket (-s)"
        )
    replaced = _describe(path)
    if replaced == "a directory":
        raise ListenError(f"{path}: exists and is a directory")
    if shared is None:
        sock, bound = _bind_in_place(path, mode)
    else:
        sock, bound = _bind_and_rename(path, parent, mode)
    if replaced is not None:
        _log.warning("%s: replaced %s with our socket", path, replaced)
    return sock, bound


def _bind_in_place(path: str, mode: int) -> tuple[socket.socket, tuple[int, int]]:
    """Bind at `path` itself, in a directory only root (or we) can write."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket, a file, a symlink (not its target)
        sock.bind(path)
        st = _chmod_socket(path, mode)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock, (st.st_dev, st.st_ino)


def _bind_and_rename(path: str, parent: str, mode: int) -> tuple[socket.socket, tuple[int, int]]:
    """Bind in a private directory beside `path` and rename over it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private = None
    try:
        # Only we can write `private`: nobody can swap the file we chmod.
        private = tempfile.mkdtemp(prefix=".gp-", dir=parent)
        temp_path = os.path.join(private, "s")
        sock.bind(temp_path)
        st = _chmod_socket(temp_path, mode)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        os.rename(temp_path, path)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        if private is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(private, "s"))
            with contextlib.suppress(OSError):
                os.rmdir(private)
    return sock, (st.st_dev, st.st_ino)


def never_needs_writer(_conn: socket.socket) -> bool:
    """No accepted connection is read with writer credentials."""
    return False


async def open_listener(
    path: str,
    protocol_factory: Callable[[], asyncio.Protocol],
    mode: int = SOCKET_MODE,
    needs_writer: Callable[[socket.socket], bool] = never_needs_writer,
) -> Listener:
    """Bind `path` (file mode `mode`) and start accepting connections on it;
    `needs_writer` says which accepted connections are read with writer
    credentials (`writers.Acceptor`)."""
    sock, identity = bind_socket(path, mode)
    loop = asyncio.get_running_loop()
    try:
        server = Acceptor(loop, sock, protocol_factory, needs_writer)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return Listener(path=path, server=server, identity=identity)

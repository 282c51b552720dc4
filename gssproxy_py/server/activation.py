"""Listening sockets handed over by the service manager (socket activation).

The protocol is systemd's `sd_listen_fds(3)`, written out here: when
`$LISTEN_PID` is our pid, `$LISTEN_FDS` sockets are open at descriptors 3,
4, ...; we mark them close-on-exec and remove the variables, so no child
process believes they are its own. Without `$LISTEN_PID`, or with another
process's pid, nothing was passed.

Each inherited socket serves the configured socket path it is bound to
(`getsockname`, compared after `os.path.normpath` as matching does). As in
gssproxy's userproxy mode, a single socket whose name is no configured path
serves the default socket. Anything else (a socket that is not a listening
AF_UNIX stream socket, a second unnamed one) is refused.

An inherited socket's file belongs to the service manager, which keeps
listening on it to start us again: `InheritedListener` never unlinks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

from gssproxy_py.errors import LocalError
from gssproxy_py.server.listeners import LISTEN_BACKLOG, Listener, never_needs_writer
from gssproxy_py.server.writers import ACCEPTS_PER_TURN, Acceptor

#: sd_listen_fds(3): the first passed descriptor.
LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(LocalError):
    """The passed descriptors are not what socket activation promises."""


@dataclass(frozen=True, slots=True)
class InheritedSocket:
    """One listening socket passed by the service manager."""

    fd: int
    #: the path it is bound to, normalised; "" when unnamed or abstract
    path: str
    sock: socket.socket
    #: (st_dev, st_ino) of the file when this process bound it before forking
    #: worker processes (`server.workers`): its listener unlinks the file at
    #: the end, as for a socket bound in `listeners.open_listener`. None: the
    #: file is the service manager's (or the first process's), never unlinked.
    bound: tuple[int, int] | None = None


def _count(environ: MutableMapping[str, str], pid: int) -> int:
    listen_pid = environ.get("LISTEN_PID")
    if listen_pid is None:
        return 0
    try:
        if int(listen_pid) != pid:
            return 0  # meant for another process (we are a child of it)
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        raise ActivationError(
            f"LISTEN_PID={listen_pid!r} LISTEN_FDS={environ.get('LISTEN_FDS')!r}: not numbers"
        ) from None
    if count < 0:
        raise ActivationError(f"LISTEN_FDS={count}: negative")
    return count


def _adopt_fd(fd: int) -> InheritedSocket:
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(f"passed descriptor {fd}: {exc.strerror or exc}") from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        name = sock.getsockname()
    except OSError as exc:
        sock.detach()
        raise ActivationError(f"passed descriptor {fd}: {exc.strerror or exc}") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise ActivationError(f"passed descriptor {fd} is not a listening AF_UNIX stream socket")
    path = os.path.normpath(name) if isinstance(name, str) and name else ""
    sock.setblocking(False)
    return InheritedSocket(fd=fd, path=path, sock=sock)


def inherited_sockets(
    environ: MutableMapping[str, str] | None = None, pid: int | None = None
) -> list[InheritedSocket]:
    """The sockets passed to this process (sd_listen_fds with unset_environment).

    Raises ActivationError when the variables or descriptors are malformed.
    """
    env = os.environ if environ is None else environ
    count = _count(env, os.getpid() if pid is None else pid)
    for name in _VARIABLES:
        env.pop(name, None)
    return [_adopt_fd(LISTEN_FDS_START + i) for i in range(count)]


def assign(
    inherited: Sequence[InheritedSocket], wanted: Sequence[str], default_socket: str
) -> dict[str, InheritedSocket]:
    """Which configured path each inherited socket serves.

    Raises ActivationError for a socket that can serve none of them.
    """
    chosen: dict[str, InheritedSocket] = {}
    unnamed: list[InheritedSocket] = []
    for item in inherited:
        if item.path in wanted and item.path not in chosen:
            chosen[item.path] = item
        else:
            unnamed.append(item)
    default = os.path.normpath(default_socket)
    if len(unnamed) == 1 and default not in chosen:
        chosen[default] = unnamed.pop()
    if unnamed:
        names = ", ".join(f"fd {u.fd} ({u.path or 'unnamed'})" for u in unnamed)
        raise ActivationError(f"passed sockets match no configured socket path: {names}")
    return chosen


class InheritedListener(Listener):
    """A listener on a passed socket: its file is the service manager's."""

    __slots__ = ()

    def remove_file(self) -> None:
        """Leave the file: the service manager listens on it to start us again."""


async def adopt_listener(
    path: str,
    item: InheritedSocket,
    protocol_factory: Callable[[], asyncio.Protocol],
    needs_writer: Callable[[socket.socket], bool] = never_needs_writer,
    accepts_per_turn: int = ACCEPTS_PER_TURN,
) -> Listener:
    """Accept connections on an inherited socket, as the listener of `path`
    (`needs_writer` as for `listeners.open_listener`; `accepts_per_turn` as
    for `writers.Acceptor`)."""
    loop = asyncio.get_running_loop()
    try:
        item.sock.listen(LISTEN_BACKLOG)
        server = Acceptor(loop, item.sock, protocol_factory, needs_writer, accepts_per_turn)
    except OSError as exc:
        raise ActivationError(
            f"cannot accept on passed descriptor {item.fd}: {exc.strerror or exc}"
        ) from None
    if item.bound is not None:
        return Listener(path=path, server=server, identity=item.bound)
    identity = (0, 0)
    with contextlib.suppress(OSError):
        st = os.lstat(item.path or path)
        identity = (st.st_dev, st.st_ino)
    return InheritedListener(path=path, server=server, identity=identity)

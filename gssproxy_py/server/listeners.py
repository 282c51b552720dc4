"""Listening AF_UNIX sockets: creating, and removing, the socket files.

As gssproxy does, a stale socket file is unlinked before binding and the
socket is made mode 0666 (gssproxy binds under umask 0111): who may use the
daemon is decided per call by service matching, not by file permissions. We
chmod after bind instead of changing the process-wide umask, which other
threads share; until the chmod the file is only more restrictive.

A socket file is removed on close only if it is still the one we bound (same
device and inode), so a file another daemon has meanwhile put there stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass

from gssproxy_py.config.model import Config
from gssproxy_py.errors import LocalError

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
    server: asyncio.AbstractServer
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


def _remove_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        # gssproxy unlinks whatever is there; refusing protects a file
        # written into a socket path by mistake.
        raise ListenError(f"{path}: exists and is not a socket")
    os.unlink(path)


def bind_socket(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """A non-blocking AF_UNIX stream socket listening on `path`.

    Creates the parent directory if missing and replaces a stale socket
    file. Raises `ListenError`.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, mode=SOCKET_DIR_MODE, exist_ok=True)
        _remove_stale(path)
        sock.bind(path)
        os.chmod(path, SOCKET_MODE)
        st = os.lstat(path)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    except ListenError:
        sock.close()
        raise
    return sock, (st.st_dev, st.st_ino)


async def open_listener(path: str, protocol_factory: Callable[[], asyncio.Protocol]) -> Listener:
    """Bind `path` and start accepting connections on it."""
    sock, identity = bind_socket(path)
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_unix_server(protocol_factory, sock=sock, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return Listener(path=path, server=server, identity=identity)

"""Starting a daemon the way systemd's socket activation does, for tests.

The service manager binds and listens, then starts the daemon with the
sockets at descriptors 3, 4, ... and `LISTEN_FDS`/`LISTEN_PID` in its
environment (sd_listen_fds(3)). `LISTEN_PID` must be the daemon's own pid,
which only the process itself knows before exec: a tiny `bash` sets it to
`$$` and execs the daemon, keeping the pid (bash, as dash takes no
descriptor above 9 in a redirection).
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gssproxy_py.testing.users import DEFAULT_PATH, LocalUser, as_user_argv

#: Parent-side copies go above this, clear of the 3, 4, ... they become.
_HIGH_FD = 20


def listening_socket(path: str | os.PathLike[str], mode: int = 0o666) -> socket.socket:
    """An AF_UNIX stream socket bound to `path` (a stale file replaced) and listening."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_socket():
        p.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, mode)
    sock.listen(16)
    return sock


def spawn_activated(
    argv: Sequence[str],
    sockets: Sequence[socket.socket],
    env: Mapping[str, str],
    *,
    user: LocalUser | None = None,
    **kw: Any,
) -> subprocess.Popen[Any]:
    """Start argv with `sockets` passed as descriptors 3, 4, ... (as `user` if given)."""
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, _HIGH_FD) for s in sockets]
    moves = " ".join(f"{3 + i}<&{fd} {fd}<&-" for i, fd in enumerate(high))
    script = f'export LISTEN_PID=$$ LISTEN_FDS={len(sockets)}; exec "$@" {moves}'
    wrapped = ["bash", "-c", script, "bash", *argv]
    full_env = {"PATH": DEFAULT_PATH, **env}
    try:
        if user is not None:
            return subprocess.Popen(as_user_argv(user, wrapped, env), pass_fds=high, **kw)
        return subprocess.Popen(wrapped, env=full_env, pass_fds=high, **kw)
    finally:
        for fd in high:
            os.close(fd)

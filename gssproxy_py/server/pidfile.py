"""The PID file: gssproxy's `/var/run/gssproxy.pid`, for units and scripts.

Debian's `gssproxy.service` is `Type=forking` with `PIDFile=/run/gssproxy.pid`,
and `rpc-svcgssd.service` stays off while that file exists, so a daemon that
serves nfsd must write it. `-D` writes it (at `DEFAULT_PID_FILE` unless
`--pid-file` names another path); `-i` writes one only when `--pid-file`
asks (our unit does, for rpc-svcgssd).

Start-up refuses when the file names a live gssproxy-py: a second daemon
would unlink the first one's sockets and listen in its place. A file naming
a dead process or another program (the C gssproxy leaves its file behind) is
replaced. On a clean exit the file is removed if it still names us.
"""

from __future__ import annotations

import contextlib
import os

from gssproxy_py.errors import LocalError

#: gssproxy's compiled-in path (/var/run is a link to /run).
DEFAULT_PID_FILE = "/run/gssproxy.pid"

#: What a gssproxy-py command line holds: the entry point's name, or the
#: module `python -m` runs.
_OUR_MARKERS = ("gssproxy-py", "gssproxy_py")


class PidFileError(LocalError):
    """The PID file names a running gssproxy-py, or cannot be written."""


def _read_pid(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            text = f.read(64)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidFileError(f"cannot read the PID file {path}: {exc.strerror}") from None
    try:
        pid = int(text.strip() or b"0")
    except ValueError:
        return None
    return pid if pid > 0 else None


def _is_gssproxy_py(pid: int) -> bool:
    """Whether process `pid` exists and runs gssproxy-py (its command line
    names the entry point or the package)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    words = [os.path.basename(a.decode(errors="replace")) for a in argv[:3]]
    return any(marker in word for word in words for marker in _OUR_MARKERS)


def check_pid_file(path: str) -> None:
    """Raise `PidFileError` if `path` names a live gssproxy-py other than us."""
    pid = _read_pid(path)
    if pid is not None and pid != os.getpid() and _is_gssproxy_py(pid):
        raise PidFileError(
            f"gssproxy-py is already running as PID {pid} (PID file {path}); "
            "stop it first, or give this one another --pid-file and other sockets"
        )


def write_pid_file(path: str) -> None:
    """Write our PID to `path` atomically (a reader never sees a partial file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # readable by status scripts whatever the umask
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PidFileError(f"cannot write the PID file {path}: {exc.strerror}") from None


def remove_pid_file(path: str) -> None:
    """Remove `path` if it still holds our PID (another daemon may own it now)."""
    with contextlib.suppress(PidFileError):
        if _read_pid(path) == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(path)

"""Where a daemon's admin socket is: shared by the daemon and `gssproxy-py-ctl`."""

from __future__ import annotations

import os


def admin_socket_path(admin_socket: str | None, default_socket: str) -> str:
    """The admin socket: `admin_socket` as configured, else `DIR/NAME-admin.sock`
    beside the default socket `DIR/NAME.sock` (so two daemons with their own
    `-s` never share one)."""
    if admin_socket is not None:
        return os.path.normpath(admin_socket)
    base, ext = os.path.splitext(os.path.normpath(default_socket))
    return f"{base}-admin{ext or '.sock'}"

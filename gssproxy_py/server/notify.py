"""Telling a service manager how the daemon is doing (sd_notify protocol).

gssproxy's unit is `Type=notify`: systemd waits for `READY=1` before it
starts rpc-gssd and nfsd. The protocol is one datagram to the AF_UNIX socket
named by `$NOTIFY_SOCKET` (a leading `@` means the abstract namespace).
Without the variable every call does nothing; a failure is logged, never
fatal.
"""

from __future__ import annotations

import logging
import os
import socket

_log = logging.getLogger(__name__)


def notify(state: str) -> None:
    """Send e.g. `READY=1`, `RELOADING=1` or `STOPPING=1`, if asked to."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state.encode("utf-8"), address)
    except OSError as exc:
        _log.warning("cannot notify the service manager (%s): %s", state, exc)

"""Debug level 3: the Kerberos library's trace in the daemon's log, as gssproxy does.

MIT krb5 writes a trace of each context to the file `KRB5_TRACE` names,
reading the variable whenever a context is created. At start-up with debug
level 3 (and no `KRB5_TRACE` of the administrator's own), the daemon points
it at the write end of a pipe and a thread logs each line at level 3: the
trace names keys, tickets and enctypes, so it stays at the level that may
show secrets. Under systemd stderr is the journal, so a trace file of the
library's own would go nowhere an administrator looks (gssapi/gssproxy#44).

Started once, before the event loop and any worker thread exist: changing
the environment while other threads may read it is not safe in C. A
reload that raises the level to 3 does not start it; a restart does.
"""

from __future__ import annotations

import logging
import os
import threading

from gssproxy_py.rpc.dispatch import SECRETS_LOG_LEVEL

__all__ = ["TRACE_LOGGER_NAME", "start_trace_bridge"]

TRACE_LOGGER_NAME = "gssproxy_py.krb5trace"
_log = logging.getLogger(TRACE_LOGGER_NAME)
#: The pipe's write end: it stays open for the daemon's life (the library
#: opens it again by name for every context).
_write_end: int | None = None


def _pump(read_end: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    _log.log(SECRETS_LOG_LEVEL, "krb5: %s", line.decode("utf-8", "replace"))


def start_trace_bridge(owner_uid: int | None = None) -> bool:
    """Route the Kerberos trace into our log; False if `KRB5_TRACE` was
    already set (the administrator's destination wins) or it is running.

    `owner_uid`: the `run_as_user` the daemon will become, who must still be
    able to open the pipe by name.
    """
    global _write_end
    if _write_end is not None or os.environ.get("KRB5_TRACE"):
        return False
    read_end, write_end = os.pipe()
    if owner_uid is not None:
        os.fchown(write_end, owner_uid, -1)
    _write_end = write_end
    os.environ["KRB5_TRACE"] = f"/proc/self/fd/{write_end}"
    threading.Thread(target=_pump, args=(read_end,), name="krb5-trace", daemon=True).start()
    return True

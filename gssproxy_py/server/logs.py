"""The daemon's logging: gssproxy's debug levels on top of `logging`, to stderr.

| debug level | what is logged                                                   |
|-------------|------------------------------------------------------------------|
| 0           | warnings and errors, among them one line per failed call         |
| 1           | + a line per connection, call, reload and milestone, and the     |
|             |   initiator of every accepted context (an audit trail)           |
| 2           | + decoded arguments and results (`rpc/redact`: no secret bytes)  |
|             |   and policy decisions                                           |
| 3           | + whole records and the Kerberos library's trace                 |
|             |   (`server/krb5trace`): tokens, keys, cred handles               |

Levels map onto `logging` as INFO (1), DEBUG (2) and `SECRETS_LOG_LEVEL` (3),
so any layer logs with a plain logger and the threshold decides. Level 3 is
the only one that may reveal secrets; the `--debug-level` help says so.

The milestone lines that gssproxy's test suite (and ours) waits for are
logged at level 1 with the exact texts below.

When stderr is the journal (systemd sets `JOURNAL_STREAM` to the device and
inode of the stream it gave us), each line starts with its syslog priority
as `<N>` and carries no timestamp or PID of its own (the journal adds both),
so `journalctl -p warning -u gssproxy-py` selects by level.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from gssproxy_py.gss.status import STATUS_LOGGER_NAME
from gssproxy_py.rpc.dispatch import SECRETS_LOG_LEVEL

READY_MESSAGE = "Initialization complete."
RELOADED_MESSAGE = "New config loaded successfully."
#: A worker process's readiness (`server.workers`); not READY_MESSAGE, which
#: means the whole daemon.
WORKER_READY_MESSAGE = "Worker process ready."

DEBUG_LEVEL_HELP = (
    "0: warnings and errors, with one line per failed call; 1 (-d): also a line per "
    "connection and call and who authenticated to which service; 2: also decoded "
    "requests and results, secrets left out; 3: everything, INCLUDING SECRETS (whole "
    "records, the Kerberos library's KRB5_TRACE) - never use 3 outside a test system"
)

_FORMAT = "%(asctime)s gssproxy-py[%(process)d]: %(levelname)s: %(message)s"
_JOURNAL_FORMAT = "%(levelname)s: %(message)s"

#: syslog(3) priorities by `logging` level (sd-daemon(3) prefixes).
_LOG_CRIT, _LOG_ERR, _LOG_WARNING, _LOG_INFO, _LOG_DEBUG = 2, 3, 4, 6, 7

logging.addLevelName(SECRETS_LOG_LEVEL, "SECRET")


class _DaemonHandler(logging.StreamHandler[TextIO]):
    """Our stderr handler, told apart from any other one on the root logger."""


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a `logging` level (SECRET and DEBUG are debug)."""
    if levelno >= logging.CRITICAL:
        return _LOG_CRIT
    if levelno >= logging.ERROR:
        return _LOG_ERR
    if levelno >= logging.WARNING:
        return _LOG_WARNING
    if levelno >= logging.INFO:
        return _LOG_INFO
    return _LOG_DEBUG


class _JournalFormatter(logging.Formatter):
    """`<N>` priority prefixes, no timestamp: what journald parses on a stream."""

    def __init__(self) -> None:
        super().__init__(_JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        # Every line of a traceback too, or it would reach the journal at the
        # stream's default priority.
        return prefix + super().format(record).replace("\n", "\n" + prefix)


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `stream` is the journal stream `JOURNAL_STREAM` (DEV:INODE) names."""
    dev, sep, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


def level_for(debug_level: int) -> int:
    """The `logging` threshold for a gssproxy debug level."""
    if debug_level <= 0:
        return logging.WARNING
    if debug_level == 1:
        return logging.INFO
    if debug_level == 2:
        return logging.DEBUG
    return SECRETS_LOG_LEVEL


def configure_logging(debug_level: int, stream: TextIO | None = None) -> None:
    """Send all logging to stderr (or `stream`) at `debug_level`.

    Installs one handler on the root logger, so libraries' and every layer's
    loggers are covered; calling it again only changes the level.
    """
    root = logging.getLogger()
    if not any(isinstance(h, _DaemonHandler) for h in root.handlers):
        out = stream if stream is not None else sys.stderr
        handler = _DaemonHandler(out)
        journal = stream_is_journal(out)
        handler.setFormatter(_JournalFormatter() if journal else logging.Formatter(_FORMAT))
        root.addHandler(handler)
    set_debug_level(debug_level)


def set_debug_level(debug_level: int) -> None:
    logging.getLogger().setLevel(level_for(debug_level))


def effective_debug_level(cli_level: int | None, config_level: int) -> int:
    """The command line wins when it set a level (`-d`, `--debug-level`), as in
    gssproxy; otherwise the configuration's `debug`/`debug_level` apply."""
    return cli_level if cli_level is not None else config_level


#: Where syslog(3) writes; a path so tests can point it at their own socket.
SYSLOG_SOCKET = "/dev/log"


class _StatusSyslogHandler(logging.handlers.SysLogHandler):
    """`syslog_status`: every GSS failure to syslog as LOG_AUTHPRIV (gssproxy's facility)."""


def set_status_syslog(enabled: bool, address: str = SYSLOG_SOCKET) -> None:
    """Switch `syslog_status` on or off (at start-up and on every reload)."""
    status_log = logging.getLogger(STATUS_LOGGER_NAME)
    status_log.propagate = False  # the status lines are for syslog only
    current = [h for h in status_log.handlers if isinstance(h, _StatusSyslogHandler)]
    if not enabled:
        # Back to the inherited level: with nothing to send them to, the
        # status lines are not even formatted.
        status_log.setLevel(logging.NOTSET)
        for h in current:
            status_log.removeHandler(h)
            h.close()
        return
    status_log.setLevel(logging.INFO)
    if current:
        return
    if not os.path.exists(address):
        logging.getLogger(__name__).warning(
            "syslog_status is on but %s does not exist: GSS failures go to syslog only "
            "once a syslog daemon listens there",
            address,
        )
    handler = _StatusSyslogHandler(
        address=address, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV
    )
    handler.setFormatter(logging.Formatter("gssproxy-py[%(process)d]: %(message)s"))
    status_log.addHandler(handler)

"""The one log line of a failed GSS call, at the default level, rate-limited.

Every failed call (a refusal for want of a matching service included) gets
one WARNING line, written by `status.status_for_exception`:

    GSSX_ACCEPT_SEC_CONTEXT failed for uid 0 pid 4242 program /usr/sbin/rpc.gssd,
    service 'nfs-server': major 0x000d0000 (Unspecified GSS failure...),
    minor 2529638947 (Request ticket server nfs/h@R not found in keytab
    (ticket kvno 2)); why: the keytab /etc/krb5.keytab holds nfs/h@R with
    kvno 1, but the client's ticket is for kvno 2: ...

`why` is, first, what the file shows for a failure the acceptor's keytab
explains (`keytabs.diagnose`: missing, unreadable, corrupt, another
principal, an old kvno), or the clock-skew advice; then what the layer that
raised the failure knew (`GssFailure.explanation`); then what the krb5 code
alone says (`status.explain_failure`); then what the GSS major code means.

Repeats of the same (uid, service, major, minor, explanation) within
`REPEAT_INTERVAL` seconds are counted instead of logged; the next line says
"and N more like it in the last 10 s". If no next line comes, the daemon's
loop calls `flush_repeats` (about once a second), which says the count in a
line of its own once the interval has ended:

    and 16 more failed calls like the last one for uid 0, service 'nfs-server'
    (major 0x000d0000, minor 2529638947) in the last 10 s
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gssproxy_py.config.expand import expand_cred_store_value
from gssproxy_py.config.model import Service
from gssproxy_py.gss import keytabs, status
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM, GSSPROXYVERS, GSSX_ACCEPT_SEC_CONTEXT
from gssproxy_py.ratelimit import RepeatLimits
from gssproxy_py.rpc.dispatch import CallInfo

__all__ = ["REPEAT_INTERVAL", "failure_line", "flush_repeats", "log_failure", "why_failed"]

REPEAT_INTERVAL: Final = 10.0
_log = logging.getLogger(__name__)
#: `syslog_status` sends the failure lines to syslog: their counts go too.
_status_log = logging.getLogger(status.STATUS_LOGGER_NAME)


@dataclass(frozen=True, slots=True)
class RepeatKey:
    """What makes two failures the same for counting repeats."""

    uid: int | None
    service: str | None
    major: int
    minor: int
    explanation: str | None

    def repeated_line(self, count: int) -> str:
        """The line of `count` repeats that no later line reported."""
        who = f"uid {self.uid}" if self.uid is not None else "a caller"
        where = f"service '{self.service}'" if self.service is not None else "no service"
        return (
            f"and {count} more failed calls like the last one for {who}, {where} "
            f"(major 0x{self.major:08x}, minor {self.minor}) in the last {REPEAT_INTERVAL:g} s"
        )


_repeats = RepeatLimits[RepeatKey](REPEAT_INTERVAL)

#: Failures the acceptor's keytab explains (besides a clock skew).
KEYTAB_CODES: Final = frozenset(
    {
        status.KRB5_KT_NOTFOUND,
        status.KRB5_KT_END,
        status.KRB5KRB_AP_ERR_BAD_INTEGRITY,
        status.KRB5KRB_AP_ERR_NOT_US,
        status.KRB5KRB_AP_ERR_BADKEYVER,
        status.KRB5KRB_AP_ERR_NOKEY,
        status.KRB5_KT_IOERR,
        status.KRB5_KEYTAB_BADVNO,
        status.KRB5_KT_KVNONOTFOUND,
        status.KRB5_KT_FORMAT,
    }
)

#: MIT's texts name the ticket's server and kvno: "Request ticket server
#: P kvno 2 not found in keytab; ..." or "... not found in keytab (ticket kvno 2)".
_TICKET_SERVER = re.compile(r"ticket server (\S+?)(?: kvno (\d+))? not found in keytab")
_TICKET_KVNO = re.compile(r"\(ticket kvno (\d+)\)")

#: What each GSS routine error means for an administrator, when nothing
#: more precise is known.
_MAJOR_WHY: Final = {
    status.GSS_S_BAD_MECH: "the client asked for a mechanism other than krb5",
    status.GSS_S_BAD_NAME: "the client gave a name that cannot be used",
    status.GSS_S_BAD_NAMETYPE: "the client gave a name of a type krb5 does not take",
    status.GSS_S_NO_CRED: "no credentials were available for this caller",
    status.GSS_S_NO_CONTEXT: (
        "the security context is unknown (expired, released, or issued by an earlier "
        "daemon): the client must authenticate again"
    ),
    status.GSS_S_DEFECTIVE_TOKEN: "the client's token is malformed, truncated or not Kerberos",
    status.GSS_S_DEFECTIVE_CREDENTIAL: "the credential is damaged or belongs to another service",
    status.GSS_S_CREDENTIALS_EXPIRED: "the credentials expired: renew the ticket or the keytab",
    status.GSS_S_UNAUTHORIZED: "this service's policy refuses it (trusted, impersonate, allow_*)",
    status.GSS_S_UNAVAILABLE: "this service cannot do that",
}


def procedure_name(number: int) -> str:
    procs = GSSPROXY_PROGRAM.versions[GSSPROXYVERS].procedures
    proc = procs.get(number)
    return proc.name if proc is not None else f"procedure {number}"


def _acceptor_keytabs(service: Service, uid: int) -> list[str]:
    """The service's `keytab` files for caller `uid`; names with `%u` (an
    NSS lookup, not done on the failure path) are left out."""
    paths = []
    for value in service.cred_store_values("keytab"):
        if "%u" in value.replace("%%", ""):
            continue
        path = keytabs.keytab_path(expand_cred_store_value(value, uid))
        if path is not None:
            paths.append(path)
    return paths


def _keytab_why(failure: status.GssFailure, call: CallInfo) -> str | None:
    service = call.service
    minor = failure.minor & 0xFFFFFFFF
    if service is None:
        return None
    if minor == status.KRB5KRB_AP_ERR_SKEW:
        return (
            f"the clocks of the client (uid {call.peer.uid}, pid {call.peer.pid}) and of this "
            "host differ by more than krb5.conf's clockskew (300 s by default): check time "
            "synchronisation (chrony or ntpd) on both"
        )
    if minor not in KEYTAB_CODES or (
        call.procedure != GSSX_ACCEPT_SEC_CONTEXT and "eytab" not in failure.message
    ):
        return None
    principal = service.krb5_principal
    kvno: int | None = None
    if match := _TICKET_SERVER.search(failure.message):
        principal = match.group(1)
        if match.group(2):
            kvno = int(match.group(2))
    if match := _TICKET_KVNO.search(failure.message):
        kvno = int(match.group(1))
    paths = _acceptor_keytabs(service, call.peer.uid)
    for path in paths:
        found = keytabs.diagnose(path, principal=principal, kvno=kvno)
        if found is not None:
            return found
    if not paths:
        return None
    if minor == status.KRB5KRB_AP_ERR_BAD_INTEGRITY:
        return (
            f"the keytab {paths[0]} holds {principal or 'the service principal'} with the "
            "ticket's kvno, but its key does not decrypt the ticket: the key changed on the "
            "KDC without a new kvno, or the keytab comes from another KDC; export it again"
        )
    return None


def why_failed(failure: status.GssFailure, call: CallInfo | None) -> str:
    """Why the call failed, in an administrator's words (see the module docstring)."""
    found = _keytab_why(failure, call) if call is not None else None
    found = found or failure.explanation or status.explain_failure(failure)
    if found:
        return found
    routine = failure.major & 0xFF0000
    if failure.major >> 24:
        return "the client's request was malformed (a GSS calling error)"
    return _MAJOR_WHY.get(routine) or "the Kerberos library refused it; the minor status says how"


def _who(call: CallInfo) -> str:
    peer = call.peer
    program = peer.program or "(unknown)"
    where = f"service '{call.service.name}'" if call.service is not None else "no service"
    return f"uid {peer.uid} pid {peer.pid} program {program}, {where}"


def failure_line(failure: status.GssFailure, call: CallInfo | None, why: str, repeats: int) -> str:
    """The text of the line (without the connection prefix the logger adds)."""
    what = procedure_name(call.procedure) if call is not None else "GSS call"
    head = f"{what} failed for {_who(call)}: " if call is not None else f"{what} failed: "
    major_text = failure.major_message or status.major_messages(failure.major)
    # A refusal's minor text is its reason already: said once, as the why.
    minor_text = f" ({failure.message})" if failure.message and failure.message != why else ""
    line = (
        f"{head}major 0x{failure.major & 0xFFFFFFFF:08x} ({major_text}), "
        f"minor {failure.minor & 0xFFFFFFFF}{minor_text}; why: {why}"
    )
    if repeats:
        line += f"; and {repeats} more like it in the last {REPEAT_INTERVAL:g} s"
    return line


def log_failure(
    failure: status.GssFailure,
    log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    call: CallInfo | None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Write the failure's line (unless it repeats one of the last
    `REPEAT_INTERVAL` seconds); the line's text, or None if held back."""
    key = RepeatKey(
        call.peer.uid if call is not None else None,
        call.service.name if call is not None and call.service is not None else None,
        failure.major & 0xFFFFFFFF,
        failure.minor & 0xFFFFFFFF,
        failure.explanation,
    )
    repeats = _repeats.admit(key, clock())
    if repeats is None:
        return None
    line = failure_line(failure, call, why_failed(failure, call), repeats)
    log.warning("%s", line)
    return line


def flush_repeats(now: float | None = None) -> list[str]:
    """Log the count of each failure whose repeats no later line reported
    and whose interval has ended (`now`: `time.monotonic()`, the clock of
    `log_failure`); the lines written."""
    due = _repeats.flush(time.monotonic() if now is None else now)
    lines = [key.repeated_line(count) for key, count in due]
    for line in lines:
        _log.warning("%s", line)
        _status_log.info("%s", line)
    return lines


def forget_repeats() -> None:
    """Start counting afresh (tests; a reload keeps the counts)."""
    _repeats.clear()

"""GSS status codes, the `GssFailure` exception, and the one mapping to `GssxStatus`.

Inside the gss layer every GSS-level failure is a `GssFailure(major, minor,
message)`: raised by policy code with our own minor codes (errno values, as
gssproxy uses), or converted from python-gssapi's `GSSError` by
`failure_from_gsserror` *in the worker thread that got the error* (MIT keeps
the extended krb5 message text, "Key table file '/x' not found", per thread,
so it must be read there).

`status_for_exception` is the only place that turns an exception into a
`GssxStatus`; the procedure layer catches everything with it, so the server
never sees a GSS error as an exception. Other errors follow the project's
split by fault (`errors.py`): a `PeerError` (the caller sent something we
refuse) becomes GSS_S_FAILURE with EINVAL and its own message, which
describes the caller's input; a `LocalError` (ours or the administrator's:
a key file, a namespace, a lookup) becomes GSS_S_FAILURE with a generic
message, its text logged as an error without a traceback; anything else
is a bug: the same generic status, logged with the traceback.

Status strings are NUL-terminated and their length includes the NUL, as
gssproxy sends them (`gp_conv_err_to_gssx_string`); a string is sent only for
a non-zero code.

Every failure is logged once, as a warning, by `failure_log`: the caller,
the service, the codes with their texts, and *why* in words an
administrator can act on: what the acceptor's keytab shows, else
`GssFailure.explanation` when the layer that raised it knew more
(`policy.explaining`: which keytab or ccache of which uid), else
`explain_failure` from the krb5 code alone (KDC unreachable, principal
unknown), else what the major code means. Repeats are rate-limited. The
status sent to the client keeps the mechanism's own texts.
"""

from __future__ import annotations

import errno
import logging
from typing import Any, Final

from gssproxy_py.errors import GssProxyError, LocalError, PeerError
from gssproxy_py.proto.gss_proxy import GssxStatus
from gssproxy_py.rpc.dispatch import CallInfo

# The codes are protocol vocabulary, shared with the clients; the gss layer
# takes them from here, with the rest of what a status is.
from gssproxy_py.vocab.gss_status import (
    GSS_S_BAD_MECH,
    GSS_S_BAD_NAME,
    GSS_S_BAD_NAMETYPE,
    GSS_S_CALL_BAD_STRUCTURE,
    GSS_S_COMPLETE,
    GSS_S_CONTINUE_NEEDED,
    GSS_S_CREDENTIALS_EXPIRED,
    GSS_S_DEFECTIVE_CREDENTIAL,
    GSS_S_DEFECTIVE_TOKEN,
    GSS_S_FAILURE,
    GSS_S_NO_CONTEXT,
    GSS_S_NO_CRED,
    GSS_S_UNAUTHORIZED,
    GSS_S_UNAVAILABLE,
)

__all__ = [
    "GSS_S_BAD_MECH",
    "GSS_S_BAD_NAME",
    "GSS_S_BAD_NAMETYPE",
    "GSS_S_CALL_BAD_STRUCTURE",
    "GSS_S_COMPLETE",
    "GSS_S_CONTINUE_NEEDED",
    "GSS_S_CREDENTIALS_EXPIRED",
    "GSS_S_DEFECTIVE_CREDENTIAL",
    "GSS_S_DEFECTIVE_TOKEN",
    "GSS_S_FAILURE",
    "GSS_S_NO_CONTEXT",
    "GSS_S_NO_CRED",
    "GSS_S_UNAUTHORIZED",
    "GSS_S_UNAVAILABLE",
    "GssFailure",
    "explain_failure",
    "failure_from_gsserror",
    "major_messages",
    "nul_terminated",
    "ok_status",
    "status_for_exception",
    "status_from_failure",
]


_ROUTINE_MASK: Final = 0xFF << 16
_U64_MAX: Final = (1 << 64) - 1

#: The logger `syslog_status` sends to syslog (server/logs.set_status_syslog);
#: it does not propagate, so without that option nothing is written twice.
STATUS_LOGGER_NAME = "gssproxy_py.status"
_status_log = logging.getLogger(STATUS_LOGGER_NAME)
_status_log.propagate = False

#: What a client sees for a failure we did not expect; details stay in our log.
GENERIC_FAILURE_MESSAGE: Final = "internal error in gssproxy-py (see the daemon log)"

# Our own minor codes are errno values, as in gssproxy (EACCES for policy
# refusals, EINVAL for bad options, ENOENT for unknown things).
EACCES: Final = errno.EACCES
EINVAL: Final = errno.EINVAL
ENOENT: Final = errno.ENOENT
EPERM: Final = errno.EPERM

# MIT krb5 error codes as they arrive in a minor status (u32).
_KRB5_BASE: Final = -1765328384  # ERROR_TABLE_BASE_krb5
KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN: Final = (_KRB5_BASE + 6) & 0xFFFFFFFF
KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN: Final = (_KRB5_BASE + 7) & 0xFFFFFFFF
KRB5_REALM_UNKNOWN: Final = (_KRB5_BASE + 154) & 0xFFFFFFFF
KRB5_KDC_UNREACH: Final = (_KRB5_BASE + 156) & 0xFFFFFFFF
KRB5_REALM_CANT_RESOLVE: Final = (_KRB5_BASE + 220) & 0xFFFFFFFF
KRB5_CC_NOTFOUND: Final = (_KRB5_BASE + 141) & 0xFFFFFFFF
KRB5_KT_NOTFOUND: Final = (_KRB5_BASE + 181) & 0xFFFFFFFF
KRB5_KT_END: Final = (_KRB5_BASE + 182) & 0xFFFFFFFF
KRB5_FCC_NOFILE: Final = (_KRB5_BASE + 195) & 0xFFFFFFFF
KRB5_CC_FORMAT: Final = (_KRB5_BASE + 199) & 0xFFFFFFFF
KRB5KRB_AP_ERR_BAD_INTEGRITY: Final = (_KRB5_BASE + 31) & 0xFFFFFFFF
KRB5KRB_AP_ERR_NOT_US: Final = (_KRB5_BASE + 35) & 0xFFFFFFFF
KRB5KRB_AP_ERR_SKEW: Final = (_KRB5_BASE + 37) & 0xFFFFFFFF
KRB5KRB_AP_ERR_BADKEYVER: Final = (_KRB5_BASE + 44) & 0xFFFFFFFF
KRB5KRB_AP_ERR_NOKEY: Final = (_KRB5_BASE + 45) & 0xFFFFFFFF
KRB5_KT_IOERR: Final = (_KRB5_BASE + 184) & 0xFFFFFFFF
KRB5_KEYTAB_BADVNO: Final = (_KRB5_BASE + 213) & 0xFFFFFFFF
KRB5_KT_KVNONOTFOUND: Final = (_KRB5_BASE + 230) & 0xFFFFFFFF
KRB5_KT_FORMAT: Final = (_KRB5_BASE + 235) & 0xFFFFFFFF

#: No KDC answered (or none is known) for the realm.
KDC_UNREACHABLE_CODES: Final = frozenset(
    {KRB5_KDC_UNREACH, KRB5_REALM_UNKNOWN, KRB5_REALM_CANT_RESOLVE}
)
#: The store had nothing to acquire from (missing, empty or unusable files).
NO_CREDENTIALS_CODES: Final = frozenset(
    {
        KRB5_FCC_NOFILE,
        KRB5_CC_NOTFOUND,
        KRB5_CC_FORMAT,
        KRB5_KT_NOTFOUND,
        KRB5_KT_END,
    }
)


class GssFailure(GssProxyError):  # noqa: N818 -- the name the gss layer is written against
    """A GSS-level failure inside the gss layer: a status, not a crash.

    `message` is the minor-status text (the krb5 message for krb5 errors, our
    explanation for policy refusals); `major_message` overrides the standard
    text for `major` (normally left None). `explanation` is for the log only:
    why, in an administrator's terms (set by whoever knows the context).
    """

    def __init__(
        self,
        major: int,
        minor: int,
        message: str,
        *,
        major_message: str | None = None,
        explanation: str | None = None,
    ) -> None:
        self.major = major
        self.minor = minor
        self.message = message
        self.major_message = major_message
        self.explanation = explanation
        super().__init__(f"major 0x{major:08x}, minor {minor}: {message}")


def nul_terminated(text: str) -> bytes:
    """UTF-8 with a trailing NUL: how every status string and option name travels."""
    return text.encode("utf-8", errors="replace") + b"\0"


def major_messages(major: int) -> str:
    """gss_display_status text for a major code, joined with ", " like gssproxy."""
    if major == 0:
        return ""
    try:
        from gssapi.raw.misc import GSSError

        # Building a GSSError only formats texts; major codes need no mech.
        texts: list[str] = GSSError(major, 0).get_all_statuses(major, True)
    except Exception:  # display failures must never turn a status into a crash
        texts = []
    return ", ".join(texts) if texts else f"GSS major status 0x{major:08x}"


def failure_from_gsserror(exc: Any) -> GssFailure:
    """Convert a python-gssapi GSSError; call it in the thread that raised it."""
    major = int(getattr(exc, "maj_code", GSS_S_FAILURE)) & 0xFFFFFFFF
    minor = int(getattr(exc, "min_code", 0)) & 0xFFFFFFFF
    minor_text = ""
    if minor:
        try:
            minor_text = ", ".join(exc.get_all_statuses(minor, False))
        except Exception:
            minor_text = ""
    if not major:
        # A GSSError with major 0 would read as success on the wire.
        major = GSS_S_FAILURE
    return GssFailure(major, minor, minor_text)


def explain_failure(failure: GssFailure) -> str | None:
    """Why a failure happened, from its krb5 code alone; None if the code says nothing.

    The mechanism's message (which names the realm or the principal) is kept
    in the text.
    """
    minor = failure.minor & 0xFFFFFFFF
    detail = f" ({failure.message})" if failure.message else ""
    if minor in KDC_UNREACHABLE_CODES:
        return (
            f"KDC unreachable{detail}: check that the KDC is running and that "
            "krb5.conf names its address for the realm"
        )
    if minor == KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN:
        return (
            f"principal unknown to the KDC{detail}: the credentials name a client principal "
            "the KDC does not have (deleted, renamed or another realm's keytab?)"
        )
    if minor == KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN:
        return (
            f"target principal unknown to the KDC{detail}: create the service's principal, "
            "or check the host name the client asked for"
        )
    return None


def _is_gsserror(exc: BaseException) -> bool:
    try:
        from gssapi.raw.misc import GSSError
    except ImportError:  # pragma: no cover - gssapi is a hard dependency
        return False
    return isinstance(exc, GSSError)


def ok_status(mech: bytes, major: int = GSS_S_COMPLETE) -> GssxStatus:
    """A success (or CONTINUE_NEEDED) status carrying `mech`."""
    return GssxStatus(
        major_status=major,
        mech=mech,
        minor_status=0,
        major_status_string=b"",
        minor_status_string=b"",
        server_ctx=b"",
        options=(),
    )


def status_from_failure(failure: GssFailure, mech: bytes) -> GssxStatus:
    """The wire status for a `GssFailure`: codes as u64, strings NUL-terminated."""
    major = failure.major & _U64_MAX
    minor = failure.minor & _U64_MAX
    major_text = (
        failure.major_message if failure.major_message is not None else major_messages(major)
    )
    return GssxStatus(
        major_status=major,
        mech=mech,
        minor_status=minor,
        major_status_string=nul_terminated(major_text) if major else b"",
        # gssproxy sends a minor string only for a non-zero minor; our policy
        # refusals always have one, so the reason always reaches the client.
        minor_status_string=nul_terminated(failure.message) if failure.message else b"",
        server_ctx=b"",
        options=(),
    )


def _failure_for(
    exc: BaseException, log: logging.LoggerAdapter[logging.Logger] | logging.Logger
) -> GssFailure:
    """The GSS failure an exception stands for (see the module docstring)."""
    if isinstance(exc, GssFailure):
        return exc
    if _is_gsserror(exc):
        # Normally converted in the worker already; this path loses only the
        # extended text, never the codes.
        return failure_from_gsserror(exc)
    if isinstance(exc, PeerError):
        return GssFailure(GSS_S_FAILURE, EINVAL, str(exc))
    if isinstance(exc, LocalError):
        log.error("GSS call failed on our side: %s", exc)
    else:
        log.error("unexpected error in a GSS procedure: %r", exc, exc_info=exc)
    return GssFailure(GSS_S_FAILURE, 0, GENERIC_FAILURE_MESSAGE)


def status_for_exception(
    exc: BaseException,
    mech: bytes,
    log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    *,
    call: CallInfo | None = None,
) -> GssxStatus:
    """The one mapping from anything raised inside a procedure to a `GssxStatus`.

    A failure is logged once, as a WARNING naming the caller, the service and
    why (`failure_log`), and the same line goes to syslog with `syslog_status`.
    """
    # failure_log builds on this module (codes, texts): imported when used.
    from gssproxy_py.gss import failure_log

    failure = _failure_for(exc, log)
    if failure.major & _ROUTINE_MASK or failure.major >> 24:
        line = failure_log.log_failure(failure, log, call)
        if line is not None:
            # syslog_status: the same line, with the caller's prefix, for syslog only.
            msg, _ = log.process(line, {}) if isinstance(log, logging.LoggerAdapter) else (line, {})
            _status_log.info("%s", msg)
    return status_from_failure(failure, mech)

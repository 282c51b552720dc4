"""Errors of the PKCS#11 layer, and how each becomes a token-sign status.

Two kinds, split like the project root: `Refusal` (a `PeerError`: the
caller asked for something it may not have or that cannot work, such as an
unknown key or a mechanism the key cannot do) and `TokenFailure` (a
`LocalError`: the module, the token, the PIN or the daemon failed). Both
carry the wire status, a message for the client and, for token failures, the
PKCS#11 return value's name. Messages name keys, tokens and PIN sources,
never PIN values.

`CkrError` is what the python-pkcs11 adapter raises for a failed C_* call; the
token layer turns it into a `TokenFailure` (or a `Refusal` where the CKR means
bad input) with `failure_from_ckr`.
"""

from __future__ import annotations

from typing import Final

from gssproxy_py.errors import GssProxyError, LocalError, PeerError
from gssproxy_py.proto.token_sign import TsFailure, TsStatus

__all__ = [
    "PIN_CKRS",
    "SESSION_LOST_CKRS",
    "TOKEN_GONE_CKRS",
    "CkrError",
    "ModuleLoadError",
    "PinSourceError",
    "Refusal",
    "SignFailure",
    "TokenFailure",
    "failure_from_ckr",
]


class SignFailure(GssProxyError):  # noqa: N818 -- a call outcome, not a bug
    """A call's failure as the client will see it: status, message, CKR name."""

    status: TsStatus
    message: str
    ckr: str

    def __init__(self, status: TsStatus, message: str, ckr: str = "") -> None:
        if status is TsStatus.TS_OK:
            raise ValueError("a failure cannot have status TS_OK")
        self.status = status
        self.message = message
        self.ckr = ckr
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} ({self.ckr})" if self.ckr else self.message

    def to_wire(self) -> TsFailure:
        return TsFailure(message=self.message.encode("utf-8"), ckr=self.ckr.encode("ascii"))


class Refusal(SignFailure, PeerError):  # noqa: N818 -- a call outcome, not a bug
    """The caller's request cannot be served (unknown key, bad mechanism...)."""


class TokenFailure(SignFailure, LocalError):  # noqa: N818 -- a call outcome, not a bug
    """The module, token or PIN failed, or the daemon did."""


class ModuleLoadError(LocalError):
    """A PKCS#11 module could not be loaded or initialised."""


class PinSourceError(LocalError):
    """A configured PIN source could not be read or is unsafe. The message
    names the source (key description or path), never its content."""


class CkrError(LocalError):
    """A PKCS#11 call returned an error; `ckr` is its CKR_* name ("" if the
    library gave none) and `call` what we were doing."""

    def __init__(self, ckr: str, call: str, detail: str = "") -> None:
        self.ckr = ckr
        self.call = call
        self.detail = detail
        what = ckr or detail or "unknown error"
        super().__init__(f"{call} failed: {what}")


#: The session (or the login it carried) is gone: reopen and log in again.
#: CKR_OPERATION_ACTIVE is here too: the daemon's sessions are its own, used
#: by one thread and never left in an operation on purpose, so an init that
#: finds one active (a module that kept an operation after failing it, as
#: `function_list` reports for an absurd output size) means the session is
#: unusable as it is.
SESSION_LOST_CKRS: Final = frozenset(
    {
        "CKR_OPERATION_ACTIVE",
        "CKR_SESSION_HANDLE_INVALID",
        "CKR_SESSION_CLOSED",
        "CKR_USER_NOT_LOGGED_IN",
        "CKR_DEVICE_REMOVED",
        "CKR_TOKEN_NOT_PRESENT",
        "CKR_OBJECT_HANDLE_INVALID",
        "CKR_KEY_HANDLE_INVALID",
        "CKR_CRYPTOKI_NOT_INITIALIZED",
    }
)

#: The token itself is gone (until it comes back).
TOKEN_GONE_CKRS: Final = frozenset(
    {
        "CKR_DEVICE_REMOVED",
        "CKR_TOKEN_NOT_PRESENT",
        "CKR_TOKEN_NOT_RECOGNIZED",
        "CKR_SLOT_ID_INVALID",
    }
)

#: C_Login outcomes that are about the PIN.
PIN_CKRS: Final = frozenset(
    {
        "CKR_PIN_INCORRECT",
        "CKR_PIN_INVALID",
        "CKR_PIN_LEN_RANGE",
        "CKR_PIN_LOCKED",
        "CKR_PIN_EXPIRED",
        "CKR_USER_PIN_NOT_INITIALIZED",
    }
)

_PIN_WORDS: Final = {
    "CKR_PIN_INCORRECT": "the token rejected the configured PIN",
    "CKR_PIN_INVALID": "the configured PIN has characters the token does not accept",
    "CKR_PIN_LEN_RANGE": "the configured PIN has a length the token does not accept",
    "CKR_PIN_LOCKED": "the token's user PIN is locked",
    "CKR_PIN_EXPIRED": "the token's user PIN has expired and must be changed",
    "CKR_USER_PIN_NOT_INITIALIZED": "the token has no user PIN set",
}

# CKRs that mean the request could not work with this key, not that the
# token is broken: reported as the caller's problem.
_INPUT_CKRS: Final = {
    "CKR_MECHANISM_INVALID": TsStatus.TS_BAD_MECHANISM,
    "CKR_MECHANISM_PARAM_INVALID": TsStatus.TS_BAD_MECHANISM,
    "CKR_KEY_TYPE_INCONSISTENT": TsStatus.TS_BAD_MECHANISM,
    "CKR_KEY_FUNCTION_NOT_PERMITTED": TsStatus.TS_BAD_MECHANISM,
    "CKR_DATA_LEN_RANGE": TsStatus.TS_BAD_INPUT,
    "CKR_DATA_INVALID": TsStatus.TS_BAD_INPUT,
}


def failure_from_ckr(err: CkrError, what: str) -> SignFailure:
    """The client-facing failure for a CKR error met while doing `what`
    ("signing with pkcs11:...", "logging in to token X")."""
    ckr = err.ckr
    if ckr in PIN_CKRS:
        return TokenFailure(TsStatus.TS_PIN_ERROR, f"{what}: {_PIN_WORDS[ckr]}", ckr)
    if ckr in TOKEN_GONE_CKRS:
        return TokenFailure(TsStatus.TS_TOKEN_UNAVAILABLE, f"{what}: the token is not present", ckr)
    status = _INPUT_CKRS.get(ckr)
    if status is not None:
        return Refusal(status, f"{what}: the token refused the request", ckr)
    detail = f" ({err.detail})" if err.detail and not ckr else ""
    return TokenFailure(TsStatus.TS_TOKEN_ERROR, f"{what}: {err.call} failed{detail}", ckr)

"""`%U` / `%u` / `%%` substitution in `cred_store` values.

gssproxy expands these per request for the uid the credentials are acquired
for (the peer's uid, or the uid a trusted service named): `%U` is the uid in
decimal, `%u` the user name from the password database, `%%` a literal `%`.
Any other `%x`, and a `%` at the end of the value, is an error; the option
layer checks templates at load time with `check_template` so that the error
points at the configuration line instead of failing a request later.

Pure except for the `pwd` lookup behind `%u`.
"""

from __future__ import annotations

import pwd
from collections.abc import Iterable

from gssproxy_py.errors import ConfigError, LocalError


class UnknownUserError(LocalError):
    """`%u` was needed for a uid that has no password-database entry."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        super().__init__(f"uid {uid} has no user name (needed to expand %u)")


_KNOWN = frozenset("Uu%")


def check_template(value: str) -> None:
    """Raise ConfigError (no location) if `value` has an unknown `%` escape."""
    i = value.find("%")
    while i != -1:
        if i + 1 >= len(value):
            raise ConfigError("'%' at the end of the value; write '%%' for a literal '%'")
        escape = value[i + 1]
        if escape not in _KNOWN:
            raise ConfigError(f"unknown escape '%{escape}'; only %U, %u and %% are allowed")
        i = value.find("%", i + 2)


def expand_cred_store_value(value: str, uid: int) -> str:
    """Expand `%U`, `%u` and `%%` in one `cred_store` value for `uid`.

    Raises UnknownUserError if `%u` appears and `uid` has no passwd entry, and
    ConfigError on an unknown escape.
    """
    check_template(value)
    if "%" not in value:
        return value
    out: list[str] = []
    name: str | None = None
    i = 0
    while True:
        j = value.find("%", i)
        if j == -1:
            out.append(value[i:])
            break
        out.append(value[i:j])
        escape = value[j + 1]
        if escape == "U":
            out.append(str(uid))
        elif escape == "u":
            if name is None:
                name = _user_name(uid)
            out.append(name)
        else:
            out.append("%")
        i = j + 2
    return "".join(out)


def expand_cred_store(pairs: Iterable[tuple[str, str]], uid: int) -> tuple[tuple[str, str], ...]:
    """Expand every value of a service's `cred_store` pairs (keys are kept)."""
    return tuple((key, expand_cred_store_value(value, uid)) for key, value in pairs)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        raise UnknownUserError(uid) from None

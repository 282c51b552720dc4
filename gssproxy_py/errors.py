"""The one root of every error the project raises, split by whose fault it was.

`PeerError` means the other side sent something we refuse (malformed XDR, a bad
record, a call we do not serve); `LocalError` means the fault is ours or our
administrator's (bad configuration, a missing keytab, a bug). The RPC layer maps
the first kind to RPC-level replies and the second to SYSTEM_ERR or a GSS status,
each in exactly one place.
"""

from __future__ import annotations


class GssProxyError(Exception):
    """Root of all gssproxy-py errors."""


class PeerError(GssProxyError):
    """The peer's fault: malformed or unacceptable input."""


class LocalError(GssProxyError):
    """Our fault or the administrator's: configuration, environment, bugs."""


class XdrError(PeerError):
    """Malformed XDR input. The only error a generated decoder may raise."""


class XdrEncodeError(LocalError):
    """A value we tried to encode does not fit its XDR type (our bug)."""


class ConfigError(LocalError):
    """A configuration problem, located at file, line and option where known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        option: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.option = option
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        opt = f"option '{self.option}': " if self.option else ""
        return f"{where}{opt}{self.message}"

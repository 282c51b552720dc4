"""Errors of the IDL compiler, each located at FILE:LINE:COL."""

from __future__ import annotations

from gssproxy_py.errors import LocalError
from gssproxy_py.xdrgen.ast import Pos


class XdrgenError(LocalError):
    """A syntax or semantic error in a .x file."""

    def __init__(self, file: str, pos: Pos | None, message: str) -> None:
        self.file = file
        self.pos = pos
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.pos is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.pos.line}:{self.pos.column}: {self.message}"

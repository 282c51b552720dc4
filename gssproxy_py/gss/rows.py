"""The type of a row of program 400112's procedure table (`gss.procedures`).

A module of its own so that `gss.procedures` can be compiled with mypyc
(gssproxy_py/compiled.py): mypyc cannot build a generic dataclass, and this
one stays an ordinary Python class the compiled handlers are listed in.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gssproxy_py.gss.credentials import Request
from gssproxy_py.gss.engine import GssEngine
from gssproxy_py.proto.gss_proxy import GssxStatus

_A = TypeVar("_A")
_R = TypeVar("_R")

_Handler = Callable[[GssEngine, Request, _A], Coroutine[Any, Any, _R]]


@dataclass(frozen=True, slots=True)
class GssProcedure(Generic[_A, _R]):
    """One GSS-Proxy procedure: everything the program needs to serve it."""

    number: int
    arg: type[_A]
    result: type[_R]
    handler: _Handler[_A, _R]
    #: may be tried on the event loop (see `gss.inline`); the others (names,
    #: cred import/export/store, init) may wait for DNS, a KDC or a ccache
    #: daemon at once, and always start on a thread
    inline: bool
    #: the result carrying only a failure status (everything else empty)
    failure: Callable[[GssxStatus], _R]


def row(
    number: int,
    arg: type[_A],
    result: type[_R],
    handler: _Handler[_A, _R],
    *,
    inline: bool,
    failure: Callable[[GssxStatus], _R],
) -> GssProcedure[_A, _R]:
    """A row, with its types checked against the handler's (by mypy)."""
    return GssProcedure(number, arg, result, handler, inline, failure)

"""The inline fast path: where a GSS call may wait, and what happens when it would.

Every procedure is a coroutine function, `async def proc_x(engine, req,
arg)`, although no event loop ever runs it: it is driven by hand with
`send`. Each step that may wait (KDC traffic, NSS, a credential store that
is not a local file, a credential not yet imported, PKINIT) is reached only
after `await req.steps.may_wait(reason)`. That awaitable is the one place
that says "not inline":

* on a worker thread (`Steps(inline=False)`) it completes at once;
* on the event loop (`Steps(inline=True)`) it suspends the coroutine the
  first time, and `start` returns a `Continuation` holding it. The rest of
  the call then runs on a worker thread (`Continuation.finish`), from the
  point where it stopped: nothing before it runs twice, so a step with a side
  effect (an accept that consumed its token) is never repeated.

A procedure awaits nothing else; `start` and `run_to_end` refuse a coroutine
that yields anything but the wait point.

`InlineCalls` decides which calls are tried inline at all: only procedures
whose row says so, only for services `inline_safe_service` accepts, and not
while `inline_guard` holds the service back because its inline calls turned
slow. It times the inline part of each call for the guard.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

from gssproxy_py.config.model import Service
from gssproxy_py.gss.inline_guard import InlineGuard
from gssproxy_py.gss.namespaced import is_namespaced
from gssproxy_py.gss.pkinit_creds import pkinit_configured

__all__ = [
    "Continuation",
    "InlineCalls",
    "Steps",
    "inline_safe_service",
    "run_to_end",
    "start",
]

_T = TypeVar("_T")

#: ccache types that are local files, memory or kernel keyrings (KCM, API and
#: unknown types may talk to another daemon: such services never run inline).
_LOCAL_CCACHE_TYPES = frozenset({"FILE", "MEMORY", "KEYRING", "DIR"})


class _Now:
    """A wait point on a worker thread: nothing to do."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # makes this a generator


class _Demote:
    """A wait point on the event loop: suspend, to be resumed on a thread."""

    __slots__ = ()

    def __await__(self) -> Generator[_Demote, None, None]:
        yield self


_NOW = _Now()
_DEMOTE = _Demote()


class Steps:
    """Whether one call is still on the event loop, and why it left it."""

    __slots__ = ("inline", "reason")

    def __init__(self, *, inline: bool) -> None:
        self.inline = inline
        #: the step that sent the call to a thread (None: it did not go)
        self.reason: str | None = None

    def may_wait(self, reason: str) -> _Now | _Demote:
        """Await this before any step that may wait (see the module docstring)."""
        if not self.inline:
            return _NOW
        self.inline = False
        self.reason = reason
        return _DEMOTE


class Continuation(Generic[_T]):
    """The rest of a call that stopped at a wait point on the event loop."""

    __slots__ = ("_coro", "reason")

    def __init__(self, coro: Coroutine[Any, Any, _T], reason: str | None) -> None:
        self._coro = coro
        self.reason = reason

    def finish(self) -> _T:
        """Run the rest to its end (on a worker thread)."""
        return run_to_end(self._coro)

    def close(self) -> None:
        """Give up on the rest (it never ran): its `finally` clauses run now."""
        self._coro.close()


def _unexpected(coro: Coroutine[Any, Any, Any], yielded: object) -> RuntimeError:
    coro.close()
    return RuntimeError(f"a GSS procedure awaited {yielded!r}, not a wait point")


def start(coro: Coroutine[Any, Any, _T], steps: Steps) -> _T | Continuation[_T]:
    """Run a call until it finishes or reaches its first wait point."""
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        result: _T = done.value
        return result
    if yielded is not _DEMOTE:
        raise _unexpected(coro, yielded)
    return Continuation(coro, steps.reason)


def run_to_end(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a call (or its continuation) that may wait to its end: a worker thread."""
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        result: _T = done.value
        return result
    raise _unexpected(coro, yielded)


def inline_safe_service(service: Service) -> bool:
    """Whether this service's calls may be tried inline on the event loop.

    Not for namespaced services (their calls run in their namespace), PKINIT
    from a token (may contact the KDC even on the acquire path), `%u` in the
    cred_store (a user name lookup through NSS), or a ccache that is not a
    local file, memory or keyring (KCM talks to a daemon).
    """
    if is_namespaced(service) or pkinit_configured(service):
        return False
    for key, value in service.cred_store:
        if "%u" in value:
            return False
        if key == "ccache":
            kind, sep, _ = value.partition(":")
            if sep and kind.upper() not in _LOCAL_CCACHE_TYPES:
                return False
    return True


class InlineCalls:
    """Which calls are tried inline, and the timing of those that are.
    Event-loop thread only."""

    def __init__(self, guard: InlineGuard | None = None) -> None:
        self.guard = InlineGuard() if guard is None else guard
        # Keyed by name (unique in a configuration; cleared on reload):
        # hashing a Service hashes every field, on every call.
        self._safe: dict[str, bool] = {}

    def allowed(self, service: Service) -> bool:
        """May a call of this service be tried inline now?"""
        if not self.guard.allowed(service.name):
            return False
        safe = self._safe.get(service.name)
        if safe is None:
            safe = self._safe[service.name] = inline_safe_service(service)
        return safe

    def start(
        self,
        coro: Coroutine[Any, Any, _T],
        steps: Steps,
        service: Service,
        log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    ) -> _T | Continuation[_T]:
        """`start(coro)` on the event loop, timed for the guard."""
        started = self.guard.clock()
        try:
            return start(coro, steps)
        finally:
            self.timed(service, started, log)

    def timed(
        self,
        service: Service,
        started: float,
        log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    ) -> None:
        """An inline call of `service` that began at `started` (the guard's
        clock) has ended: the guard hears how long it took."""
        guard = self.guard
        took = guard.clock() - started
        if guard.record(service.name, took):
            log.info(
                "inline call took %.1f ms; service '%s' runs in threads for %gs",
                took * 1000,
                service.name,
                guard.cooldown,
            )

    def forget(self) -> None:
        """Drop the verdicts (configuration reloaded)."""
        self._safe.clear()
        self.guard.clear()

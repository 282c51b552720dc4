"""Named, bounded thread executors: the one way blocking work leaves the event loop.

Every thread the daemon runs calls on is an `Executor`: the GSS engine's
threads (`gss.engine`, name `gss`), one per PKCS#11 module (`pkcs11.token`,
name `pkcs11-<module>`, one thread, batched), one per network namespace
(`netns.executors`, name `gssproxy-netns-<ns>`, threads that entered the
namespace first). An executor has a name (its threads carry it, so a stack
dump or a log line says whose work is stuck), a fixed number of threads (its
capacity: work beyond it queues, it never makes more threads), and
optionally

* an `initializer` run once on each thread before any work (`setns` into a
  namespace): if it fails on any thread the executor is *broken*, every
  queued and later call fails with `BrokenExecutorError` (a
  `concurrent.futures.BrokenExecutor`), and no work ever runs on a thread
  that is not set up;
* `batch`: a thread takes everything queued at once, runs it in order, and
  hands the outcomes of the batch back to each event loop in one wake-up
  (under load that saves a loop wake-up and a GIL hand-over per call).

Three ways in, the same queue behind them:

* `await executor.run(fn)`: from a coroutine; the result comes back through
  one `call_soon_threadsafe` that sets the asyncio future directly (cheaper
  than `loop.run_in_executor`, which wraps a `concurrent.futures.Future`:
  about 58 us against 85 us of CPU per hop with one call in flight, 9 us
  against 30 us with eight, measured on the build machine);
* `executor.submit(fn, *args)`: the `concurrent.futures.Executor` interface,
  for blocking callers (start-up, CLIs) and `loop.run_in_executor`;
* `executor.post(fn, *args)`: fire and forget; a failure is logged.

Threads start at the first call (a process may fork before that). A call
whose awaiting task was cancelled (deadline, lost connection) before a thread
took it is skipped; one already running runs to its end and its result is
dropped.

A thread stuck in one call (a KDC that accepts and never answers, a token
that hangs) keeps its slot until the call returns. `stuck(older_than)` lists
such threads, and `write_off(older_than)` gives up on them: each is replaced
by a fresh thread at once, so capacity comes back, and ends when its call
finally returns. At most `max_written_off` written-off threads may exist at a
time (beyond that the executor stays short rather than grow without bound).
Which executor a piece of work goes to (per service, per namespace, per kind
of work) is the caller's decision; this module only makes executors cheap to
name and bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

__all__ = ["BrokenExecutorError", "Executor", "PoolState", "StuckThread", "live_executors"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_log = logging.getLogger("gssproxy_py.executors")


class BrokenExecutorError(concurrent.futures.BrokenExecutor):
    """A thread of this executor could not be set up (its initializer failed)."""


# One queued call: fn, and where its outcome goes: an asyncio future on
# `loop`, a concurrent future (loop None), or nowhere (both None: logged).
_Job = tuple[
    Callable[[], Any],
    asyncio.AbstractEventLoop | None,
    "asyncio.Future[Any] | concurrent.futures.Future[Any] | None",
]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


@dataclass(frozen=True, slots=True)
class StuckThread:
    """A thread that has been running one call for `seconds`."""

    thread: str
    seconds: float


class _Slot:
    """One thread and the call it is running (read by `stuck`)."""

    __slots__ = ("busy_since", "name", "thread", "written_off")

    def __init__(self, name: str, work: Callable[[_Slot], None]) -> None:
        self.name = name
        self.thread = threading.Thread(target=work, args=(self,), name=name, daemon=True)
        self.busy_since: float | None = None
        self.written_off = False


def _settle(outcomes: list[_Outcome]) -> None:
    """On the event loop: set the futures of one batch (or of one call)."""
    for future, value, error in outcomes:
        if future.done():  # the caller gave up (a deadline)
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class Executor(concurrent.futures.Executor):
    """A named pool of `threads` threads (see the module docstring)."""

    def __init__(
        self,
        name: str,
        threads: int = 1,
        *,
        initializer: Callable[[], None] | None = None,
        batch: bool = False,
        max_written_off: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threads < 1:
            raise ValueError("at least one thread")
        self.name = name
        self.threads = threads
        self.max_written_off = threads if max_written_off is None else max_written_off
        self._initializer = initializer
        self._batch = batch
        self._clock = clock
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._written_off: list[_Slot] = []
        #: every thread ever started, for `join`
        self._all: list[_Slot] = []
        self._started = False
        self._closed = False
        self._broken: str | None = None
        self._serial = 0
        _LIVE.add(self)

    # -- ways in ------------------------------------------------------------

    async def run(self, fn: Callable[[], _T]) -> _T:
        """fn() on one of the threads; its outcome, awaited."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._put((fn, loop, future))
        return await future

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        """`concurrent.futures.Executor.submit`: for blocking callers."""
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._put((functools.partial(fn, *args, **kwargs), None, future))
        return future

    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Queue fn(*args) without waiting for it; a failure is logged."""
        self._put(((lambda: fn(*args)) if args else fn, None, None))

    def _put(self, job: _Job) -> None:
        if self._closed:
            raise RuntimeError(f"executor {self.name} is shut down")
        if self._broken is not None:
            raise BrokenExecutorError(self._broken)
        if not self._started:
            self._start()
        self._queue.put(job)
        if self.broken:  # broke while we queued: nobody may take it
            self._fail_queued()

    # -- threads --------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            for _ in range(self.threads):
                self._spawn()

    def _spawn(self) -> None:
        """One more thread (lock held)."""
        if self.threads == 1 and not self._serial:
            name = self.name
        else:
            name = f"{self.name}_{self._serial}"
        self._serial += 1
        slot = _Slot(name, self._work)
        self._slots.append(slot)
        self._all.append(slot)
        slot.thread.start()

    def _work(self, slot: _Slot) -> None:
        if self._initializer is not None:
            try:
                self._initializer()
            except BaseException as exc:
                _log.error("executor %s: thread %s not set up: %s", self.name, slot.name, exc)
                self._break(f"executor {self.name}: a thread could not be set up: {exc}")
                return
        get = self._queue.get
        while True:
            job = get()
            if job is None:
                return
            if self._broken is not None:
                self._fail(job)
                continue
            batch = [job]
            stop = self._take_queued(batch) if self._batch else False
            self._run_batch(slot, batch)
            if stop or slot.written_off:
                self._retire_slot(slot)
                return

    def _take_queued(self, batch: list[_Job]) -> bool:
        """Everything queued meanwhile, in order; True if a stop came with it."""
        for job in self._queued():
            if job is None:
                return True
            batch.append(job)
        return False

    def _run_batch(self, slot: _Slot, batch: list[_Job]) -> None:
        outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for fn, loop, future in batch:
            if future is not None and future.cancelled():
                continue
            slot.busy_since = self._clock()
            try:
                value, error = fn(), None
            except BaseException as exc:  # delivered to whoever waits
                value, error = None, exc
                if isinstance(exc, StopIteration):  # a future cannot carry it
                    error = RuntimeError(f"StopIteration from {fn!r}")
            finally:
                slot.busy_since = None
            if future is None:
                if error is not None:
                    _log.error("executor %s: %r failed", self.name, fn, exc_info=error)
            elif loop is None:
                assert isinstance(future, concurrent.futures.Future)
                _settle_concurrent(future, value, error)
            elif self._batch:
                assert isinstance(future, asyncio.Future)
                outcomes.setdefault(loop, []).append((future, value, error))
            else:
                assert isinstance(future, asyncio.Future)
                # RuntimeError: the loop is closed, nobody is waiting any more.
                with contextlib.suppress(RuntimeError):
                    if error is None:
                        loop.call_soon_threadsafe(_set_result, future, value)
                    else:
                        loop.call_soon_threadsafe(_set_exception, future, error)
        for loop, done in outcomes.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done)

    def _retire_slot(self, slot: _Slot) -> None:
        with self._lock:
            if slot in self._written_off:
                self._written_off.remove(slot)
            if slot in self._slots:
                self._slots.remove(slot)

    # -- broken ----------------------------------------------------------------

    def _break(self, why: str) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = why
        self._fail_queued()

    def _queued(self) -> Iterator[_Job | None]:
        """What is queued now, taken off the queue in order."""
        while True:
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def _fail_queued(self) -> None:
        for job in self._queued():
            if job is None:
                self._queue.put(None)  # a stop for the other threads
                return
            self._fail(job)

    def _fail(self, job: _Job) -> None:
        _, loop, future = job
        error = BrokenExecutorError(self._broken or f"executor {self.name} is broken")
        if future is None:
            _log.error("%s", error)
        elif loop is None:
            assert isinstance(future, concurrent.futures.Future)
            _settle_concurrent(future, None, error)
        else:
            assert isinstance(future, asyncio.Future)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_exception, future, error)

    @property
    def broken(self) -> bool:
        return self._broken is not None

    # -- stuck threads ------------------------------------------------------------

    def stuck(self, older_than: float) -> list[StuckThread]:
        """Threads in service that have been in one call for `older_than` s or more."""
        now = self._clock()
        with self._lock:
            slots = [s for s in self._slots if not s.written_off]
        out = []
        for slot in slots:
            since = slot.busy_since
            if since is not None and now - since >= older_than:
                out.append(StuckThread(slot.name, now - since))
        return out

    def write_off(self, older_than: float) -> list[StuckThread]:
        """Replace each thread stuck for `older_than` s or more with a fresh
        one (while fewer than `max_written_off` are written off); the stuck
        thread ends when its call returns. The threads written off now."""
        stuck = {s.thread: s for s in self.stuck(older_than)}
        done: list[StuckThread] = []
        with self._lock:
            if self._closed:
                return done
            for slot in self._slots:
                if slot.name not in stuck or slot.written_off:
                    continue
                if len(self._written_off) >= self.max_written_off:
                    break
                slot.written_off = True
                self._written_off.append(slot)
                self._spawn()
                done.append(stuck[slot.name])
        # The caller logs the stall once (gss.stalls); one line per thread
        # would repeat it for every stuck call.
        for gone in done:
            _log.debug(
                "executor %s: thread %s written off after %.1fs in one call; replaced",
                self.name,
                gone.thread,
                gone.seconds,
            )
        return done

    def state(self) -> PoolState:
        """How the executor is doing now (for `gssproxy-py-ctl status`)."""
        with self._lock:
            slots = [s for s in self._slots if not s.written_off]
            written_off = len(self._written_off)
        return PoolState(
            name=self.name,
            threads=self.threads,
            busy=sum(1 for s in slots if s.busy_since is not None),
            queued=self._queue.qsize(),
            written_off=written_off,
            broken=self.broken,
        )

    @property
    def written_off(self) -> int:
        """Written-off threads whose call has not returned yet."""
        with self._lock:
            return len(self._written_off)

    # -- the end ----------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop after the queued calls (or cancel them); optionally wait."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            count = len(self._slots)
        if cancel_futures:
            self._cancel_queued()
        for _ in range(count):
            self._queue.put(None)
        if wait:
            self.join()

    def join(self) -> None:
        """Wait for every thread to end (after `shutdown`)."""
        with self._lock:
            threads = [s.thread for s in self._all]
        for thread in threads:
            if thread is not threading.current_thread() and thread.ident is not None:
                thread.join()

    def _cancel_queued(self) -> None:
        for job in self._queued():
            if job is None:
                continue
            _, loop, future = job
            if future is None:
                continue
            if loop is None:
                future.cancel()
            else:
                assert isinstance(future, asyncio.Future)
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(future.cancel)


def _settle_concurrent(
    future: concurrent.futures.Future[Any], value: Any, error: BaseException | None
) -> None:
    if not future.set_running_or_notify_cancel():
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


@dataclass(frozen=True, slots=True)
class PoolState:
    """One executor's capacity and load at one moment."""

    name: str
    threads: int
    busy: int
    queued: int
    written_off: int
    broken: bool


#: Every executor not yet garbage-collected, for `live_executors`.
_LIVE: weakref.WeakSet[Executor] = weakref.WeakSet()


def live_executors() -> list[Executor]:
    """The executors of this process that are not shut down, by name."""
    return sorted((e for e in list(_LIVE) if not e._closed), key=lambda e: e.name)

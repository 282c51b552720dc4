"""Worker threads for the blocking part of a call, cheaper per call than
`loop.run_in_executor`.

`run_in_executor` wraps a `concurrent.futures.Future` (lock, condition,
callback list) in an asyncio future and chains the two; measured on the
build machine, one hop there and back costs about 85 us of CPU with one
call in flight and 30 us with eight. Here a call is one tuple on a
`queue.SimpleQueue` and its result one `call_soon_threadsafe` setting the
asyncio future directly: about 58 us and 9 us (`bench/` shows the
difference per accept). Semantics are the executor's:

* the threads start at the first call (a process may fork before that);
* a call whose awaiting task was cancelled (deadline, lost connection) still
  runs to its end, and its result is dropped;
* `shutdown` lets queued calls finish (or cancels them), then the threads
  end; a pool replaced on reload drains this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["CallThreads"]

_T = TypeVar("_T")

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class CallThreads:
    """A fixed number of threads running blocking callables for coroutines."""

    def __init__(self, count: int, name: str = "worker") -> None:
        if count < 1:
            raise ValueError("at least one thread")
        self.count = count
        self.name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def _start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            for i in range(self.count):
                t = threading.Thread(target=self._work, name=f"{self.name}_{i}", daemon=True)
                t.start()
                self._threads.append(t)

    def submit(self, fn: Callable[[], _T]) -> asyncio.Future[_T]:
        """Run fn in a thread; the future (of the running loop) gets its outcome."""
        if self._closed:
            raise RuntimeError("CallThreads is shut down")
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._queue.put((loop, future, fn))
        return future

    async def run(self, fn: Callable[[], _T]) -> _T:
        return await self.submit(fn)

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            loop, future, fn = item
            if future.cancelled():
                continue
            try:
                value = fn()
            except BaseException as exc:  # delivered to the awaiting coroutine
                if isinstance(exc, StopIteration):  # a future cannot carry it
                    exc = RuntimeError(f"StopIteration from {fn!r}")
                done: tuple[Callable[..., None], Any] = (_set_exception, exc)
            else:
                done = (_set_result, value)
            # RuntimeError: the loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done[0], future, done[1])

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop after the queued calls (or cancel them); optionally wait."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    loop, future, _ = item
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(future.cancel)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for t in threads:
                t.join()

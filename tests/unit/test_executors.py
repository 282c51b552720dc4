"""`gssproxy_py.executors.Executor`: named threads, a fixed capacity, broken
executors, batched delivery, and stuck threads written off and replaced
within a bound. Threads are real; the clock of the stuck-thread rule is not."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Iterator

import pytest

from gssproxy_py.executors import BrokenExecutorError, Executor

WAIT = 10.0  # generous: only ever reached when something is broken


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gates() -> Iterator[list[threading.Event]]:
    """Events the test opens at the end, so no thread is left blocked."""
    made: list[threading.Event] = []
    yield made
    for gate in made:
        gate.set()


def _gate(gates: list[threading.Event]) -> threading.Event:
    gate = threading.Event()
    gates.append(gate)
    return gate


def test_run_returns_results_and_raises_failures_on_named_threads() -> None:
    ex = Executor("unit", 2)

    def boom() -> None:
        raise ValueError("boom")

    async def go() -> tuple[str, str]:
        name = await ex.run(lambda: threading.current_thread().name)
        with pytest.raises(ValueError, match="boom"):
            await ex.run(boom)
        with pytest.raises(RuntimeError, match="StopIteration"):
            await ex.run(lambda: next(iter(())))
        return name, await ex.run(lambda: "ok")

    name, ok = asyncio.run(go())
    assert name.startswith("unit_") and ok == "ok"
    ex.shutdown()


def test_a_one_thread_executor_carries_its_name_and_keeps_order() -> None:
    ex = Executor("pkcs11-x.so", 1, batch=True)
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i

    async def go() -> list[int]:
        return await asyncio.gather(*(ex.run(lambda i=i: job(i)) for i in range(30)))

    assert asyncio.run(go()) == list(range(30))
    assert [i for i, _ in seen] == list(range(30))
    assert {name for _, name in seen} == {"pkcs11-x.so"}
    ex.shutdown()


def test_capacity_is_the_thread_count(gates: list[threading.Event]) -> None:
    ex = Executor("bounded", 2)
    gate = _gate(gates)
    running = threading.Semaphore(0)

    def hold() -> None:
        running.release()
        gate.wait(WAIT)

    held = [ex.submit(hold) for _ in range(2)]
    third = ex.submit(lambda: "third")
    assert running.acquire(timeout=WAIT) and running.acquire(timeout=WAIT)
    assert not third.done()  # queued behind the two busy threads, no third thread
    gate.set()
    assert third.result(WAIT) == "third"
    for f in held:
        f.result(WAIT)
    ex.shutdown()


def test_submit_and_post_for_blocking_callers(caplog: pytest.LogCaptureFixture) -> None:
    ex = Executor("blocking", 1)
    assert ex.submit(lambda a, b=0: a + b, 2, b=3).result(WAIT) == 5
    done = threading.Event()

    def fails() -> None:
        done.set()
        raise OSError("lost")

    with caplog.at_level(logging.ERROR, logger="gssproxy_py.executors"):
        ex.post(fails)
        assert done.wait(WAIT)
        ex.shutdown(wait=True)
    assert "executor blocking" in caplog.text and "lost" in caplog.text
    with pytest.raises(RuntimeError):
        ex.submit(lambda: None)


def test_a_failed_initializer_breaks_the_executor() -> None:
    def cannot() -> None:
        raise OSError("setns: operation not permitted")

    ex = Executor("netns-x", 2, initializer=cannot)
    first = ex.submit(lambda: "never")
    with pytest.raises(concurrent.futures.BrokenExecutor):
        first.result(WAIT)
    assert ex.broken
    with pytest.raises(BrokenExecutorError):
        ex.submit(lambda: "never")

    async def go() -> None:
        await ex.run(lambda: "never")

    with pytest.raises(BrokenExecutorError):
        asyncio.run(go())
    ex.shutdown()


def test_the_initializer_runs_once_per_thread_before_any_work() -> None:
    entered: set[str] = set()

    def enter() -> None:
        entered.add(threading.current_thread().name)

    ex = Executor("init", 3, initializer=enter)
    names = {ex.submit(lambda: threading.current_thread().name).result(WAIT) for _ in range(9)}
    assert names <= entered
    ex.shutdown()
    assert len(entered) == 3


def test_shutdown_can_cancel_queued_work(gates: list[threading.Event]) -> None:
    ex = Executor("cancel", 1)
    gate = _gate(gates)
    running = threading.Event()

    def hold() -> str:
        running.set()
        gate.wait(WAIT)
        return "held"

    busy = ex.submit(hold)
    assert running.wait(WAIT)
    queued = ex.submit(lambda: "queued")
    ex.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert busy.result(WAIT) == "held"
    assert queued.cancelled()
    ex.join()


def test_a_stuck_thread_is_written_off_and_replaced(
    clock: Clock, gates: list[threading.Event]
) -> None:
    ex = Executor("kdc", 1, max_written_off=1, clock=clock)
    gate = _gate(gates)
    running = threading.Event()

    def hang() -> str:
        running.set()
        gate.wait(WAIT)
        return "late"

    hung = ex.submit(hang)
    assert running.wait(WAIT)
    assert ex.stuck(10.0) == []
    clock.now += 11.0
    (stuck,) = ex.stuck(10.0)
    assert stuck.thread == "kdc" and stuck.seconds == pytest.approx(11.0)
    assert [s.thread for s in ex.write_off(10.0)] == ["kdc"]
    assert ex.written_off == 1
    # Capacity is back: a new call runs while the stuck one still waits.
    assert ex.submit(lambda: "fresh").result(WAIT) == "fresh"
    assert not hung.done()
    # The bound: a second stuck thread is not replaced while the first is out.
    gate2 = _gate(gates)
    running2 = threading.Event()

    def hang2() -> None:
        running2.set()
        gate2.wait(WAIT)

    ex.submit(hang2)
    assert running2.wait(WAIT)
    clock.now += 11.0
    assert ex.write_off(10.0) == []
    # The written-off thread ends once its call returns, and its result still arrives.
    gate.set()
    assert hung.result(WAIT) == "late"
    gate2.set()
    ex.shutdown(wait=True)
    assert ex.written_off == 0


def test_results_reach_a_cancelled_awaiter_harmlessly(gates: list[threading.Event]) -> None:
    ex = Executor("deadline", 1)
    gate = _gate(gates)

    async def go() -> str:
        slow = asyncio.ensure_future(ex.run(lambda: gate.wait(WAIT)))
        await asyncio.sleep(0.01)
        slow.cancel()
        gate.set()
        return await ex.run(lambda: "next")

    assert asyncio.run(go()) == "next"
    ex.shutdown()

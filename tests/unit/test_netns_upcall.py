"""Enabling the kernel upcall against a stand-in file, in the daemon's own netns.

A regular file plays `/proc/net/rpc/use-gss-proxy` (the kernel's text format:
"-1\\n", "0\\n", "1\\n"); an `UpcallIO` wrapper injects the errors only the
kernel produces (EBUSY, EIO). Retries are driven by a gated sleep, so nothing
here waits for real time: tests assert on the attempts made and the delays
requested, never on durations. The same behaviour inside real network
namespaces is in tests/integration/test_netns_namespaces.py.
"""

# The stand-in file is a few bytes in tmp: writing it from a coroutine is the
# point of these tests, not a blocking hazard.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.config.model import Config, GlobalSettings, Mech, Service
from gssproxy_py.netns.errors import UpcallError, UpcallLatchedError
from gssproxy_py.netns.nsfs import thread_proc_path
from gssproxy_py.netns.upcall import (
    LATCHED_REMEDY,
    AttemptResult,
    KernelUpcalls,
    Outcome,
    ProcFileIO,
    UpcallEnabler,
    UpcallState,
    attempt_enable,
    parse_state,
)

REMEDY = (
    "nfsd chose rpc.svcgssd before gssproxy-py started: reboot, or restart the network"
    " namespace, and make sure gssproxy-py starts before nfsd"
)


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


class GatedSleep:
    """Stands in for asyncio.sleep: records each delay, returns when released."""

    def __init__(self) -> None:
        self.requested: list[float] = []
        self._entered: asyncio.Queue[float] = asyncio.Queue()
        self._release = asyncio.Semaphore(0)

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        self._entered.put_nowait(seconds)
        await self._release.acquire()

    async def entered(self) -> float:
        """Wait until some retry loop is sleeping; the delay it asked for."""
        return await asyncio.wait_for(self._entered.get(), 10)

    def release(self) -> None:
        self._release.release()


class ErrIO(ProcFileIO):
    """The real file I/O, except that writes fail with `err`."""

    def __init__(self, err: int) -> None:
        self.err = err
        self.writes = 0

    def write(self, path: str, data: bytes) -> None:
        self.writes += 1
        raise OSError(self.err, "injected")


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    return tmp_path / "use-gss-proxy"


# -- pure parts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        (b"-1\n", UpcallState.UNDECIDED),
        (b"0\n", UpcallState.LEGACY),
        (b"1\n", UpcallState.GSSPROXY),
    ],
)
def test_parse_state(raw: bytes, state: UpcallState) -> None:
    assert parse_state(raw) is state


@pytest.mark.parametrize("raw", [b"", b"2\n", b"yes", b"\xff"])
def test_parse_state_rejects_junk(raw: bytes) -> None:
    with pytest.raises(UpcallError):
        parse_state(raw)


def test_thread_proc_path() -> None:
    assert (
        thread_proc_path("/proc/net/rpc/use-gss-proxy") == "/proc/thread-self/net/rpc/use-gss-proxy"
    )
    assert thread_proc_path("/proc/self/net/rpc/x") == "/proc/thread-self/net/rpc/x"
    assert thread_proc_path("/tmp/use-gss-proxy") == "/tmp/use-gss-proxy"


def test_remedy_text_is_the_documented_one() -> None:
    assert LATCHED_REMEDY == REMEDY


# -- one attempt ----------------------------------------------------------------


def test_undecided_is_enabled(standin: Path) -> None:
    standin.write_text("-1\n")
    res = attempt_enable(str(standin))
    assert res.outcome is Outcome.ENABLED
    assert (res.before, res.after) == (UpcallState.UNDECIDED, UpcallState.GSSPROXY)
    assert standin.read_text() == "1"
    assert res.opened == str(standin)
    assert not res.retry


def test_already_enabled_is_written_again(standin: Path) -> None:
    # Writing 1 again replaces the kernel's client: it reconnects to us.
    standin.write_text("1\n")
    io = CountingIO()
    res = attempt_enable(str(standin), io=io)
    assert res.outcome is Outcome.ENABLED
    assert io.writes == [b"1"]


class CountingIO(ProcFileIO):
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, path: str, data: bytes) -> None:
        self.writes.append(data)
        super().write(path, data)


def test_latched_zero_is_not_written(standin: Path) -> None:
    standin.write_text("0\n")
    io = CountingIO()
    res = attempt_enable(str(standin), io=io)
    assert res.outcome is Outcome.LATCHED
    assert not res.retry
    assert io.writes == []
    assert standin.read_text() == "0\n"
    assert res.detail == f"{standin} in the daemon's netns reads 0: {REMEDY}"


def test_ebusy_means_latched(standin: Path) -> None:
    # Reads -1, but nfsd latched legacy mode before our write landed.
    standin.write_text("-1\n")
    res = attempt_enable(str(standin), io=ErrIO(errno.EBUSY))
    assert res.outcome is Outcome.LATCHED
    assert res.errno == errno.EBUSY
    assert REMEDY in res.detail


def test_absent_file(standin: Path) -> None:
    res = attempt_enable(str(standin))
    assert res.outcome is Outcome.ABSENT
    assert res.retry
    assert "auth_rpcgss" in res.detail
    assert not standin.exists()  # never created by us


def test_kernel_cannot_connect(standin: Path) -> None:
    standin.write_text("-1\n")
    res = attempt_enable(str(standin), io=ErrIO(errno.EIO))
    assert res.outcome is Outcome.FAILED
    assert res.retry
    assert "/var/run/gssproxy.sock" in res.detail and "EIO" in res.detail


def test_junk_contents_fail(standin: Path) -> None:
    standin.write_text("maybe\n")
    res = attempt_enable(str(standin))
    assert res.outcome is Outcome.FAILED
    assert standin.read_text() == "maybe\n"


def test_write_not_sticking_fails(standin: Path) -> None:
    class Ignoring(ProcFileIO):
        def write(self, path: str, data: bytes) -> None:
            pass

    standin.write_text("-1\n")
    res = attempt_enable(str(standin), io=Ignoring())
    assert res.outcome is Outcome.FAILED
    assert "reads -1" in res.detail


# -- the enabler on the event loop ------------------------------------------------


@aio
async def test_retries_while_absent_then_enables(standin: Path) -> None:
    events: list[AttemptResult] = []
    sleep = GatedSleep()
    enabler = UpcallEnabler(str(standin), interval=10.0, sleep=sleep, on_result=events.append)
    first = await enabler.ensure_enabled()
    assert first.outcome is Outcome.ABSENT
    assert enabler.retrying
    assert await sleep.entered() == 10.0

    # Still absent at the first retry: it goes back to sleep.
    sleep.release()
    assert await sleep.entered() == 10.0
    assert [e.outcome for e in events] == [Outcome.ABSENT, Outcome.ABSENT]

    standin.write_text("-1\n")  # auth_rpcgss got loaded
    sleep.release()
    final = await enabler.settled()
    assert final is not None and final.outcome is Outcome.ENABLED
    assert [e.outcome for e in events] == [Outcome.ABSENT, Outcome.ABSENT, Outcome.ENABLED]
    assert sleep.requested == [10.0, 10.0]
    assert enabler.enabled and not enabler.retrying
    assert standin.read_text() == "1"


@aio
async def test_ensure_enabled_raises_when_latched(standin: Path) -> None:
    standin.write_text("0\n")
    sleep = GatedSleep()
    enabler = UpcallEnabler(str(standin), sleep=sleep)
    with pytest.raises(UpcallLatchedError) as info:
        await enabler.ensure_enabled()
    assert str(info.value) == f"{standin} in the daemon's netns reads 0: {REMEDY}"
    assert not enabler.retrying
    assert sleep.requested == []


@aio
async def test_ensure_enabled_raises_on_ebusy(standin: Path) -> None:
    standin.write_text("-1\n")
    enabler = UpcallEnabler(str(standin), io=ErrIO(errno.EBUSY), sleep=GatedSleep())
    with pytest.raises(UpcallLatchedError, match="reboot, or restart the network namespace"):
        await enabler.ensure_enabled()


@aio
async def test_run_until_enabled(standin: Path) -> None:
    sleep = GatedSleep()
    enabler = UpcallEnabler(str(standin), interval=3.0, sleep=sleep)
    task = asyncio.ensure_future(enabler.run())
    assert await sleep.entered() == 3.0
    standin.write_text("-1\n")
    sleep.release()
    res = await asyncio.wait_for(task, 10)
    assert res.outcome is Outcome.ENABLED
    assert sleep.requested == [3.0]


@aio
async def test_run_raises_when_latched_later(standin: Path) -> None:
    sleep = GatedSleep()
    enabler = UpcallEnabler(str(standin), sleep=sleep)
    task = asyncio.ensure_future(enabler.run())
    await sleep.entered()
    standin.write_text("0\n")
    sleep.release()
    with pytest.raises(UpcallLatchedError):
        await asyncio.wait_for(task, 10)


@aio
async def test_start_task_reports_latched_without_raising(standin: Path) -> None:
    standin.write_text("0\n")
    enabler = UpcallEnabler(str(standin), sleep=GatedSleep())
    res = await asyncio.wait_for(enabler.start(), 10)
    assert res.outcome is Outcome.LATCHED


@aio
async def test_reload_attempts_at_once_and_replaces_the_retry(standin: Path) -> None:
    events: list[AttemptResult] = []
    sleep = GatedSleep()
    enabler = UpcallEnabler(str(standin), sleep=sleep, on_result=events.append)
    await enabler.ensure_enabled()
    await sleep.entered()
    standin.write_text("-1\n")
    # Reload: no waiting for the pending retry's sleep.
    res = await enabler.ensure_enabled()
    assert res.outcome is Outcome.ENABLED
    assert not enabler.retrying
    # The old retry was cancelled in its sleep: releasing it does nothing.
    sleep.release()
    await asyncio.sleep(0)
    assert [e.outcome for e in events] == [Outcome.ABSENT, Outcome.ENABLED]


@aio
async def test_stop_cancels_the_retry(standin: Path) -> None:
    events: list[AttemptResult] = []
    sleep = GatedSleep()
    enabler = UpcallEnabler(str(standin), sleep=sleep, on_result=events.append)
    await enabler.ensure_enabled()
    await sleep.entered()
    enabler.stop()
    assert not enabler.retrying
    standin.write_text("-1\n")
    sleep.release()
    assert await enabler.settled() is events[-1]
    assert [e.outcome for e in events] == [Outcome.ABSENT]
    assert standin.read_text() == "-1\n"


@aio
async def test_repeated_failure_is_logged_once(
    standin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test.upcall")
    sleep = GatedSleep()
    enabler = UpcallEnabler(str(standin), sleep=sleep, log=log)
    with caplog.at_level(logging.DEBUG, logger="test.upcall"):
        await enabler.ensure_enabled()
        for _ in range(3):
            await sleep.entered()
            sleep.release()
        await sleep.entered()
        standin.write_text("-1\n")
        sleep.release()
        await enabler.settled()
    levels = [r.levelno for r in caplog.records if "does not exist" in r.getMessage()]
    # The first attempt and three retries found no file; the fourth retry enabled.
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.DEBUG]
    enabled = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(enabled) == 1 and "read -1 (undecided); wrote 1" in enabled[0].getMessage()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        UpcallEnabler("/x", interval=0)


# -- per configuration -------------------------------------------------------------


def _config(path: Path, *services: Service) -> Config:
    return Config(globals=GlobalSettings(use_gss_proxy_file=str(path)), services=services)


def _svc(name: str, *, kernel_nfsd: bool = True) -> Service:
    return Service(name=name, euid=0, mechs=(Mech.KRB5,), kernel_nfsd=kernel_nfsd)


@aio
async def test_kernel_upcalls_follow_the_configuration(standin: Path) -> None:
    standin.write_text("-1\n")
    upcalls = KernelUpcalls(sleep=GatedSleep())
    assert await upcalls.apply(_config(standin, _svc("plain", kernel_nfsd=False))) == ()
    assert upcalls.enablers == {}
    assert standin.read_text() == "-1\n"

    results = await upcalls.apply(_config(standin, _svc("nfs-server")))
    assert [(r.netns, r.outcome) for r in results] == [(None, Outcome.ENABLED)]
    assert list(upcalls.enablers) == [None]

    # Reload with the same service: written again.
    standin.write_text("1\n")
    results = await upcalls.apply(_config(standin, _svc("nfs-server")))
    assert [r.outcome for r in results] == [Outcome.ENABLED]

    # Reload without it: no enabler left.
    assert await upcalls.apply(_config(standin)) == ()
    assert upcalls.enablers == {}
    upcalls.stop()


@aio
async def test_kernel_upcalls_report_latched_without_raising(standin: Path) -> None:
    standin.write_text("0\n")
    upcalls = KernelUpcalls(sleep=GatedSleep())
    (res,) = await upcalls.apply(_config(standin, _svc("nfs-server")))
    assert res.outcome is Outcome.LATCHED and REMEDY in res.detail
    upcalls.stop()


@aio
async def test_kernel_upcalls_retry_in_background(standin: Path) -> None:
    sleep = GatedSleep()
    upcalls = KernelUpcalls(sleep=sleep)
    (res,) = await upcalls.apply(_config(standin, _svc("nfs-server")))
    assert res.outcome is Outcome.ABSENT
    await sleep.entered()
    standin.write_text("-1\n")
    sleep.release()
    (final,) = await upcalls.settled()
    assert final.outcome is Outcome.ENABLED
    upcalls.stop()


# -- the command line ----------------------------------------------------------------


def test_cli_status_and_enable(standin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gssproxy_py.netns.__main__ import main

    assert main(["status", "--path", str(standin)]) == 2
    standin.write_text("-1\n")
    assert main(["status", "--path", str(standin)]) == 0
    assert main(["enable", "--path", str(standin)]) == 0
    assert standin.read_text() == "1"
    standin.write_text("0\n")
    assert main(["enable", "--path", str(standin)]) == 1
    out = capsys.readouterr().out
    assert "absent" in out and "-1 (undecided)" in out and REMEDY in out

"""Threads stuck past the deadline: written off once, replaced, the stall
logged once; the KDC named from krb5.conf and /proc."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest

from gssproxy_py.executors import Executor
from gssproxy_py.gss.stalls import (
    CHECK_INTERVAL,
    StallWatch,
    configured_kdcs,
    open_remote_endpoints,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_stall_is_written_off_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    executor = Executor("gss-slow", 1, clock=clock)
    watch = StallWatch(clock, describe_kdcs=lambda: "10.0.0.1:88 (realm X.TEST)")
    release = threading.Event()
    started = threading.Event()

    def hang() -> None:
        started.set()
        release.wait(30)

    try:
        executor.submit(hang)
        assert started.wait(10)
        with caplog.at_level(logging.INFO, logger="gssproxy_py.gss.stalls"):
            watch.check(executor, "slow", 10.0)  # not past the deadline yet
            assert executor.written_off == 0
            clock.now += 11
            watch.check(executor, "slow", 10.0)
            assert executor.written_off == 1
            # The replacement runs new work while the stuck call still waits.
            assert executor.submit(lambda: 42).result(timeout=10) == 42
            clock.now += CHECK_INTERVAL
            watch.check(executor, "slow", 10.0)
        lines = [r.getMessage() for r in caplog.records if "written off" in r.getMessage()]
        assert len(lines) == 1
        assert "service 'slow': 1 thread(s)" in lines[0]
        assert "10.0.0.1:88 (realm X.TEST)" in lines[0]
        release.set()
        clock.now += CHECK_INTERVAL
        for _ in range(100):
            if not executor.written_off:
                break
            threading.Event().wait(0.05)
        with caplog.at_level(logging.INFO, logger="gssproxy_py.gss.stalls"):
            watch.check(executor, "slow", 10.0)
        assert "service 'slow': no thread is stuck any more" in caplog.text
    finally:
        release.set()
        executor.shutdown(wait=True)


def test_configured_kdcs_by_realm(tmp_path: Path) -> None:
    conf = tmp_path / "krb5.conf"
    conf.write_text(
        "[realms]\n  A.TEST = {\n    kdc = 127.0.0.1:1088\n    kdc = kdc.a.test\n  }\n"
        "  B.TEST = {\n    admin_server = x\n    kdc = [::1]:88\n  }\n"
    )
    assert configured_kdcs([str(conf), str(tmp_path / "absent")]) == {
        "127.0.0.1:1088": "A.TEST",
        "kdc.a.test": "A.TEST",
        "[::1]:88": "B.TEST",
    }


def test_open_remote_endpoints_sees_our_connected_sockets() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    with listener, socket.create_connection(("127.0.0.1", port)) as conn:
        assert conn.fileno() >= 0
        assert ("127.0.0.1", port) in open_remote_endpoints()

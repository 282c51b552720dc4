"""The failure line: who, which service, the codes, why; repeats counted."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gssproxy_py.config.load import load_config
from gssproxy_py.config.peer import Peer
from gssproxy_py.gss import failure_log
from gssproxy_py.gss.status import GSS_S_DEFECTIVE_TOKEN, GSS_S_NO_CRED, GssFailure
from gssproxy_py.rpc.dispatch import CallInfo


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    failure_log.forget_repeats()
    yield
    failure_log.forget_repeats()


def call(tmp_path: object, uid: int = 1000, matched: bool = True) -> CallInfo:
    path = f"{tmp_path}/gssproxy.conf"
    with open(path, "w") as f:
        f.write("[service/nfs]\n  mechs = krb5\n  euid = 1000\n")
    config = load_config(path, None, default_socket="/tmp/x.sock")
    return CallInfo(
        xid=1,
        program=400112,
        version=1,
        procedure=9,
        peer=Peer(pid=4242, uid=uid, gid=uid, program="/usr/sbin/rpc.gssd"),
        socket_path="/tmp/x.sock",
        service=config.services[0] if matched else None,
        no_match_reason=None if matched else "no service matched uid 7",
        config=config,
        log=logging.LoggerAdapter(logging.getLogger("test.fail"), {}),
    )


def test_the_line_names_caller_service_codes_and_why(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    failure = GssFailure(GSS_S_DEFECTIVE_TOKEN, 5, "bad token")
    with caplog.at_level(logging.INFO, logger="test.fail"):
        failure_log.log_failure(failure, logging.getLogger("test.fail"), call(tmp_path))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "GSSX_ACCEPT_SEC_CONTEXT failed for uid 1000 pid 4242 program /usr/sbin/rpc.gssd, "
        "service 'nfs': major 0x00090000 ("
        + record.getMessage().split("(", 1)[1].split(")")[0]
        + "), minor 5 (bad token); why: the client's token is malformed, truncated or not Kerberos"
    )


def test_repeats_are_counted_and_reported_with_the_next_line(tmp_path: object) -> None:
    clock = Clock()
    log = logging.getLogger("test.fail")
    info = call(tmp_path)
    failure = GssFailure(GSS_S_NO_CRED, 2, "none")
    lines = [failure_log.log_failure(failure, log, info, clock=clock) for _ in range(17)]
    assert lines[0] is not None and "more like it" not in lines[0]
    assert lines[1:] == [None] * 16
    # Another uid, or another service, is not a repeat.
    assert failure_log.log_failure(failure, log, call(tmp_path, uid=1001), clock=clock)
    assert failure_log.log_failure(failure, log, call(tmp_path, matched=False), clock=clock)
    clock.now += failure_log.REPEAT_INTERVAL
    again = failure_log.log_failure(failure, log, info, clock=clock)
    assert again is not None and again.endswith("; and 16 more like it in the last 10 s")


def test_a_burst_then_silence_is_counted_once_its_interval_ended(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    log = logging.getLogger("test.fail")
    failure = GssFailure(GSS_S_NO_CRED, 2, "none")
    for _ in range(5):
        failure_log.log_failure(failure, log, call(tmp_path), clock=clock)
    failure_log.log_failure(failure, log, call(tmp_path, uid=1001), clock=clock)  # once: no count
    assert failure_log.flush_repeats(clock.now + failure_log.REPEAT_INTERVAL - 0.1) == []
    with caplog.at_level(logging.WARNING, logger="gssproxy_py.gss.failure_log"):
        lines = failure_log.flush_repeats(clock.now + failure_log.REPEAT_INTERVAL)
    assert lines == [
        "and 4 more failed calls like the last one for uid 1000, service 'nfs' "
        "(major 0x00070000, minor 2) in the last 10 s"
    ]
    flushed = [r for r in caplog.records if r.name == "gssproxy_py.gss.failure_log"]
    assert [(r.levelno, r.getMessage()) for r in flushed] == [(logging.WARNING, lines[0])]
    assert failure_log.flush_repeats(clock.now + 100) == []  # said once
    clock.now += 100
    again = failure_log.log_failure(failure, log, call(tmp_path), clock=clock)
    assert again is not None and "more like it" not in again


def test_a_refusal_says_its_reason_once(tmp_path: object) -> None:
    reason = "no service matched uid 7"
    failure = GssFailure(GSS_S_NO_CRED, 13, reason, explanation=reason)
    line = failure_log.log_failure(failure, logging.getLogger("t"), call(tmp_path, matched=False))
    assert line is not None and line.count(reason) == 1
    assert ", no service: major 0x00070000" in line and line.endswith(f"minor 13; why: {reason}")

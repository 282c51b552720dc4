"""syslog_status: GSS failures reach syslog (LOG_AUTHPRIV), and only when it is on."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gssproxy_py.gss import failure_log
from gssproxy_py.gss.status import GssFailure, status_for_exception
from gssproxy_py.server.logs import set_status_syslog

GSS_S_NO_CRED = 7 << 16
KRB5 = bytes.fromhex("2a864886f712010202")


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    failure_log.forget_repeats()  # each test's failure is a first one
    path = str(tmp_path / "log")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    yield s, path
    set_status_syslog(False)
    s.close()


def test_failure_goes_to_syslog_as_authpriv(syslog_socket: tuple[socket.socket, str]) -> None:
    sock, path = syslog_socket
    set_status_syslog(True, address=path)
    log = logging.LoggerAdapter(logging.getLogger("test.conn"), {})
    status = status_for_exception(
        GssFailure(GSS_S_NO_CRED, 13, "no keytab for uid 1000"), KRB5, log
    )
    assert status.major_status == GSS_S_NO_CRED
    datagram = sock.recv(4096).decode()
    assert datagram.startswith("<86>")  # LOG_AUTHPRIV (10 << 3) | LOG_INFO (6)
    assert "GSS call failed: major 0x00070000" in datagram and "no keytab for uid 1000" in datagram


def test_the_count_of_a_burst_goes_to_syslog_too(
    syslog_socket: tuple[socket.socket, str],
) -> None:
    sock, path = syslog_socket
    set_status_syslog(True, address=path)
    log = logging.LoggerAdapter(logging.getLogger("test.conn"), {})
    for _ in range(3):
        status_for_exception(GssFailure(GSS_S_NO_CRED, 13, "x"), KRB5, log)
    assert "GSS call failed" in sock.recv(4096).decode()
    (line,) = failure_log.flush_repeats(math.inf)
    assert line.startswith("and 2 more failed calls like the last one")
    assert line in sock.recv(4096).decode()


def test_nothing_when_off(syslog_socket: tuple[socket.socket, str]) -> None:
    sock, path = syslog_socket
    set_status_syslog(True, address=path)
    set_status_syslog(False, address=path)
    log = logging.LoggerAdapter(logging.getLogger("test.conn"), {})
    status_for_exception(GssFailure(GSS_S_NO_CRED, 13, "x"), KRB5, log)
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(4096)

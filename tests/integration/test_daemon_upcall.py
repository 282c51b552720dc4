"""The real daemon and the kernel's use-gss-proxy switch, with a stand-in file.

`use_gss_proxy_file` points the daemon at a regular file in the kernel's
text format (`-1`, `0`, `1`), so these run on any machine: the daemon
writes `1` after it listens and before it logs readiness, again on every
reload, and a latched `0` is an error with the remedy that does not stop
it. (The real file, and the kernel connecting back, are tests/kernel.)
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.netns.upcall import LATCHED_REMEDY
from gssproxy_py.testing.daemon import DaemonPaths, DaemonProcess, render_config

pytestmark = pytest.mark.integration

LAST = 0x80000000


def ping(path: Path) -> None:
    """A NULL call and its SUCCESS reply on a fresh connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(os.fspath(path))
        body = struct.pack(">10I", 7, 0, 2, 400112, 1, 0, 0, 0, 0, 0)
        sock.sendall(struct.pack(">I", LAST | len(body)) + body)
        expected = struct.pack(">7I", LAST | 24, 7, 1, 0, 0, 0, 0)
        got = b""
        while len(got) < len(expected):
            chunk = sock.recv(len(expected) - len(got))
            assert chunk, "connection closed"
            got += chunk
        assert got == expected


def start(daemon_factory: Any, standin: Path, state: str) -> DaemonProcess:
    standin.write_text(state + "\n")

    def config(paths: DaemonPaths) -> str:
        return render_config(
            {"nfs-server": {"mechs": "krb5", "euid": 0, "kernel_nfsd": "yes"}},
            global_options={"use_gss_proxy_file": str(standin)},
        )

    daemon: DaemonProcess = daemon_factory("py", config)
    return daemon


def line_of(text: str, needle: str, start: int = 0) -> int:
    for number, line in enumerate(text.splitlines()):
        if number >= start and needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the log:\n{text}")


def test_written_after_listening_before_ready_and_again_on_reload(
    daemon_factory: Any, tmp_path: Path
) -> None:
    standin = tmp_path / "use-gss-proxy"
    daemon = start(daemon_factory, standin, "-1")
    assert standin.read_text() == "1"
    log = daemon.log_text()
    listening = line_of(log, f"listening on {daemon.socket}")
    wrote = line_of(log, "read -1 (undecided); wrote 1")
    ready = line_of(log, "Initialization complete")
    assert listening < wrote < ready

    # A reload writes it again (the kernel then reconnects to the socket we have now).
    standin.write_text("-1\n")
    daemon.reload()
    assert standin.read_text() == "1"
    log = daemon.log_text()
    again = line_of(log, "read -1 (undecided); wrote 1", ready + 1)
    assert again < line_of(log, "New config loaded successfully")
    ping(daemon.socket)


def test_latched_legacy_mode_is_an_error_with_the_remedy_not_a_stop(
    daemon_factory: Any, tmp_path: Path
) -> None:
    standin = tmp_path / "use-gss-proxy"
    daemon = start(daemon_factory, standin, "0")
    assert standin.read_text() == "0\n"  # never written over
    log = daemon.log_text()
    assert line_of(log, LATCHED_REMEDY) < line_of(log, "Initialization complete")
    assert "ERROR" in log.splitlines()[line_of(log, LATCHED_REMEDY)]
    assert daemon.running
    ping(daemon.socket)


def test_no_kernel_nfsd_service_no_write(daemon_factory: Any, tmp_path: Path) -> None:
    standin = tmp_path / "use-gss-proxy"
    standin.write_text("-1\n")

    def config(paths: DaemonPaths) -> str:
        return render_config(
            {"plain": {"mechs": "krb5", "euid": 0}},
            global_options={"use_gss_proxy_file": str(standin)},
        )

    daemon: DaemonProcess = daemon_factory("py", config)
    assert standin.read_text() == "-1\n"
    assert "use-gss-proxy" not in daemon.log_text()

"""SIGHUP reload of a real gssproxy-py daemon: sockets added, removed and
moved, a bad configuration refused, and open connections kept throughout."""

from __future__ import annotations

import os
import signal
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.testing.daemon import DaemonProcess, render_config

LAST = 0x80000000


def ping(sock: socket.socket, xid: int) -> None:
    """A NULL call on an open connection, and its SUCCESS reply."""
    body = struct.pack(">10I", xid, 0, 2, 400112, 1, 0, 0, 0, 0, 0)
    sock.sendall(struct.pack(">I", LAST | len(body)) + body)
    expected = struct.pack(">7I", LAST | 24, xid, 1, 0, 0, 0, 0)
    got = b""
    while len(got) < len(expected):
        chunk = sock.recv(len(expected) - len(got))
        assert chunk, "connection closed"
        got += chunk
    assert got == expected


def connect(path: str | os.PathLike[str]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(os.fspath(path))
    return sock


def is_socket_0666(path: Path) -> bool:
    st = path.lstat()
    return (st.st_mode & 0o170000) == 0o140000 and st.st_mode & 0o777 == 0o666


def services(**extra: dict[str, str | int]) -> dict[str, dict[str, str | int]]:
    """A root service on the default socket plus `extra` ones."""
    return {"main": {"mechs": "krb5", "euid": 0}, **extra}


def config(services: dict[str, dict[str, str | int]]) -> str:
    return render_config(services, global_options={"debug": "true"})


def start(daemon_factory: Any, **extra: dict[str, str | int]) -> DaemonProcess:
    daemon: DaemonProcess = daemon_factory("py", config(services(**extra)))
    return daemon


def rewrite(daemon: DaemonProcess, **extra: dict[str, str | int]) -> None:
    daemon.config.write_text(config(services(**extra)))


def test_reload_adds_a_service_socket(daemon_factory: Any) -> None:
    daemon = start(daemon_factory)
    new = daemon.socket.parent / "new" / "new.sock"  # its directory is created too
    default_inode = daemon.socket.stat().st_ino
    with connect(daemon.socket) as old_conn:
        ping(old_conn, 1)
        rewrite(daemon, new={"mechs": "krb5", "euid": 0, "socket": str(new)})
        daemon.reload()
        assert is_socket_0666(new)
        assert daemon.socket.stat().st_ino == default_inode  # unchanged: kept, not rebound
        ping(old_conn, 2)  # the connection from before the reload still works
    with connect(new) as conn:
        ping(conn, 3)
    assert f"listening on {new}" in daemon.log_text()


def test_reload_removes_a_service_socket_but_not_its_connections(daemon_factory: Any) -> None:
    daemon = start(daemon_factory)
    extra = daemon.socket.parent / "extra.sock"
    rewrite(daemon, extra={"mechs": "krb5", "euid": 0, "socket": str(extra)})
    daemon.reload()
    with connect(extra) as conn:
        ping(conn, 1)
        rewrite(daemon)
        daemon.reload()
        assert not extra.exists()
        with pytest.raises(FileNotFoundError):
            connect(extra)
        ping(conn, 2)  # accepted before the reload: kept open
    with connect(daemon.socket) as conn:
        ping(conn, 3)
    assert f"stopped listening on {extra}" in daemon.log_text()


def test_reload_moves_a_service_socket(daemon_factory: Any) -> None:
    daemon = start(daemon_factory)
    first = daemon.socket.parent / "first.sock"
    second = daemon.socket.parent / "second.sock"
    rewrite(daemon, svc={"mechs": "krb5", "euid": 0, "socket": str(first)})
    daemon.reload()
    assert is_socket_0666(first)
    rewrite(daemon, svc={"mechs": "krb5", "euid": 0, "socket": str(second)})
    daemon.reload()
    assert not first.exists()
    assert is_socket_0666(second)
    with connect(second) as conn:
        ping(conn, 1)


def test_bad_config_keeps_the_old_one_and_names_file_line_and_option(
    daemon_factory: Any,
) -> None:
    daemon = start(daemon_factory)
    bad_socket = daemon.socket.parent / "never.sock"
    rewrite(
        daemon,
        bad={"mechs": "krb5", "euid": 0, "socket": str(bad_socket), "cred_usage": "sideways"},
    )
    offset = daemon.log_path.stat().st_size
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_for_log("configuration not reloaded, keeping the old one", after=offset)
    log = daemon.log_text()[offset:]
    line = daemon.config.read_text().splitlines().index("  cred_usage = sideways") + 1
    assert f"{daemon.config}:{line}: option 'cred_usage':" in log
    assert "New config loaded successfully" not in log
    assert not bad_socket.exists()
    assert daemon.running
    with connect(daemon.socket) as conn:
        ping(conn, 1)
    # A later good configuration is taken as usual.
    rewrite(daemon)
    daemon.reload()


def test_reload_matches_the_next_call_against_the_new_services(daemon_factory: Any) -> None:
    """Observed through the GSS layer: the server logs the match at level 1
    before the handler runs."""
    daemon = start(daemon_factory)
    # GSSX_INDICATE_MECHS with an empty call_ctx.
    body = struct.pack(">13I", 0x77, 0, 2, 400112, 1, 1, 0, 0, 0, 0, 0, 0, 0)
    indicate_mechs = struct.pack(">I", LAST | len(body)) + body
    with connect(daemon.socket) as conn:
        conn.sendall(indicate_mechs)
        conn.recv(4)
        daemon.wait_for_log("GSSX_INDICATE_MECHS: service 'main'")
        daemon.config.write_text(config({"renamed": {"mechs": "krb5", "euid": 0}}))
        daemon.reload()
        offset = daemon.log_path.stat().st_size
        conn.sendall(indicate_mechs)
        daemon.wait_for_log("GSSX_INDICATE_MECHS: service 'renamed'", after=offset)

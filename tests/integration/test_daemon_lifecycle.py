"""Starting and stopping a real gssproxy-py daemon: the command line, socket
files, SIGTERM, detaching, and start-up errors. (The idle timeout, which only
a socket-activated userproxy daemon honours, is in test_userproxy.py.)"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from gssproxy_py.server import cli
from gssproxy_py.testing.daemon import DaemonProcess, render_config, write_config
from gssproxy_py.testing.net import wait_until
from gssproxy_py.testing.paths import REPO_ROOT, VENV_PYTHON

CONFIG = render_config({"main": {"mechs": "krb5", "euid": 0}})


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """`python -m gssproxy_py.server ARGS`, waited for."""
    return subprocess.run(
        [str(VENV_PYTHON), "-m", "gssproxy_py.server", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def daemon_in(tmp_path: Path, text: str = CONFIG, extra_args: Sequence[str] = ()) -> DaemonProcess:
    config = write_config(tmp_path / "gssproxy.conf", text)
    return DaemonProcess(
        "py",
        config,
        socket=tmp_path / "default.sock",
        confdir=tmp_path / "conf.d",
        log_path=tmp_path / "gssproxy.log",
        extra_args=extra_args,
    )


def test_version() -> None:
    proc = run_cli("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, "gssproxy-py 0.1.0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-i", "-D"], "not allowed with argument"),
        (["--debug-level=-1"], "must be >= 0"),
        (["--idle-timeout=0"], "must be > 0"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_command_lines_exit_2(args: list[str], message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_bad_config_at_start_exits_1_naming_file_line_and_option(tmp_path: Path) -> None:
    conf = write_config(
        tmp_path / "gssproxy.conf",
        "[gssproxy]\n\n[service/x]\n  mechs = krb5\n  euid = 0\n  cred_usage = sideways\n",
    )
    (tmp_path / "conf.d").mkdir()
    proc = run_cli("-i", "-c", str(conf), "-C", str(tmp_path / "conf.d"), "-s", str(tmp_path / "s"))
    assert proc.returncode == 1
    assert f"{conf}:6: option 'cred_usage': expected initiate, accept or both" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_missing_config_file_exits_1(tmp_path: Path) -> None:
    proc = run_cli("-i", "-c", str(tmp_path / "absent.conf"), "-s", str(tmp_path / "s"))
    assert proc.returncode == 1
    assert "absent.conf: configuration file does not exist" in proc.stderr


@pytest.mark.parametrize("shared", [False, True], ids=["root-only dir", "dir others can write"])
@pytest.mark.parametrize("kind", ["file", "symlink", "stale socket"])
def test_whatever_another_user_put_at_the_socket_path_is_replaced(
    tmp_path: Path, kind: str, shared: bool
) -> None:
    """Issue 14, item 6: a file or symlink placed at the socket path used to
    stop the daemon from starting. It is replaced, a symlink's target left
    alone: atomically (bound beside it and renamed over it) in a directory
    other users can write; in one only root can write, where nobody can
    swap it meanwhile, unlinked and bound at the path itself, so the name
    the kernel keeps for the socket (what ss and lsof show) is the path."""
    daemon = daemon_in(tmp_path)
    if shared:
        tmp_path.chmod(0o1777)  # like /tmp: sticky, writable by everyone
    target = tmp_path / "target"
    target.write_text("precious")
    if kind == "file":
        daemon.socket.write_text("junk")
    elif kind == "symlink":
        daemon.socket.symlink_to(target)
    else:
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(str(daemon.socket))
    with daemon:
        assert daemon.socket.is_socket() and not daemon.socket.is_symlink()
        assert daemon.socket.stat().st_mode & 0o777 == 0o666
        assert f"{daemon.socket}: replaced a" in daemon.log_text()
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(daemon.socket))
            bound_name = conn.getpeername()
        if shared:
            assert f"socket directory {tmp_path} is mode 1777" in daemon.log_text()
            assert bound_name.startswith(f"{tmp_path}/.gp-")
        else:
            assert bound_name == str(daemon.socket)
    assert target.read_text() == "precious"
    # Nothing is left of the private directory the socket was bound in.
    assert not list(tmp_path.glob(".gp-*"))


def test_a_second_instance_does_not_take_the_socket_of_a_running_one(tmp_path: Path) -> None:
    first = daemon_in(tmp_path).start()
    try:
        before = first.socket.stat().st_ino
        proc = run_cli(*first.argv[3:])
        assert proc.returncode == 1
        assert f"{first.socket}: a running daemon answers on this socket" in proc.stderr
        # The running daemon keeps its socket, and it still answers.
        assert first.socket.stat().st_ino == before
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(first.socket))
    finally:
        first.stop()


def test_a_socket_directory_other_users_can_write_is_warned_about(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    config = write_config(tmp_path / "gssproxy.conf", CONFIG)
    daemon = DaemonProcess(
        "py",
        config,
        socket=shared / "default.sock",
        confdir=tmp_path / "conf.d",
        log_path=tmp_path / "gssproxy.log",
    )
    daemon.confdir.mkdir()
    with daemon:
        assert f"socket directory {shared} is mode 1777: writable by every user" in (
            daemon.log_text()
        )


def test_sigterm_removes_the_sockets_and_exits_0(tmp_path: Path) -> None:
    extra = tmp_path / "deep" / "dir" / "extra.sock"  # parents created
    daemon = daemon_in(
        tmp_path,
        render_config(
            {
                "main": {"mechs": "krb5", "euid": 0},
                "extra": {"mechs": "krb5", "euid": 0, "socket": str(extra)},
            }
        ),
    )
    with daemon:
        for path in (daemon.socket, extra):
            assert path.is_socket()
            assert path.stat().st_mode & 0o777 == 0o666
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(str(extra))  # an open, idle connection does not hold up the exit
        assert daemon.stop() == 0  # exits by itself: stop() would otherwise kill it
        idle.close()
    assert not daemon.socket.exists()
    assert not extra.exists()
    assert "stopped" in daemon.log_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT])
def test_other_stop_signals(tmp_path: Path, signum: signal.Signals) -> None:
    daemon = daemon_in(tmp_path).start()
    os.kill(daemon.pid, signum)
    assert wait_until(lambda: not daemon.running, 5)
    assert daemon.returncode == 0
    assert not daemon.socket.exists()


def test_daemon_mode_detaches_once_listening(tmp_path: Path) -> None:
    daemon = daemon_in(tmp_path)
    daemon.confdir.mkdir()
    args = [a for a in daemon.argv[3:] if a != "-i"]  # the default is -D
    args += ["--pid-file", str(tmp_path / "gssproxy.pid")]  # not the system's
    log = tmp_path / "detached.log"
    with open(log, "wb") as stderr:
        proc = subprocess.run(
            [str(VENV_PYTHON), "-m", "gssproxy_py.server", *args],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=20,
            check=False,
        )
    assert proc.returncode == 0
    assert daemon.socket.is_socket()  # listening before the parent returned
    match = re.search(r"gssproxy-py\[(\d+)\]: INFO: Initialization complete", log.read_text())
    assert match, log.read_text()
    pid = int(match.group(1))
    # A session of its own, which it does not lead: it can never get a terminal.
    assert os.getsid(pid) not in (os.getsid(0), pid)
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not daemon.socket.exists(), 5)


def test_gss_use_proxy_is_turned_off_for_the_daemon(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GSS_USE_PROXY", "yes")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        argv = ["-i", "-c", str(tmp_path / "absent.conf"), "-s", str(tmp_path / "s")]
        assert cli.main(argv) == 1  # stops at the missing file, after the switch
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert os.environ["GSS_USE_PROXY"] == "NO"

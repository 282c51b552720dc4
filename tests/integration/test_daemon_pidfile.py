"""The daemon as a forking service: the PID file `-D` writes, refusing a second
daemon, and paths given relative to where it was started (`-D` changes to `/`)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from gssproxy_py.testing.daemon import render_config, write_config
from gssproxy_py.testing.net import wait_until
from gssproxy_py.testing.paths import REPO_ROOT, VENV_PYTHON

CONFIG = render_config({"main": {"mechs": "krb5", "euid": 0}})


def start_detached(cwd: Path, *args: str, log: str = "gssproxy.log") -> tuple[int, str]:
    """`gssproxy-py -D ARGS` from `cwd`: the parent's exit status, once it
    exited, and what was logged to stderr so far (a file: the daemon keeps
    stderr, so a pipe would never reach end of file)."""
    with open(cwd / log, "ab+") as stderr:
        start = stderr.tell()
        proc = subprocess.run(
            [str(VENV_PYTHON), "-m", "gssproxy_py.server", "-D", *args],
            cwd=cwd,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=30,
            check=False,
        )
        stderr.seek(start)
        return proc.returncode, stderr.read().decode()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pid_file_written_refuses_a_second_daemon_and_removed_on_exit(tmp_path: Path) -> None:
    write_config(tmp_path / "gssproxy.conf", CONFIG)
    pid_file = tmp_path / "gssproxy.pid"
    common = ("-c", "gssproxy.conf", "-s", "default.sock", "--pid-file", "gssproxy.pid")
    status, text = start_detached(tmp_path, *common)
    assert status == 0, text
    pid = int(pid_file.read_text())
    try:
        assert pid_alive(pid) and (tmp_path / "default.sock").is_socket()
        assert pid_file.stat().st_mode & 0o777 == 0o644

        status, text = start_detached(tmp_path, *common)
        assert status == 1
        assert f"gssproxy-py is already running as PID {pid}" in text
        assert int(pid_file.read_text()) == pid  # untouched
        assert (tmp_path / "default.sock").is_socket()  # the first one's socket stays
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not pid_alive(pid), 10)
    assert not pid_file.exists()


def test_a_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    """A file naming another program (the C gssproxy leaves its own behind)."""
    write_config(tmp_path / "gssproxy.conf", CONFIG)
    pid_file = tmp_path / "gssproxy.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # pytest: alive, not gssproxy-py
    status, text = start_detached(
        tmp_path, "-c", "gssproxy.conf", "-s", "default.sock", "--pid-file", str(pid_file)
    )
    assert status == 0, text
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not pid_file.exists(), 10)


def test_relative_config_with_daemon_mode_still_reloads(tmp_path: Path) -> None:
    """-c and -C relative to the start directory keep working after the chdir
    to / that -D does: SIGHUP reads the same files again."""
    write_config(tmp_path / "gssproxy.conf", CONFIG)
    (tmp_path / "conf.d").mkdir()
    log = tmp_path / "gssproxy.log"
    status, text = start_detached(
        tmp_path,
        "-d",
        "-c",
        "gssproxy.conf",
        "-C",
        "conf.d",
        "-s",
        "default.sock",
        "--pid-file",
        "gssproxy.pid",
    )
    assert status == 0, text
    pid = int((tmp_path / "gssproxy.pid").read_text())
    try:
        write_config(
            tmp_path / "conf.d" / "50-extra.conf",
            render_config(
                {"extra": {"mechs": "krb5", "euid": 1, "socket": str(tmp_path / "x")}}
            ).replace("[gssproxy]\n  debug_level = 1\n", ""),
        )
        os.kill(pid, signal.SIGHUP)
        assert wait_until(lambda: "New config loaded successfully" in log.read_text(), 10), (
            log.read_text()
        )
        assert (tmp_path / "x").is_socket()
        assert "configuration not reloaded" not in log.read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not pid_alive(pid), 10)

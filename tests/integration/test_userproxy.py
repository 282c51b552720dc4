"""Userproxy mode and socket activation, with real processes.

The first test is upstream gssproxy's `userproxytest` (tests/userproxytest.c),
done the same way: a socket bound and listening, the daemon started with it
at descriptor 3 and `LISTEN_FDS=1`, `-u -i -d --debug-level=1 -s SOCKET
--idle-timeout=3`; it must say `Initialization complete.`, then
`Terminating, after idling`, and exit 0 within upstream's 6 s.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from gssproxy_py.client.sync import RpcClient
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM
from gssproxy_py.testing.activation import listening_socket, spawn_activated
from gssproxy_py.testing.daemon import render_config, write_config
from gssproxy_py.testing.interposer import interposer_env
from gssproxy_py.testing.net import wait_until
from gssproxy_py.testing.paths import REPO_ROOT, VENV_PYTHON
from gssproxy_py.testing.peer import (
    PeerError,
    PeerProcess,
    client_argv,
    establish,
    exercise_protection,
    peer_env,
)
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import LocalUser, popen_as, run_as

DAEMON = [str(VENV_PYTHON), "-m", "gssproxy_py.server"]
#: upstream's userproxytest sleeps 6 s, then requires a clean exit
UPSTREAM_DEADLINE = 6.0


def _wait_log(path: Path, text: str, timeout: float) -> bool:
    return wait_until(lambda: text in path.read_text(errors="replace"), timeout)


def test_upstream_userproxytest(tmp_path: Path) -> None:
    sock_path = tmp_path / "testdir" / "userproxytest.sock"
    listener = listening_socket(sock_path)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = spawn_activated(
            [
                *DAEMON,
                "-u",
                "-i",
                "-d",
                "--debug-level=1",
                "-s",
                str(sock_path),
                "--idle-timeout=3",
            ],
            [listener],
            {"PYTHONPATH": str(REPO_ROOT), "XDG_RUNTIME_DIR": str(tmp_path)},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    listener.close()  # the daemon has its own copy, as under systemd
    try:
        assert _wait_log(log, "Initialization complete.", 30), log.read_text()
        ready = time.monotonic()
        proc.wait(timeout=UPSTREAM_DEADLINE)
        assert time.monotonic() - ready < UPSTREAM_DEADLINE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "Terminating, after idling" in text
    assert "socket activation:" in text and "passed descriptor 3" in text
    # The socket file is the service manager's: it stays for the next start.
    assert sock_path.is_socket()


def test_activated_userproxy_stays_while_a_connection_is_open(tmp_path: Path) -> None:
    sock_path = tmp_path / "user.sock"
    listener = listening_socket(sock_path)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = spawn_activated(
            [*DAEMON, "-u", "-i", "-d", "-s", str(sock_path), "--idle-timeout=1"],
            [listener],
            {"PYTHONPATH": str(REPO_ROOT), "XDG_RUNTIME_DIR": str(tmp_path)},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    listener.close()
    try:
        assert _wait_log(log, "Initialization complete.", 30), log.read_text()
        with RpcClient(sock_path, GSSPROXY_PROGRAM, 1) as client:
            client.null()
            time.sleep(2.5)
            assert proc.poll() is None, log.read_text()  # a connection is open
            client.null()
        proc.wait(timeout=30)
        assert proc.returncode == 0
        assert "Terminating, after idling" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_idle_timeout_does_not_stop_a_system_daemon(tmp_path: Path) -> None:
    """gssproxy idles out only a socket-activated userproxy daemon: the kernel's
    nfsd and rpc.gssd would hang on a system daemon that left (gssproxy#56)."""
    config = write_config(
        tmp_path / "gssproxy.conf", render_config({"m": {"mechs": "krb5", "euid": 0}})
    )
    sock_path = tmp_path / "default.sock"
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*DAEMON, "-i", "-d", "-c", str(config), "-s", str(sock_path), "--idle-timeout=0.5"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        assert _wait_log(log, "Initialization complete.", 30), log.read_text()
        time.sleep(2)
        assert proc.poll() is None, log.read_text()
        assert "--idle-timeout ignored" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_system_daemon_uses_passed_sockets_by_name(tmp_path: Path) -> None:
    default = tmp_path / "default.sock"
    extra = tmp_path / "extra.sock"
    config = write_config(
        tmp_path / "gssproxy.conf",
        render_config(
            {
                "m": {"mechs": "krb5", "euid": 0},
                "e": {"mechs": "krb5", "euid": 0, "socket": str(extra)},
            }
        ),
    )
    # Passed in the other order than the configuration names them.
    socks = [listening_socket(extra), listening_socket(default)]
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = spawn_activated(
            [*DAEMON, "-i", "-d", "-c", str(config), "-s", str(default)],
            socks,
            {"PYTHONPATH": str(REPO_ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    for s in socks:
        s.close()
    try:
        assert _wait_log(log, "Initialization complete.", 30), log.read_text()
        text = log.read_text()
        assert f"{extra} is passed descriptor 3" in text
        assert f"{default} is passed descriptor 4" in text
        for path in (default, extra):
            with RpcClient(path, GSSPROXY_PROGRAM, 1) as client:
                client.null()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert default.is_socket() and extra.is_socket()  # the manager's files stay
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_passed_descriptor_that_is_not_a_listening_socket_is_refused(tmp_path: Path) -> None:
    unbound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = spawn_activated(
        [*DAEMON, "-u", "-i", "-s", str(tmp_path / "u.sock")],
        [unbound],
        {"PYTHONPATH": str(REPO_ROOT), "XDG_RUNTIME_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
        text=True,
    )
    unbound.close()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "passed descriptor 3 is not a listening AF_UNIX stream socket" in out


def test_userproxy_refuses_a_config_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*DAEMON, "-u", "-i", "-c", str(tmp_path / "x.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert "-c/-C cannot be used with -u" in proc.stderr


@pytest.mark.integration
@pytest.mark.root
def test_interposer_user_through_own_userproxy(
    harness_dir: Path, realm: StandardRealm, test_users: tuple[LocalUser, ...]
) -> None:
    """gpytest1 runs a userproxy holding alice's TGT in a ccache only gpytest1
    can read; gpytest1's interposer client (with an empty ccache of its own)
    authenticates to host@localhost through it. Without the interposer it cannot."""
    user = test_users[0]
    home = harness_dir / f"userproxy-{os.getpid()}"
    runtime = home / "run"
    runtime.mkdir(parents=True)
    os.chmod(home, 0o755)
    os.chown(runtime, user.uid, user.gid)
    os.chmod(runtime, 0o700)
    ccache = home / "gpytest1.ccache"
    realm.realm.kinit(
        realm.alice, ccache, password=realm.alice_password, owner=(user.uid, user.gid)
    )
    os.chmod(ccache, 0o600)
    log = home / "daemon.log"
    daemon_env = peer_env(
        realm.env(),
        {
            "PYTHONPATH": str(REPO_ROOT),
            "XDG_RUNTIME_DIR": str(runtime),
            "KRB5CCNAME": f"FILE:{ccache}",
            "KRB5_KTNAME": "FILE:/nonexistent",
        },
    )
    sock = runtime / "gssproxy" / "default.sock"
    with open(log, "wb") as out:
        daemon = popen_as(user, [*DAEMON, "-u", "-i", "-d"], daemon_env, stdout=out, stderr=out)
    try:
        assert _wait_log(log, "Initialization complete.", 30), log.read_text()
        assert (runtime / "gssproxy").stat().st_mode & 0o777 == 0o700
        base = peer_env(realm.env(), {"PYTHONPATH": str(Path(__file__).parent / "clients")})
        init_env = peer_env(base, interposer_env(sock, home))
        acc_env = peer_env(base, {"KRB5_KTNAME": f"FILE:{realm.service_keytab}"})
        with (
            PeerProcess(
                client_argv("init.py", "--target", realm.host_service, "--serve"),
                init_env,
                user=user,
            ) as init,
            PeerProcess(client_argv("accept.py", "--serve"), acc_env) as acc,
        ):
            done = establish(init, acc)
            assert done.acceptor["initiator"] == realm.alice
            exercise_protection(init, acc)
        # Control: the same client without the interposer has no credentials.
        ctl_env = peer_env(base, {"KRB5CCNAME": "MEMORY:empty", "KRB5_KTNAME": "FILE:/nonexistent"})
        with (
            PeerProcess(
                client_argv("init.py", "--target", realm.host_service, "--serve"),
                ctl_env,
                user=user,
            ) as init,
            PeerProcess(client_argv("accept.py", "--serve"), acc_env) as acc,
            pytest.raises(PeerError),
        ):
            establish(init, acc)
        assert "service 'user-proxy'" in log.read_text()
        # The user administers their own daemon; its admin socket is theirs alone.
        status = run_as(
            user,
            [str(VENV_PYTHON), "-m", "gssproxy_py.admin.ctl", "status", "-u"],
            {"PYTHONPATH": str(REPO_ROOT), "XDG_RUNTIME_DIR": str(runtime)},
        )
        assert status.returncode == 0, status.stderr
        assert "(userproxy mode)" in status.stdout
        assert re.search(r"user-proxy\s+gssproxy\s+GSSX_INIT_SEC_CONTEXT\s+[1-9]", status.stdout)
        admin = runtime / "gssproxy" / "default-admin.sock"
        assert admin.stat().st_mode & 0o777 == 0o600 and admin.stat().st_uid == user.uid
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0, log.read_text()

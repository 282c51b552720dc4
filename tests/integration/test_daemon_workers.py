"""`worker_processes = 2` on a real daemon (`server/workers.py`): two
processes accept on the same sockets, a handle sealed by one opens in the
other, reload and stop reach both, a killed worker is forked again,
`gssproxy-py-ctl status` shows each process's counters and their totals;
and with the default (1) no other process is forked at all.

Which process served a connection is read from the log: every line carries
`gssproxy-py[PID]`, and each accept logs `[conn N] accepted on` (level 1).
Connections are opened one at a time, so the newest such line is theirs.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gssapi
import pytest

from gssproxy_py.client import GssProxyClient
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.testing.activation import listening_socket, spawn_activated
from gssproxy_py.testing.daemon import DaemonProcess, daemon_argv, write_config
from gssproxy_py.testing.paths import REPO_ROOT, VENV_PYTHON
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import DEFAULT_PATH
from tests.support.contexts import init_two_legs

pytestmark = [pytest.mark.integration, pytest.mark.root]

CC = gp.GssxCallCtx(b"", b"", ())
COMPLETE = 0
HOST = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
ACCEPTED = re.compile(r"gssproxy-py\[(\d+)\]: INFO: \[conn \d+\] accepted on")
WORKER_STARTED = re.compile(r"worker process (\d+) started")
SUPERVISOR_STARTED = re.compile(r"worker supervisor (\d+) started")
RELOADED = re.compile(r"gssproxy-py\[(\d+)\]: INFO: New config loaded successfully")
#: Attempts at landing a connection on a second process; the kernel wakes
#: every process waiting on the socket and one of them wins each accept.
MAX_TRIES = 200


def render(realm: StandardRealm, workdir: Path, *, workers: int = 2, name: str = "all") -> str:
    return f"""[gssproxy]
  debug_level = 1
  state_dir = {workdir}/state
  worker_processes = {workers}
[service/{name}]
  mechs = krb5
  cred_store = keytab:{realm.service_keytab}
  cred_store = client_keytab:{realm.service_keytab}
  cred_store = ccache:FILE:{workdir}/svc_%U.ccache
  trusted = yes
  euid = 0
"""


@pytest.fixture
def daemon(daemon_factory: Any, realm: StandardRealm, initiator_env: None) -> DaemonProcess:
    d: DaemonProcess = daemon_factory("py", lambda paths: render(realm, paths.workdir))
    wait_until(lambda: d.log_text().count("Worker process ready.") == 1)
    return d


def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def pids(pattern: re.Pattern[str], text: str) -> list[int]:
    return [int(m.group(1)) for m in pattern.finditer(text)]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class Served:
    """Where a daemon listens and logs (started by `daemon_factory` or by hand)."""

    socket: Path
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, *, after: int = 0) -> None:
        wait_until(lambda: text in self.log_text()[after:])


def open_served(
    daemon: DaemonProcess | Served, stack: contextlib.ExitStack
) -> tuple[GssProxyClient, int]:
    """A connection that has answered a call, and the pid that accepted it."""
    offset = len(daemon.log_text())
    client = stack.enter_context(GssProxyClient(str(daemon.socket)))
    assert client.indicate_mechs().status.major_status == COMPLETE
    daemon.wait_for_log("accepted on", after=offset)
    found = pids(ACCEPTED, daemon.log_text()[offset:])
    assert len(found) == 1, found
    return client, found[0]


def on_two_processes(
    daemon: DaemonProcess | Served, stack: contextlib.ExitStack
) -> tuple[tuple[GssProxyClient, int], tuple[GssProxyClient, int]]:
    """Two open connections accepted by two different processes."""
    first = open_served(daemon, stack)
    for _ in range(MAX_TRIES):
        # Each try in a stack of its own: the losers close at once.
        inner = contextlib.ExitStack()
        other = open_served(daemon, inner)
        if other[1] != first[1]:
            stack.enter_context(inner)
            return first, other
        inner.close()
    pytest.fail(f"{MAX_TRIES} connections all accepted by pid {first[1]}")


def ok(res: Any) -> None:
    assert res.status.major_status == COMPLETE, res.status


def test_two_processes_serve_and_share_the_handle_key(
    daemon: DaemonProcess, realm: StandardRealm
) -> None:
    log = daemon.log_text()
    (supervisor,) = pids(SUPERVISOR_STARTED, log)
    (worker,) = pids(WORKER_STARTED, log)
    with contextlib.ExitStack() as stack:
        (a, pid_a), (b, pid_b) = on_two_processes(daemon, stack)
        assert {pid_a, pid_b} == {daemon.pid, worker}
        assert supervisor not in (pid_a, pid_b)

        # A credential handle sealed by one process opens in the other.
        res = a.acquire_cred(
            gp.GssxArgAcquireCred(CC, None, False, None, 0, (), gp.GSSX_C_BOTH, 0, 0, ())
        )
        ok(res)
        cred = res.output_cred_handle
        assert cred is not None and cred.cred_handle_reference

        # One context, its legs on both: init on A with A's handle, finished on B.
        res = init_two_legs(a, b, cred, realm.service_keytab)
        ok(res)
        assert res.context_handle is not None and res.context_handle.open

        # And the other way: accepted on B, its context used on A.
        init = gssapi.SecurityContext(name=HOST, usage="initiate")
        res = b.accept_sec_context(
            gp.GssxArgAcceptSecContext(CC, None, None, init.step(), None, False, ())
        )
        ok(res)
        ctx = res.context_handle
        init.step(res.output_token)
        res = a.get_mic(gp.GssxArgGetMic(CC, ctx, 0, b"signed on the other process"))
        ok(res)
        init.verify_signature(b"signed on the other process", res.token_buffer)
    # The pid file, admin socket and readiness are the first process's.
    assert log.count("Initialization complete.") == 1
    assert f"gssproxy-py[{daemon.pid}]: INFO: Initialization complete." in log
    assert f"gssproxy-py[{worker}]: INFO: admin socket" not in log


def test_reload_reaches_every_process_and_a_bad_one_none(
    daemon: DaemonProcess, realm: StandardRealm
) -> None:
    (worker,) = pids(WORKER_STARTED, daemon.log_text())
    offset = len(daemon.log_text())
    daemon.config.write_text(render(realm, daemon.config.parent, name="renamed"))
    os.kill(daemon.pid, signal.SIGHUP)
    wait_until(lambda: len(pids(RELOADED, daemon.log_text()[offset:])) == 2)
    assert set(pids(RELOADED, daemon.log_text()[offset:])) == {daemon.pid, worker}
    # Both now match calls against the new service.
    with contextlib.ExitStack() as stack:
        (a, _), (b, _) = on_two_processes(daemon, stack)
        for client in (a, b):
            mark = len(daemon.log_text())
            client.indicate_mechs()
            daemon.wait_for_log("GSSX_INDICATE_MECHS: service 'renamed'", after=mark)

    # A bad configuration: the first process refuses it and tells nobody.
    offset = len(daemon.log_text())
    daemon.config.write_text(render(realm, daemon.config.parent) + "  cred_usage = sideways\n")
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_for_log("configuration not reloaded, keeping the old one", after=offset)
    # A socket added is refused too: the workers could never listen on it.
    offset = len(daemon.log_text())
    extra = daemon.socket.parent / "extra.sock"
    daemon.config.write_text(
        render(realm, daemon.config.parent)
        + f"\n[service/extra]\n  mechs = krb5\n  euid = 0\n  socket = {extra}\n"
    )
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_for_log("the GSS-Proxy sockets are fixed at start", after=offset)
    assert not extra.exists()
    # Both still serve, and nothing reloaded anywhere since the good one.
    with contextlib.ExitStack() as stack:
        on_two_processes(daemon, stack)
    assert not RELOADED.search(daemon.log_text()[offset:])


def test_admin_reload_and_stop_reach_every_process(
    daemon: DaemonProcess, realm: StandardRealm
) -> None:
    log = daemon.log_text()
    family = [daemon.pid, *pids(SUPERVISOR_STARTED, log), *pids(WORKER_STARTED, log)]
    offset = len(log)
    daemon.config.write_text(render(realm, daemon.config.parent, name="renamed"))
    reloaded = ctl("reload", "-s", str(daemon.socket))
    assert (reloaded.returncode, reloaded.stdout.strip()) == (0, "reloaded: generation 2")
    wait_until(lambda: len(pids(RELOADED, daemon.log_text()[offset:])) == 2)
    assert set(pids(RELOADED, daemon.log_text()[offset:])) == {daemon.pid, family[2]}
    stopped = ctl("stop", "-s", str(daemon.socket))
    assert (stopped.returncode, stopped.stdout.strip()) == (0, "stopping")
    wait_until(lambda: not any(alive(p) for p in family))


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_PYTHON), "-m", "gssproxy_py.admin.ctl", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _prom(text: str, metric: str, **labels: str) -> int:
    """The sum of `metric`'s samples whose labels include `labels`."""
    total = 0
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name != f"gssproxy_py_{metric}" or line.startswith("#"):
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_status_shows_every_process_and_their_total(daemon: DaemonProcess) -> None:
    """The first process asks the worker for its counters over their
    private channel: `gssproxy-py-ctl status` lists each process's calls
    and connections, and the daemon's figures are their sums. A worker
    that cannot answer (stopped) is said to be so; once it runs again its
    late answer is not taken for the next one's."""
    (worker,) = pids(WORKER_STARTED, daemon.log_text())
    sock = str(daemon.socket)
    indicate = {"procedure": "GSSX_INDICATE_MECHS"}
    with contextlib.ExitStack() as stack:
        served = {pid: client for client, pid in on_two_processes(daemon, stack)}
        assert set(served) == {daemon.pid, worker}
        for pid, more in ((daemon.pid, 3), (worker, 5)):
            for _ in range(more):
                assert served[pid].indicate_mechs().status.major_status == COMPLETE
        prom = ctl("status", "-s", sock, "--format=prometheus")
        text = ctl("status", "-s", sock)
        assert prom.returncode == 0 and text.returncode == 0, prom.stderr + text.stderr
        first = _prom(prom.stdout, "process_calls_total", process="0", **indicate)
        second = _prom(prom.stdout, "process_calls_total", process="1", **indicate)
        assert first >= 4 and second >= 6, prom.stdout
        assert _prom(prom.stdout, "calls_total", **indicate) == first + second
        for number in ("0", "1"):
            assert _prom(prom.stdout, "process_answered", process=number) == 1
            assert _prom(prom.stdout, "process_connections", process=number) >= 1
        assert _prom(prom.stdout, "connections") == sum(
            _prom(prom.stdout, "process_connections", process=n) for n in ("0", "1")
        )
        assert f"first process, pid {daemon.pid}: " in text.stdout, text.stdout
        assert f"worker 1, pid {worker}: " in text.stdout, text.stdout

        os.kill(worker, signal.SIGSTOP)
        try:
            stopped = ctl("status", "-s", sock)
        finally:
            os.kill(worker, signal.SIGCONT)
        assert stopped.returncode == 0, stopped.stderr
        assert "worker 1: no answer" in stopped.stdout, stopped.stdout
        assert f"first process, pid {daemon.pid}: " in stopped.stdout
        # The worker answers the request it missed, late; the next status
        # gets the answer to its own (one more call on it since).
        assert served[worker].indicate_mechs().status.major_status == COMPLETE
        again = ctl("status", "-s", sock, "--format=prometheus").stdout
        assert _prom(again, "process_calls_total", process="1", **indicate) == second + 1


def test_sigterm_to_the_first_ends_every_process(daemon: DaemonProcess) -> None:
    log = daemon.log_text()
    family = [daemon.pid, *pids(SUPERVISOR_STARTED, log), *pids(WORKER_STARTED, log)]
    assert len(family) == 3 and all(alive(p) for p in family)
    with contextlib.ExitStack() as stack:
        on_two_processes(daemon, stack)  # connections open while stopping
        assert daemon.stop() == 0
    wait_until(lambda: not any(alive(p) for p in family))
    assert not daemon.socket.exists()
    assert daemon.log_text().count("INFO: stopped") == 2  # the first process and the worker


def test_a_killed_worker_is_forked_again(daemon: DaemonProcess) -> None:
    (worker,) = pids(WORKER_STARTED, daemon.log_text())
    inode = daemon.socket.stat().st_ino
    offset = len(daemon.log_text())
    os.kill(worker, signal.SIGKILL)
    daemon.wait_for_log(
        f"worker process {worker} killed by SIGKILL; starting another", after=offset
    )
    wait_until(lambda: len(pids(WORKER_STARTED, daemon.log_text()[offset:])) == 1)
    (again,) = pids(WORKER_STARTED, daemon.log_text()[offset:])
    wait_until(lambda: "Worker process ready." in daemon.log_text()[offset:])
    assert daemon.socket.stat().st_ino == inode  # the listener never closed
    with contextlib.ExitStack() as stack:
        (_, pid_a), (_, pid_b) = on_two_processes(daemon, stack)
    assert {pid_a, pid_b} == {daemon.pid, again}
    assert daemon.log_text()[offset:].count("starting another") == 1


def test_a_killed_supervisor_is_reaped_and_logged(daemon: DaemonProcess) -> None:
    """Its workers end with it (PR_SET_PDEATHSIG); the first process, which
    cannot fork them again, says so, reaps it and serves on alone."""
    log = daemon.log_text()
    (supervisor,) = pids(SUPERVISOR_STARTED, log)
    (worker,) = pids(WORKER_STARTED, log)
    os.kill(supervisor, signal.SIGKILL)
    daemon.wait_for_log(
        f"worker supervisor {supervisor} killed by SIGKILL, and its worker processes with it"
    )
    wait_until(lambda: not Path(f"/proc/{supervisor}").exists())  # reaped: no zombie
    wait_until(lambda: not alive(worker))
    with contextlib.ExitStack() as stack:
        _, pid = open_served(daemon, stack)
    assert pid == daemon.pid
    assert daemon.stop() == 0


def test_one_process_by_default(daemon_factory: Any, realm: StandardRealm) -> None:
    d: DaemonProcess = daemon_factory("py", lambda paths: render(realm, paths.workdir, workers=1))
    with contextlib.ExitStack() as stack:
        for _ in range(5):
            assert open_served(d, stack)[1] == d.pid
    log = d.log_text()
    assert "worker supervisor" not in log and "worker process" not in log.lower()


def test_sockets_passed_by_the_service_manager_are_served_by_every_process(
    tmp_path: Path, realm: StandardRealm
) -> None:
    served = Served(tmp_path / "default.sock", tmp_path / "gssproxy.log")
    config = write_config(tmp_path / "gssproxy.conf", render(realm, tmp_path))
    (tmp_path / "conf.d").mkdir()
    argv = daemon_argv(
        "py", config=config, confdir=tmp_path / "conf.d", socket=served.socket, debug_level=1
    )
    env = {**realm.env(), "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    with listening_socket(served.socket) as passed, open(served.log_path, "wb") as log:
        proc = spawn_activated(argv, [passed], env, stdout=log, stderr=subprocess.STDOUT)
    try:
        served.wait_for_log("Worker process ready.")
        assert "socket activation: " in served.log_text()
        with contextlib.ExitStack() as stack:
            (_, pid_a), (_, pid_b) = on_two_processes(served, stack)
        assert proc.pid in (pid_a, pid_b)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    family = [
        *pids(SUPERVISOR_STARTED, served.log_text()),
        *pids(WORKER_STARTED, served.log_text()),
    ]
    wait_until(lambda: not any(alive(p) for p in family))
    assert served.socket.is_socket()  # the service manager's: left in place


def test_detached_with_workers_and_a_pid_file(tmp_path: Path, realm: StandardRealm) -> None:
    served = Served(tmp_path / "default.sock", tmp_path / "gssproxy.log")
    pid_file = tmp_path / "gssproxy.pid"
    config = write_config(tmp_path / "gssproxy.conf", render(realm, tmp_path))
    (tmp_path / "conf.d").mkdir()
    argv = daemon_argv(
        "py", config=config, confdir=tmp_path / "conf.d", socket=served.socket, debug_level=1
    )
    argv = [a for a in argv if a != "-i"] + ["--pid-file", str(pid_file)]  # -D, the default
    env = {"PATH": DEFAULT_PATH, **realm.env(), "PYTHONPATH": str(REPO_ROOT)}
    with open(served.log_path, "wb") as log:
        proc = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 0  # the parent returns once the first process is ready
    first = int(pid_file.read_text())
    served.wait_for_log("Worker process ready.")
    log_text = served.log_text()
    family = [first, *pids(SUPERVISOR_STARTED, log_text), *pids(WORKER_STARTED, log_text)]
    assert len(family) == 3
    with contextlib.ExitStack() as stack:
        (_, pid_a), (_, pid_b) = on_two_processes(served, stack)
    assert first in (pid_a, pid_b)
    os.kill(first, signal.SIGTERM)
    wait_until(lambda: not any(alive(p) for p in family))
    assert not pid_file.exists() and not served.socket.exists()

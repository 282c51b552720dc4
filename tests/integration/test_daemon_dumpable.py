"""The daemon's processes are not dumpable unless `allow_core_dumps = yes`.

They hold keytab keys, PINs and the credential-handle key: PR_SET_DUMPABLE 0
keeps them out of core files and out of reach of ptrace and /proc/PID/mem by
other processes of the daemon's uid. Seen from outside, the /proc/PID files
of a process that is not dumpable belong to root whatever uid it runs as, so
the real daemon runs here as an ordinary uid (a root daemon's files are
root's either way), with `worker_processes = 2`: the first process, the
supervisor and the worker are each looked at, before and after a reload
that turns `allow_core_dumps` on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from gssproxy_py.server.logs import READY_MESSAGE, RELOADED_MESSAGE, WORKER_READY_MESSAGE
from gssproxy_py.testing.daemon import write_config
from gssproxy_py.testing.paths import VENV_PYTHON
from gssproxy_py.testing.process import children, terminate
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import check_can_run_python, ensure_test_users, popen_as

pytestmark = [pytest.mark.integration, pytest.mark.root]

DEADLINE = 30.0


def _config(run: Path, uid: int, allow: bool) -> str:
    return f"""[gssproxy]
  state_dir = {run}/state
  worker_processes = 2
  allow_core_dumps = {"yes" if allow else "no"}
[service/user]
  mechs = krb5
  euid = {uid}
"""


def _wait(what: str, check: object, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: {log.read_text()[-3000:]}"
        time.sleep(0.05)


def _mem_owners(pids: list[int]) -> list[int]:
    return [os.stat(f"/proc/{pid}/mem").st_uid for pid in pids]


def test_the_daemon_and_its_worker_processes_are_not_dumpable(
    harness_dir: Path, realm: StandardRealm
) -> None:
    (user, _) = ensure_test_users()
    check_can_run_python(user)
    base = Path(tempfile.mkdtemp(prefix="dumpable-", dir=harness_dir))
    base.chmod(0o755)
    run = base / "run"
    run.mkdir()
    os.chown(run, user.uid, user.gid)
    conf = write_config(base / "gssproxy.conf", _config(run, user.uid, False), mode=0o644)
    log = base / "daemon.log"
    argv = [str(VENV_PYTHON), "-m", "gssproxy_py.server", "-i", "-d", "-c", str(conf)]
    argv += ["-s", str(run / "default.sock")]
    with open(log, "wb") as out:
        daemon = popen_as(
            user,
            argv,
            {**realm.env(), "KRB5RCACHEDIR": str(run)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait("ready", lambda: WORKER_READY_MESSAGE in log.read_text(), log)
        _wait("ready", lambda: READY_MESSAGE in log.read_text(), log)
        (supervisor,) = children(daemon.pid)
        (worker,) = children(supervisor)
        processes = [daemon.pid, supervisor, worker]
        for pid in processes:
            status = Path(f"/proc/{pid}/status").read_text()
            assert f"Uid:\t{user.uid}\t" in status, (pid, status)
        assert _mem_owners(processes) == [0, 0, 0], "a process of the daemon is dumpable"

        conf.write_text(_config(run, user.uid, True))
        os.kill(daemon.pid, signal.SIGHUP)
        _wait("reloaded", lambda: RELOADED_MESSAGE in log.read_text(), log)
        # The worker reloads on the SIGHUP the supervisor forwards.
        _wait(
            "dumpable after the reload",
            lambda: _mem_owners(processes) == [user.uid] * 3,
            log,
        )
        assert "allow_core_dumps = yes: core files" in log.read_text()
    finally:
        terminate(daemon, DEADLINE)
    assert daemon.returncode == 0, log.read_text()[-3000:]

"""run_as_user: the daemon's process leaves root but can still read other users'
/proc/PID/exe (CAP_SYS_PTRACE), and can regain nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from gssproxy_py.testing.daemon import DaemonError, DaemonProcess, render_config, write_config
from gssproxy_py.testing.users import LocalUser

pytestmark = [pytest.mark.integration, pytest.mark.root]

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from gssproxy_py.server.privileges import CAP_SYS_PTRACE, capability_sets, drop_privileges
    target = int(sys.argv[2])  # a process owned by another user (root)
    uid, gid = drop_privileges(sys.argv[1])
    caps = capability_sets()
    try:
        exe = os.path.realpath(f"/proc/{target}/exe", strict=True)
    except OSError as e:
        exe = f"error {e.errno}"
    try:
        os.setuid(0)
        regained = True
    except OSError:
        regained = False
    print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                      "caps": caps, "exe": exe, "regained": regained}))
    """
)


def test_drop_keeps_only_ptrace(test_users: tuple[LocalUser, ...]) -> None:
    user = test_users[0]
    # a root-owned process whose exe an ordinary user may not read
    sleeper = subprocess.Popen(["/bin/sleep", "30"])
    try:
        r = subprocess.run(
            [sys.executable, "-c", CHILD, user.name, str(sleeper.pid)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
    finally:
        sleeper.kill()
    got = json.loads(r.stdout)
    assert (got["uid"], got["euid"], got["gid"]) == (user.uid, user.uid, user.gid)
    ptrace = 1 << 19
    assert got["caps"]["CapEff"] == ptrace and got["caps"]["CapPrm"] == ptrace
    assert got["caps"]["CapBnd"] == ptrace
    assert got["exe"] == os.path.realpath("/bin/sleep")
    assert got["regained"] is False


def test_unknown_user_is_an_error() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gssproxy_py.server.privileges import drop_privileges as d; d('no-such-user-x')",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode != 0 and "no such user 'no-such-user-x'" in r.stderr


@pytest.mark.parametrize("allow_core_dumps", [False, True])
def test_daemon_runs_as_user_and_still_serves(
    daemon_factory: object, test_users: tuple[LocalUser, ...], allow_core_dumps: bool
) -> None:
    """Also: the change of uid resets the process's dumpable flag (to the
    kernel's suid_dumpable), and the daemon sets `allow_core_dumps` again
    after it: its /proc/PID files are its uid's only when dumpable."""
    from gssproxy_py.client import GssProxyClient

    user = test_users[0]

    def render(paths: object) -> str:
        return f"""[gssproxy]
  debug_level = 1
  run_as_user = {user.name}
  state_dir = {paths.workdir}/state
  allow_core_dumps = {"yes" if allow_core_dumps else "no"}

[service/any]
  mechs = krb5
  euid = 0
  allow_any_uid = yes
"""

    daemon = daemon_factory("py", render)  # type: ignore[operator]
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(user.uid)] * 4
    assert f"running as {user.name} (uid {user.uid})" in daemon.log_text()
    with GssProxyClient(str(daemon.socket)) as client:
        res = client.indicate_mechs()
    assert res.status.major_status == 0 and res.mechs
    assert os.stat(daemon.socket.parent / "state").st_uid == user.uid
    mem_owner = os.stat(f"/proc/{daemon.pid}/mem").st_uid
    assert mem_owner == (user.uid if allow_core_dumps else 0)


def _daemon(workdir: Path, run_as: str | None, log: str = "gssproxy.log") -> DaemonProcess:
    text = render_config(
        {"any": {"mechs": "krb5", "euid": 0, "allow_any_uid": "yes"}},
        global_options={
            "state_dir": str(workdir / "state"),
            **({"run_as_user": run_as} if run_as else {}),
        },
    )
    return DaemonProcess(
        "py",
        write_config(workdir / "gssproxy.conf", text),
        socket=workdir / "default.sock",
        confdir=workdir / "conf.d",
        log_path=workdir / log,
    )


def test_run_as_user_can_be_switched_on_and_off(
    harness_dir: Path, test_users: tuple[LocalUser, ...]
) -> None:
    """On: the state directory goes to the user. Off again: root takes it back
    (with a warning), the same key opens, and calls are served."""
    from gssproxy_py.client import GssProxyClient

    user = test_users[0]
    # Under the 0755 harness dir: the dropped daemon must reach its state dir.
    tmp_path = Path(tempfile.mkdtemp(prefix="run-as-", dir=harness_dir))
    tmp_path.chmod(0o755)
    key = tmp_path / "state" / "handle-keys"
    keys: list[bytes] = []
    for turn, run_as in enumerate((None, user.name, None, user.name, None)):
        daemon = _daemon(tmp_path, run_as, f"run{turn}.log").start()
        try:
            owner = user.uid if run_as else 0
            assert key.stat().st_uid == owner and (tmp_path / "state").stat().st_uid == owner
            keys.append(key.read_bytes())
            with GssProxyClient(str(daemon.socket)) as client:
                assert client.indicate_mechs().status.major_status == 0
        finally:
            assert daemon.stop() == 0
        log = daemon.log_text()
        if run_as is None and turn > 0:
            assert f"run_as_user is off: {tmp_path / 'state'} belonged to uid {user.uid}" in log
        assert "Traceback" not in log
    assert len(set(keys)) == 1  # one key throughout: handles stay valid


@pytest.mark.parametrize(
    ("content", "mode", "why"),
    [
        (b"not a key file", 0o600, "handle key file"),
        (None, 0o644, "gives group/other access"),
    ],
)
def test_an_unusable_handle_key_stops_the_start_with_the_fix(
    tmp_path: Path, content: bytes | None, mode: int, why: str
) -> None:
    key = tmp_path / "state" / "handle-keys"
    first = _daemon(tmp_path, None).start()  # creates a good key
    first.stop()
    if content is not None:
        key.write_bytes(content)
    key.chmod(mode)
    daemon = _daemon(tmp_path, None, "refused.log")
    with pytest.raises(DaemonError):
        daemon.start()
    log = daemon.log_text()
    assert daemon.returncode == 1
    assert f"cannot start: handle key file {key}" in log and why in log
    assert "fix:" in log and "Initialization complete" not in log
    assert "Traceback" not in log

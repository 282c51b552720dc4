"""run_as_user: the daemon's process leaves root but can still read other users'
/proc/PID/exe (CAP_SYS_PTRACE), and can regain nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


def test_daemon_runs_as_user_and_still_serves(
    daemon_factory: object, test_users: tuple[LocalUser, ...]
) -> None:
    from gssproxy_py.client import GssProxyClient

    user = test_users[0]

    def render(paths: object) -> str:
        return f"""[gssproxy]
  debug_level = 1
  run_as_user = {user.name}
  state_dir = {paths.workdir}/state

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

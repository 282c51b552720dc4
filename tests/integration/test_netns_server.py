"""The daemon's namespace executors across run_as_user, with a real namespace.

A service restricted to a /run/netns name is served to a client inside that
namespace by a daemon that dropped root: the executor threads entered the
namespace before the drop (`setns` needs CAP_SYS_ADMIN), and the call runs
on them. No KDC is needed: INDICATE_MECHS runs on the same executor as any
other procedure, and fails if the namespace could not be entered.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gssproxy_py.netns.named import NETNS_DIR, create_named, remove_named
from gssproxy_py.testing.daemon import DaemonPaths
from gssproxy_py.testing.users import LocalUser

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, run_as_user)"),
    pytest.mark.skipif(shutil.which("nsenter") is None, reason="needs nsenter"),
]

CLIENT = """
import json, sys
from gssproxy_py.client import GssProxyClient
with GssProxyClient(sys.argv[1]) as client:
    res = client.indicate_mechs()
print(json.dumps({"major": res.status.major_status, "mechs": len(res.mechs),
                  "minor": res.status.minor_status_string.decode(errors="replace")}))
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"gpytest-srv-{uuid.uuid4().hex[:6]}"
    create_named(name)
    try:
        yield name
    finally:
        remove_named(name)


def indicate_mechs(socket_path: Path, netns: str | None) -> dict[str, object]:
    argv = [sys.executable, "-c", CLIENT, str(socket_path)]
    if netns is not None:
        argv = ["nsenter", f"--net={os.path.join(NETNS_DIR, netns)}", *argv]
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": repo},
        check=True,
    )
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_namespaced_service_is_served_after_run_as_user(
    daemon_factory: object, test_users: tuple[LocalUser, ...], netns: str
) -> None:
    user = test_users[0]

    def render(paths: DaemonPaths) -> str:
        return f"""[gssproxy]
  run_as_user = {user.name}
  state_dir = {paths.workdir}/state

[service/in-netns]
  mechs = krb5
  euid = 0
  netns = {netns}
"""

    daemon = daemon_factory("py", render, debug_level=2)  # type: ignore[operator]
    inside = indicate_mechs(daemon.socket, netns)
    assert inside["major"] == 0 and inside["mechs"], inside
    outside = indicate_mechs(daemon.socket, None)
    assert outside["major"] != 0 and "requires network namespace" in str(outside["minor"])

    log = daemon.log_text()
    assert "running in the network namespace of inode" in log
    started = log.index(f"executor threads started in netns {netns}")
    assert started < log.index(f"running as {user.name}") < log.index("Initialization complete")

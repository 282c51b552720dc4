"""`gssproxy-py-ctl` against a real daemon with real clients: `status` (text
and Prometheus) counts exactly the calls this test made, the admin socket
refuses non-root callers even when its file mode would let them in,
`reload` and `stop` answer, and `explain` names the service the daemon
really chose for a real interposer client."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from gssproxy_py.client.gssproxy import GssProxyClient
from gssproxy_py.testing.daemon import DaemonPaths
from gssproxy_py.testing.interposer import interposer_env
from gssproxy_py.testing.net import wait_until
from gssproxy_py.testing.paths import REPO_ROOT, VENV_PYTHON
from gssproxy_py.testing.peer import (
    PeerProcess,
    ccache_env,
    client_argv,
    establish,
    peer_env,
)
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import LocalUser, run_as

pytestmark = [pytest.mark.integration, pytest.mark.root]

CTL = [str(VENV_PYTHON), "-m", "gssproxy_py.admin.ctl"]


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CTL, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def _config(realm: StandardRealm, user: LocalUser, extra: str = "") -> object:
    def render(paths: DaemonPaths) -> str:
        return f"""[gssproxy]
  state_dir = {paths.workdir}/state
{extra}
[service/rootsvc]
  mechs = krb5
  euid = 0

[service/acceptor]
  mechs = krb5
  socket = {paths.workdir}/acceptor.sock
  cred_store = keytab:{realm.service_keytab}
  cred_usage = accept
  euid = {user.uid}
"""

    return render


def _prom_value(text: str, metric: str, **labels: str) -> float:
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    m = re.search(rf"^{re.escape(metric + want)} (\S+)$", text, re.M)
    assert m, f"{metric}{want} not in:\n{text}"
    return float(m.group(1))


def test_status_counts_the_calls_made(
    daemon_factory: object, realm: StandardRealm, test_users: tuple[LocalUser, ...]
) -> None:
    user = test_users[0]
    daemon = daemon_factory("py", _config(realm, user))  # type: ignore[operator]
    sock = str(daemon.socket)
    acceptor_sock = daemon.socket.parent / "acceptor.sock"
    admin = daemon.socket.parent / "gssproxy-admin.sock"
    assert admin.is_socket()
    assert admin.stat().st_mode & 0o777 == 0o600

    # Three calls root's service answers, two that match no service.
    with GssProxyClient(sock) as client:
        for _ in range(3):
            assert client.indicate_mechs().status.major_status == 0
    with GssProxyClient(acceptor_sock) as client:
        for _ in range(2):
            assert client.indicate_mechs().status.major_status != 0
    # A real interposer client as gpytest1, accepting through the daemon.
    base = peer_env(realm.env(), {"PYTHONPATH": str(Path(__file__).parent / "clients")})
    acc_env = peer_env(base, interposer_env(acceptor_sock, daemon.socket.parent))
    with (
        PeerProcess(
            client_argv("init.py", "--target", realm.host_service, "--serve"),
            peer_env(base, ccache_env(realm.alice_ccache)),
        ) as init,
        PeerProcess(client_argv("accept.py", "--serve"), acc_env, user=user) as acc,
    ):
        establish(init, acc)
        # While gpytest1's connection is open, and one of root's.
        with GssProxyClient(sock) as held:
            held.indicate_mechs()
            text = ctl("status", "-s", sock)
            prom = ctl("status", "-s", sock, "--format=prometheus")
    assert text.returncode == 0, text.stderr
    assert prom.returncode == 0, prom.stderr
    p = prom.stdout
    calls = "gssproxy_py_calls_total"
    assert (
        _prom_value(
            p, calls, service="rootsvc", program="gssproxy", procedure="GSSX_INDICATE_MECHS"
        )
        == 4
    )
    assert (
        _prom_value(p, calls, service="", program="gssproxy", procedure="GSSX_INDICATE_MECHS") == 2
    )
    errors = re.findall(
        r'^gssproxy_py_call_errors_total\{service="",program="gssproxy",'
        r'procedure="GSSX_INDICATE_MECHS",code="(\w+)"\} (\d+)$',
        p,
        re.M,
    )
    assert sum(int(n) for _, n in errors) == 2 and all(c.startswith("GSS_S_") for c, _ in errors)
    assert "rootsvc" not in "".join(re.findall(r"^gssproxy_py_call_errors_total.*$", p, re.M))
    accepts = _prom_value(
        p, calls, service="acceptor", program="gssproxy", procedure="GSSX_ACCEPT_SEC_CONTEXT"
    )
    assert accepts >= 1
    assert _prom_value(p, "gssproxy_py_connections", uid=str(user.uid)) >= 1
    assert _prom_value(p, "gssproxy_py_connections", uid="0") >= 1
    assert _prom_value(p, "gssproxy_py_config_generation") == 1
    hist = "gssproxy_py_call_duration_seconds_count"
    assert (
        _prom_value(p, hist, service="rootsvc", program="gssproxy", procedure="GSSX_INDICATE_MECHS")
        == 4
    )
    # One pool per service; the acceptor's first accept ran in a thread.
    assert _prom_value(p, "gssproxy_py_pool_threads", pool="gss-acceptor") >= 1
    # The text form shows the same rows.
    assert re.search(r"rootsvc\s+gssproxy\s+GSSX_INDICATE_MECHS\s+4\s", text.stdout), text.stdout
    assert "generation 1" in text.stdout and str(daemon.config) in text.stdout
    # And the daemon served what explain says it would, for the interposer client.
    log = daemon.log_text()
    program = re.search(rf"uid {user.uid} gid \d+ program (\S+)", log)
    assert program, log
    explained = ctl(
        "explain",
        "-c",
        str(daemon.config),
        "-s",
        sock,
        "--uid",
        str(user.uid),
        "--program",
        program.group(1),
        "--socket",
        str(acceptor_sock),
    )
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "served by: service 'acceptor'" in explained.stdout
    assert "not 'rootsvc'" in explained.stdout and "requires euid 0" in explained.stdout


def test_admin_socket_refuses_non_root_even_when_the_file_mode_allows(
    daemon_factory: object, realm: StandardRealm, test_users: tuple[LocalUser, ...]
) -> None:
    user = test_users[0]
    daemon = daemon_factory("py", _config(realm, user))  # type: ignore[operator]
    admin = daemon.socket.parent / "gssproxy-admin.sock"
    denied = run_as(
        user, [*CTL, "status", "--admin-socket", str(admin)], {"PYTHONPATH": str(REPO_ROOT)}
    )
    assert denied.returncode == 1
    assert "permission denied" in denied.stderr
    os.chmod(admin, 0o666)  # a mistake by hand: the uid check still holds
    refused = run_as(
        user, [*CTL, "status", "--admin-socket", str(admin)], {"PYTHONPATH": str(REPO_ROOT)}
    )
    assert refused.returncode == 1, refused.stdout
    assert wait_until(lambda: "refused pid" in daemon.log_text(), 10)
    assert f"uid {user.uid}" in daemon.log_text()


def test_reload_and_stop(
    daemon_factory: object, realm: StandardRealm, test_users: tuple[LocalUser, ...]
) -> None:
    user = test_users[0]
    daemon = daemon_factory("py", _config(realm, user))  # type: ignore[operator]
    sock = str(daemon.socket)
    good = daemon.config.read_text()
    daemon.config.write_text(
        good.replace("mechs = krb5\n  euid = 0", "mechs = krb5\n  euid = 0\n  trusted = ture")
    )
    bad = ctl("reload", "-s", sock)
    assert bad.returncode == 1
    assert f"{daemon.config}:" in bad.stderr and "trusted" in bad.stderr
    daemon.config.write_text(good)
    ok = ctl("reload", "-s", sock)
    assert (ok.returncode, ok.stdout.strip()) == (0, "reloaded: generation 2")
    assert "generation 2" in ctl("status", "-s", sock).stdout
    stopped = ctl("stop", "-s", sock)
    assert (stopped.returncode, stopped.stdout.strip()) == (0, "stopping")
    assert wait_until(lambda: not daemon.running, 30)
    assert daemon.returncode == 0
    assert not (daemon.socket.parent / "gssproxy-admin.sock").exists()

"""The Python daemon with Debian's proxymech.so: real clients as an unprivileged uid.

The acceptor runs as gpytest1 with no access to the keytab (0600 root) and
KRB5_KTNAME pointing nowhere, so an accept that works came through the
daemon. A control run without the interposer must fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gssproxy_py.testing.interposer import interposer_env
from gssproxy_py.testing.net import free_port, tcp_listening, wait_until
from gssproxy_py.testing.peer import (
    PeerError,
    PeerProcess,
    ccache_env,
    client_argv,
    establish,
    exercise_protection,
    peer_env,
)
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import LocalUser, popen_as

pytestmark = [pytest.mark.integration, pytest.mark.root]


def config(realm: StandardRealm, user: LocalUser, extra: str = "") -> object:
    def render(paths: object) -> str:
        return f"""[gssproxy]
  state_dir = {paths.workdir}/state

[service/acceptor]
  mechs = krb5
  cred_store = keytab:{realm.service_keytab}
  cred_usage = accept
  euid = {user.uid}
{extra}
"""

    return render


def test_accept_through_daemon_and_control(
    daemon_factory: object, realm: StandardRealm, test_users: tuple[LocalUser, ...]
) -> None:
    user = test_users[0]
    daemon = daemon_factory("py", config(realm, user))  # type: ignore[operator]
    base = peer_env(realm.env(), {"PYTHONPATH": str(Path(__file__).parent / "clients")})
    acc_env = peer_env(base, interposer_env(daemon.socket, daemon.socket.parent))
    with (
        PeerProcess(
            client_argv("init.py", "--target", realm.host_service, "--serve"),
            peer_env(base, ccache_env(realm.alice_ccache)),
        ) as init,
        PeerProcess(client_argv("accept.py", "--serve"), acc_env, user=user) as acc,
    ):
        done = establish(init, acc)
        assert done.acceptor["initiator"] == realm.alice
        exercise_protection(init, acc)
    # Control: the same acceptor without the interposer cannot read the keytab.
    ctl_env = peer_env(base, {"KRB5_KTNAME": "FILE:/nonexistent", "KRB5CCNAME": "MEMORY:ctl"})
    with (
        PeerProcess(
            client_argv("init.py", "--target", realm.host_service, "--serve"),
            peer_env(base, ccache_env(realm.alice_ccache)),
        ) as init,
        PeerProcess(client_argv("accept.py", "--serve"), ctl_env, user=user) as acc,
        pytest.raises(PeerError),
    ):
        establish(init, acc)
    assert daemon.running


def test_gss_server_gss_client(
    daemon_factory: object, realm: StandardRealm, test_users: tuple[LocalUser, ...]
) -> None:
    user = test_users[0]
    daemon = daemon_factory("py", config(realm, user))  # type: ignore[operator]
    port = free_port()
    srv_env = peer_env(realm.env(), interposer_env(daemon.socket, daemon.socket.parent))
    server = popen_as(
        user,
        ["gss-server", "-port", str(port), "-once", "-verbose", realm.host_service],
        srv_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # gss-server listens only once it has its credentials (through the
        # daemon). Poll /proc, not connect(): a probe would be the -once client.
        assert wait_until(lambda: tcp_listening(port) or server.poll() is not None, 30)
        assert server.poll() is None, server.communicate()[0]
        client = subprocess.run(
            ["gss-client", "-port", str(port), "localhost", realm.host_service, "hello via py"],
            env=peer_env({"PATH": "/usr/bin:/bin"}, realm.env(), ccache_env(realm.alice_ccache)),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        out, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert "Signature verified" in client.stdout, client.stdout + client.stderr + out
    assert "hello via py" in out
